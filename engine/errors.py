"""Typed errors raised by the engine.

Every error names the offending item (layer, neuron, file, field) and what was expected, so
that a caller can act on it without reading a traceback.

>>> from engine.errors import EngineError, LayerNotFoundError
>>> issubclass(LayerNotFoundError, EngineError)
True
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigurationError(EngineError, ValueError):
    """An argument or configuration value is invalid (names the value and what was expected)."""


class LayerNotFoundError(EngineError, KeyError):
    """A layer name is not among the tracked layers."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...]) -> None:
        shown = ", ".join(repr(k) for k in list(known)[:12])
        more = "" if len(known) <= 12 else f", … ({len(known)} in all)"
        super().__init__(f"layer {name!r} is not tracked; tracked layers are: {shown}{more}")
        self.name = name

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class NeuronNotFoundError(EngineError, KeyError):
    """A neuron ID is unknown or no longer alive."""

    def __str__(self) -> str:
        return str(self.args[0])


class TrackingStateError(EngineError, RuntimeError):
    """Tracking was started twice, stopped when not running, or similar misuse."""


class CorrelationLimitError(EngineError, ValueError):
    """A layer is too wide for the O(N²) co-moment matrix under the configured bound."""


class SnapshotError(EngineError, ValueError):
    """A statistics snapshot file is missing, malformed, or does not match another snapshot."""


class LayoutMismatchError(SnapshotError):
    """Two snapshots (or a snapshot and a model) have different tracked layouts."""


class HistoryError(EngineError, ValueError):
    """A training-history file is malformed or a requested neuron has no history."""


class PlanError(EngineError, ValueError):
    """A plan file or plan object is malformed (names the file, the field and the bad value)."""


class FingerprintMismatchError(PlanError):
    """A plan was made for a different model layout than the one it is checked against."""


class StalePlanError(FingerprintMismatchError):
    """A plan was made for another state of the model than the one it is applied to (its
    neuron IDs disagree, though the widths may match), or it was applied there already."""


class NonFiniteStatisticsError(PlanError):
    """A policy was about to write a NaN or ±inf statistic into a plan action (e.g. the
    constant a pruned unit is replaced by); names the layer and the units. The planner keeps
    units that saw non-finite values out of every policy, so this means a policy bypassed it."""


class PlanValidationError(PlanError):
    """A plan does not fit the model it is checked against; ``problems`` lists every reason,
    each naming the action (``prune[0]``, ``merge[2]``…) and its layer."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:6])
        more = f"; … and {len(self.problems) - 6} more" if len(self.problems) > 6 else ""
        super().__init__(f"plan rejected ({len(self.problems)} problems): {shown}{more}")


class SurgeryError(EngineError):
    """Base of the errors raised while carrying out a plan on a live model."""


class TiedWeightsError(PlanValidationError, SurgeryError):
    """A plan would untie a parameter that several modules share (``head.weight is
    emb.weight``): it resizes the shared tensor at one of its owners only, differently at
    different owners, or gives it values that cannot hold at every owner. Raised before
    anything changes; each problem names every owner of the tensor and what to do."""

    def __init__(self, problems: list[str] | str) -> None:
        super().__init__([problems] if isinstance(problems, str) else problems)


class TrialError(SurgeryError):
    """A trial surgery's recovery steps or held-out evaluation failed; the plan was rolled
    back and the model, optimizer and statistics are as they were before the trial."""


class OptimizerRemapError(SurgeryError, ValueError):
    """A parameter change is inconsistent (shapes, dims, indices) or cannot be applied to the
    optimizer's state; the message names the parameter's shape, the dim and the state entry.
    Raised before anything is modified."""


class DatasetError(EngineError, ValueError):
    """A data set is missing, malformed, or needs a package that is not installed (the message
    says which file or package and how to get it)."""


class UnsupportedModuleError(ConfigurationError):
    """The model holds a module type that the dependency trace cannot follow (Hugging Face's
    ``Conv1D`` before ``import engine.integrations.transformers``, or an optional integration
    whose package is missing); ``module_type`` names it and the message says how to register
    or install it."""

    def __init__(self, module_type: str, message: str) -> None:
        super().__init__(message)
        self.module_type = module_type


class MissingExtraError(EngineError, ImportError):
    """An optional integration (``engine.integrations.lightning``, ``.transformers``,
    ``.tensorboard``) was imported without its package; the message names the package and
    the extra to install (``pip install 'neuron-engine[lightning]'``)."""


class ModelFactoryError(ConfigurationError):
    """A checkpoint names a model factory that the user has not provided. A file never chooses
    code: its factory name is only looked up among the factories the user's own code
    registered (``engine.checkpoint.register_model_factory``) or given (``--model``,
    ``factory=``); ``name`` is the factory the file asked for."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class RankMismatchError(EngineError, RuntimeError):
    """The ranks of a ``torch.distributed`` process group disagree where they must agree: the
    layout or neuron IDs behind their statistics, the plan they proposed or were given, their
    parameters before surgery, or the outcome of a surgery. Raised on every rank at once;
    ``ranks`` lists the ranks that differ from rank 0 and ``what`` names the disagreement.
    Nothing was changed on any rank."""

    def __init__(self, what: str, ranks: list[int], message: str) -> None:
        super().__init__(message)
        self.what = what
        self.ranks = list(ranks)
