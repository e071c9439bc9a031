"""Apply a plan to a live model (its optimizer, neuron IDs and statistics) as one transaction.

1. **Validate** the whole plan against the model's layout (``engine.plan.validate_plan``:
   names, ranges, duplicates, conflicts, emptied layers, output layers, unsupported kinds,
   fingerprint) and against the modules themselves (attention-head and group divisibility,
   growth through a concat, GradMax inputs). Nothing is touched before this passes.
2. **Resolve** each layer's coupled group on one Torch-Pruning dependency graph.
3. **Apply** the actions in plan order (prune, merge/fold, expand), each on new tensors, and
   measure the probe batch's max output change after each.
4. **Commit**: compute the statistics' remaps and the neuron registry after the plan (on new
   objects), re-point the optimizer with one composed change per parameter, then swap the
   remapped statistics in. The registry given is never changed: the record carries its state
   after the plan (``record.neurons_after``) for its owner to load.

Surgery takes data (a model, a plan, an optimizer, a probe, a registry, accumulators) and
knows nothing of ``NeuronEngine``: ``engine.apply`` pauses its own hooks, passes its parts in
and commits the returned registry itself.

Any error on the way restores every module's parameters, buffers and attributes, the
optimizer and the statistics exactly, and raises a :class:`~engine.errors.SurgeryError` naming the
action (or a :class:`~engine.errors.PlanValidationError` listing every problem). Any other
``BaseException`` (``KeyboardInterrupt``, ``SystemExit``) rolls back the same way and is
re-raised unchanged.

>>> import torch, torch.nn as nn
>>> from engine.plan import Plan, PruneAction
>>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
>>> plan = Plan.create([PruneAction(layer="0", local_indices=[1, 4], neuron_ids=[1, 4],
...                                 reason="dead")], [("0", 6), ("2", 2)])
>>> record = apply_plan(model, plan, example_inputs=torch.randn(8, 4))
>>> model[0].weight.shape, model[2].weight.shape, record.params_after
(torch.Size([4, 4]), torch.Size([2, 4]), 30)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from engine.errors import ConfigurationError, PlanValidationError, SurgeryError, TiedWeightsError
from engine.layers import layer_kind_for
from engine.layout.build import build_layout_and_graph
from engine.neurons import NeuronRegistry
from engine.plan import Plan, validate_plan
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.stats.accumulator import NeuronAccumulator
from engine.surgery.actions import ActionContext, apply_action
from engine.surgery.bias_fold import norms_after
from engine.surgery.checks import module_problems
from engine.surgery.created_params import add_params
from engine.surgery.groups import GroupMember, unit_group
from engine.surgery.limits import check_finite
from engine.surgery.optimizer import optimizer_snapshot, remap_optimizer, restore_optimizer
from engine.surgery.probe import Probe
from engine.surgery.records import ActionRecord, SurgeryRecord
from engine.surgery.ties import find_ties, tie_problems
from engine.surgery.units import UnitBook
from engine.surgery.workspace import Workspace

__all__ = ["ProbeInputs", "SurgeryOptions", "Transaction", "apply_plan"]


class ProbeInputs(NamedTuple):
    """A probe batch given as positional and keyword arguments (``model(*args, **kwargs)``)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, example_inputs: Any) -> ProbeInputs:
        """A tensor (``model(x)``), a tuple or list (``model(*x)``), a mapping
        (``model(**x)``) or a ``ProbeInputs`` already."""
        if isinstance(example_inputs, ProbeInputs):
            return example_inputs
        if isinstance(example_inputs, Mapping):
            return cls((), dict(example_inputs))
        if isinstance(example_inputs, tuple | list):
            return cls(tuple(example_inputs), {})
        return cls((example_inputs,), {})


@dataclass(frozen=True)
class SurgeryOptions:
    """How one plan is carried out (see :func:`apply_plan` for each field)."""

    gradients: Mapping[str, torch.Tensor] = field(default_factory=dict)
    gradmax_openings: Mapping[str, torch.Tensor] = field(default_factory=dict)
    gradmax_epsilon: float = 1e-4
    allow_output_changes: bool = False
    tolerance: float | None = None
    measure: str = "action"
    step: int | None = None
    epoch: int | None = None
    on_validated: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.measure not in ("action", "plan", "none"):
            raise ConfigurationError(
                f"measure must be 'action', 'plan' or 'none', got {self.measure!r}"
            )


def apply_plan(
    model: nn.Module,
    plan: Plan,
    optimizer: torch.optim.Optimizer | None = None,
    example_inputs: Any = None,
    *,
    registry: NeuronRegistry | None = None,
    accumulators: Mapping[str, NeuronAccumulator] | None = None,
    gradients: Mapping[str, torch.Tensor] | None = None,
    gradmax_openings: Mapping[str, torch.Tensor] | None = None,
    gradmax_epsilon: float = 1e-4,
    allow_output_changes: bool = False,
    tolerance: float | None = None,
    measure: str = "action",
    step: int | None = None,
    epoch: int | None = None,
    on_validated: Callable[[], None] | None = None,
) -> SurgeryRecord:
    """Carry out ``plan`` on ``model`` (see the module docstring); returns what was done.

    Args:
        optimizer: re-pointed and remapped in place (same object keeps training).
        example_inputs: the probe batch (a tensor, a tuple of positional arguments, a dict of
            keyword arguments, or a ``ProbeInputs`` of both).
        registry: the neuron IDs of the tracked layers (``NeuronEngine.neurons``); read, never
            changed: ``record.neurons_after`` is its state after the plan. Without one, IDs
            are numbered in layout order (overridden by the plan's own IDs).
        accumulators: per tracked layer, its running statistics; remapped in place at commit
            (survivors keep theirs bitwise, grown units start unknown).
        gradients: for ``gradmax`` growth, per layer, the consumer's gradient matrix
            ``Σ δ·xᵀ`` (``engine.surgery.gradmax_gradient`` computes it).
        gradmax_openings: per layer, the vector ``v`` that signs the new units' outgoing
            columns (``ωᵀv ≤ 0``: a first step opens them; ``GradientCross.opening``).
        tolerance: refuse (and roll back) when an action marked exact changes the probe's
            outputs by more than this.
        measure: ``"action"`` (probe after each action), ``"plan"`` (once) or ``"none"``.
        on_validated: called once the plan passed every check, before anything changes.
    """
    options = SurgeryOptions(
        gradients=gradients or {}, gradmax_openings=gradmax_openings or {},
        gradmax_epsilon=gradmax_epsilon,
        allow_output_changes=allow_output_changes, tolerance=tolerance, measure=measure,
        step=step, epoch=epoch, on_validated=on_validated,
    )  # fmt: skip
    if example_inputs is None:
        raise ConfigurationError(
            "surgery needs a probe batch: pass example_inputs=…, or run one tracked forward "
            "before engine.apply"
        )
    transaction = Transaction(
        model, plan, optimizer, ProbeInputs.of(example_inputs), options, registry,
        dict(accumulators or {}),
    )  # fmt: skip
    return transaction.run()


class Transaction:
    """One plan on one model, in named steps: ``check_widths`` → ``validate`` →
    ``apply_actions`` → ``commit``, with ``rollback`` on any failure after validation.
    ``run()`` does them in order and returns the record."""

    def __init__(
        self,
        model: nn.Module,
        plan: Plan,
        optimizer: torch.optim.Optimizer | None,
        probe_inputs: ProbeInputs,
        options: SurgeryOptions,
        registry: NeuronRegistry | None = None,
        accumulators: Mapping[str, NeuronAccumulator] | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.model, self.plan, self.optimizer = model, plan, optimizer
        self.inputs, self.options = probe_inputs, options
        self.registry = registry
        self.accumulators = dict(accumulators or {})
        if registry is not None:
            self.ids = {name: registry.ids(name) for name in registry.layer_names}
        else:
            self.ids = plan_ids(plan)
        self.labelled = labelled_actions(plan)
        self.groups: dict[str, list[GroupMember]] = {}
        self.records: list[ActionRecord] = []
        self.neurons_after: dict[str, Any] | None = None
        self.current = ""  # the step under way: an action's label, or "commit"

    def run(self) -> SurgeryRecord:
        self.check_widths()
        self.validate()
        if self.options.on_validated is not None:
            self.options.on_validated()
        self.begin()
        try:
            self.apply_actions()
            self.current = "commit"
            total = self.commit()
        except BaseException as exc:  # KeyboardInterrupt, SystemExit too: never half a plan
            self.rollback()
            if not isinstance(exc, Exception):
                raise  # rolled back; re-raised unchanged
            if isinstance(exc, PlanValidationError):  # its problems name the action already
                raise type(exc)([f"{self.current}: {p}" for p in exc.problems]) from exc
            if isinstance(exc, SurgeryError):
                raise type(exc)(f"{self.current}: {exc}") from exc
            raise SurgeryError(f"{self.current}: {type(exc).__name__}: {exc}") from exc
        return self.record(total)

    # --- 1. the plan against the model's widths -----------------------------------------------
    def check_widths(self) -> None:
        """Every layer of the plan is a sub-module with the width the plan was made for."""
        named = dict(self.model.named_modules())
        problems = [
            f"layer {n!r} is not a sub-module of the model" for n in self.ids if n not in named
        ]
        for name, layer_ids in self.ids.items():
            if name not in named:
                continue
            kind = layer_kind_for(named[name])
            width = None if kind is None else kind.units(named[name])
            if width != len(layer_ids):
                problems.append(
                    f"plan was made for layer {name!r} with {len(layer_ids)} units; the model's "
                    f"has {width} (a plan for another model, or one already applied?)"
                )
        if problems:
            raise PlanValidationError(problems)

    # --- 2. the whole plan, before anything changes ---------------------------------------------
    def validate(self) -> None:
        """Layout checks (``validate_plan``), coupled groups on one dependency graph, and the
        modules' own constraints (head and group divisibility, GradMax inputs)."""
        args, kwargs = self.inputs
        self.layout, graph = build_layout_and_graph(
            self.model, self.ids, (args, kwargs), forward_fn=lambda m, inp: m(*inp[0], **inp[1])
        )
        validate_plan(
            self.plan, self.layout, allow_output_changes=self.options.allow_output_changes
        )
        problems: list[str] = []
        for label, action in self.labelled:
            if action.layer not in self.groups:
                try:
                    self.groups[action.layer] = unit_group(self.model, graph, action.layer)
                except SurgeryError as exc:
                    problems.append(f"{label} (layer {action.layer!r}): {exc}")
                    self.groups[action.layer] = []
        problems += module_problems(self.labelled, self.groups, self.options.gradients,
                                    model=self.model)  # fmt: skip
        self.ties, self.norms_after = find_ties(self.model), norms_after(graph, self.groups)
        tied = tie_problems(self.labelled, self.groups, self.ties)
        if problems or tied:
            raise (TiedWeightsError if tied else PlanValidationError)(problems + tied)

    # --- 3. the actions, each on new tensors ----------------------------------------------------
    def begin(self) -> None:
        """Take what rollback needs: the workspace saves tensors as they are replaced; the
        optimizer's state is snapshotted once."""
        measure = self.options.measure
        self.probe = Probe(self.model, *self.inputs) if measure != "none" else None
        self.book = UnitBook(self.layout, self.ids, self.registry)
        self.workspace = Workspace(self.model, self.ties, self.norms_after)
        self.token = optimizer_snapshot(self.optimizer) if self.optimizer is not None else None
        self.stats_tokens = [(acc, acc.checkpoint()) for acc in self.accumulators.values()]
        self.params_before = _params(self.model)

    def apply_actions(self) -> None:
        """Every action in plan order, measured after each (``current`` names the one under
        way, for the error message)."""
        for index, (label, action) in enumerate(self.labelled):
            self.current = label
            self.records.append(self._apply_one(index, label, action))

    def _apply_one(self, index: int, label: str, action: Any) -> ActionRecord:
        members = self.groups[action.layer]
        before = _shapes(members)
        params, width = _params(self.model), self.book.width(action.layer)
        ctx = ActionContext(
            self.workspace, members, self.book, self.options.gradients,
            self.options.gradmax_epsilon, self.options.gradmax_openings,
        )  # fmt: skip
        notes, exact = apply_action(action, ctx)
        check_finite(self.model, self.workspace.touched(), members)  # catch-all: no inf/NaN
        if any(isinstance(m.module, nn.LayerNorm) for m in members):
            exact = False  # the unit axis is normalised over: every removal or copy moves it
            notes.append("LayerNorm over the units: approximate, read the measured change")
        measured = self.probe is not None and self.options.measure == "action"
        change = self.probe.max_change() if measured else {}
        tolerance = self.options.tolerance
        if tolerance is not None and exact and (change.get("eval") or 0.0) > tolerance:
            raise SurgeryError(
                f"changed the probe's outputs by {change['eval']:.3g} > tolerance {tolerance}"
            )
        return ActionRecord(
            index=index, label=label, kind=action.kind, layer=action.layer,
            reason=action.reason, policy=action.policy,
            width_before=width, width_after=self.book.width(action.layer),
            params_before=params, params_after=_params(self.model),
            shapes_before=before, shapes_after=_shapes(members),
            max_output_change=change.get("batch", change.get("eval")),
            max_output_change_eval=change.get("eval"),
            exact_expected=exact, note="; ".join(notes),
            **self.book.ids_of(index),
        )  # fmt: skip

    # --- 4. commit, or roll back ----------------------------------------------------------------
    def commit(self) -> dict[str, float]:
        """Measure the whole plan, then move the optimizer and the statistics to the new
        shapes; everything that can fail runs before the first thing that cannot be undone."""
        total = self.probe.max_change() if self.probe is not None else {}
        remaps = self.book.prepare_accumulators(self.accumulators)  # checks bounds; no writes
        if self.registry is not None:
            after = self.book.registry_after(self.registry, self.options.epoch)
            self.neurons_after = after.state_dict()
        if self.optimizer is not None:
            remap_optimizer(self.optimizer, self.workspace.param_changes())
            add_params(self.optimizer, self.workspace.created())  # biases surgery created
        for remap in remaps:  # plain assignments: cannot fail half-way
            remap.commit()
        return total

    def rollback(self) -> None:
        """Restore every touched module, the optimizer and the statistics exactly as they
        were (the registry is never changed: nothing to restore)."""
        self.workspace.rollback()
        if self.token is not None:
            restore_optimizer(self.optimizer, self.token)
        for acc, token in self.stats_tokens:  # also undoes a commit cut short half-way
            acc.restore(token)

    def record(self, total: Mapping[str, float]) -> SurgeryRecord:
        return SurgeryRecord(
            fingerprint_before=self.plan.fingerprint,
            fingerprint_after=self.book.fingerprint(),
            step=self.options.step, epoch=self.options.epoch, time=time.time(),
            params_before=self.params_before, params_after=_params(self.model),
            widths_before={n: len(v) for n, v in self.ids.items()},
            widths_after=self.book.widths(),
            actions=self.records,
            max_output_change=total.get("batch", total.get("eval")),
            max_output_change_eval=total.get("eval"),
            seconds=time.perf_counter() - self.started, graph_builds=1,
            neurons_after=self.neurons_after,
        )  # fmt: skip


def labelled_actions(plan: Plan) -> list[tuple[str, Any]]:
    """The plan's actions in application order, each with its label (``"merge[2]"``)."""
    out = []
    for section in ("prune", "merge", "expand"):
        out += [(f"{section}[{i}]", a) for i, a in enumerate(getattr(plan, section))]
    return out


def plan_ids(plan: Plan) -> dict[str, list[int]]:
    """Without a registry: IDs numbered in layout order, overridden by the plan's own IDs."""
    ids, start = {}, 0
    for name, units in plan.layout:
        ids[name] = list(range(start, start + units))
        start += units
    for action in plan.actions():
        layer = ids.get(action.layer)
        if layer is None:
            continue
        pairs = []
        if isinstance(action, PruneAction):
            pairs = list(zip(action.local_indices, action.neuron_ids))
        elif isinstance(action, MergeAction):
            pairs = [(action.keep, action.keep_id), (action.remove, action.remove_id)]
        elif isinstance(action, FoldAction):
            pairs = list(zip(action.keep + action.remove, action.keep_ids + action.remove_ids))
        elif isinstance(action, ExpandAction) and action.source_indices and action.source_ids:
            pairs = list(zip(action.source_indices, action.source_ids))
        for i, nid in pairs:
            if 0 <= i < len(layer):
                layer[i] = int(nid)
    return ids


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(members: list[GroupMember]) -> dict[str, list[int]]:
    out = {}
    for m in members:
        for name, t in list(m.module.named_parameters()) + list(m.module.named_buffers()):
            if t.dim():
                out[f"{m.name}.{name}" if m.name else name] = list(t.shape)
    return out
