"""``NeuronEngine``: the user's handle on a live model.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> with engine.tracking():
...     _ = model(torch.randn(16, 4))
>>> engine.snapshot().layers["0"].count, engine.neurons.locate(9)
(16, ('2', 1))
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from engine.distributed import agree_on_plan, gather_snapshot, group_setting
from engine.engine_surgery import EngineSurgery
from engine.errors import ConfigurationError, LayerNotFoundError, TrackingStateError
from engine.forking import check_fork_target, copy_engine_state, engine_hook_functions
from engine.history import EpochRecord, TrainingHistory
from engine.layout import ModelLayout, build_layout, layout_fingerprint
from engine.observe import HookSet, make_observer
from engine.observe import fastpath as _fastpath
from engine.observe.growth_hooks import attach_growth_hooks
from engine.observe.samples import first_kwarg_samples, first_samples
from engine.plan import Plan
from engine.planning import Planner, make_plan
from engine.selection import Selector
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from engine.surgery.records import SurgeryListener, SurgeryRecord, TrialRecord
from engine.surgery.transaction import ProbeInputs
from engine.tracked import TrackedLayer, track_layers


class NeuronEngine(EngineSurgery):
    """Watches every unit of the tracked layers of ``model`` while it runs.

    Args:
        model: any ``nn.Module``.
        include, exclude: which layers to track (names, ``fnmatch`` patterns or module types);
            by default every Linear, Conv, ConvTranspose, RNN/LSTM/GRU, MultiheadAttention and
            Embedding layer.
        correlation: ``True`` for every tracked layer, or a selector of layers that keep the
            O(N²) co-moment matrix (Pearson correlation and pairwise linear fits).
        max_correlation_units: refuse correlation on wider layers (memory bound).
        firing_threshold: an observation "fires" when it is above this value (default 0).
        saturation_tolerance: for bounded activations, the fraction of the range near either
            bound that counts as saturated.
        flush_every: batches buffered on the device before the exact float64 merge.
        growth_signal: ``True`` (every Linear layer read by one Linear through activations) or
            a selector: gather the GradMax signal ``Σ δ_Cᵀ·x_L`` during backward, for the
            ``loss_growth`` policy and ``gradmax`` growth (``engine.stats.growth``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        include: Selector = None,
        exclude: Selector = None,
        correlation: bool | Selector = False,
        max_correlation_units: int = 4096,
        firing_threshold: float = 0.0,
        saturation_tolerance: float = 0.02,
        flush_every: int = 64,
        growth_signal: bool | Selector = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"NeuronEngine expects an nn.Module, got {type(model)!r}")
        if not 0.0 <= saturation_tolerance < 0.5:
            raise ConfigurationError(
                f"saturation_tolerance must be in [0, 0.5), got {saturation_tolerance}"
            )
        self.model = model
        self.process_group: Any = group_setting(model)  # engine.distributed; False: never merge
        self._settings = dict(  # fork() builds its twin with them
            include=include, exclude=exclude, correlation=correlation,
            max_correlation_units=max_correlation_units, firing_threshold=firing_threshold,
            saturation_tolerance=saturation_tolerance, flush_every=flush_every,
            growth_signal=growth_signal,
        )  # fmt: skip
        self.firing_threshold = float(firing_threshold)
        self.saturation_tolerance = float(saturation_tolerance)
        self.neurons, self.layers = track_layers(
            model, include=include, exclude=exclude, correlation=correlation,
            max_correlation_units=max_correlation_units, firing_threshold=self.firing_threshold,
            saturation_tolerance=self.saturation_tolerance, flush_every=flush_every,
            growth_signal=growth_signal,
        )  # fmt: skip
        self.history = TrainingHistory()
        self.example_inputs: tuple[Any, ...] | None = None  # positional args of the probe
        self.example_kwargs: dict[str, Any] = {}  # its keyword arguments
        self._hooks = HookSet()
        self.surgeries: list[SurgeryRecord] = []  # every plan applied (and trial kept)
        self.trials: list[TrialRecord] = []  # every trial, kept or rolled back
        self._listeners: list[SurgeryListener] = []

    # --- tracking -------------------------------------------------------------------------
    @property
    def is_tracking(self) -> bool:
        return len(self._hooks) > 0

    def start(self) -> None:
        """Attach the observation hooks (see also the ``tracking()`` context manager)."""
        if self.is_tracking:
            raise TrackingStateError("tracking is already on; call stop() first")
        try:
            if self.example_inputs is None:
                self._capture = self.model.register_forward_pre_hook(
                    self._capture_inputs, with_kwargs=True
                )
                self._hooks.add(self._capture)
            for layer in self.layers.values():
                target = self.model.get_submodule(layer.observation.hook_module)
                hook = make_observer(layer.kind, layer.observation, layer.accumulator, target)
                self._hooks.add(target.register_forward_hook(hook))
                if layer.growth is not None:
                    attach_growth_hooks(self.model, layer.name, layer.growth, self._hooks)
        except BaseException:
            self._hooks.remove()
            raise
        _fastpath.acquire()

    def _capture_inputs(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Keep a few samples of the first tracked batch (positional and keyword arguments):
        the probe for layout and surgery."""
        batched = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim()]
        if batched and all(a.shape[0] == 0 for a in batched):
            return  # an empty batch measures nothing: wait for one with rows
        if self.example_inputs is None:
            self.example_inputs = first_samples(args)
            self.example_kwargs = first_kwarg_samples(kwargs)
        self._capture.remove()  # one batch is enough (removing here is safe: torch iterates a copy)

    def stop(self) -> None:
        """Remove every hook the engine attached. Statistics are kept."""
        if not self.is_tracking:
            raise TrackingStateError("tracking is not on; nothing to stop")
        self._hooks.remove()
        _fastpath.release()

    @contextmanager
    def paused(self) -> Iterator[NeuronEngine]:
        """``with engine.paused():`` runs the block without the tracking hooks (layout builds,
        surgery, evaluation); they are re-attached afterwards, also when the block raises. A
        no-op when tracking is off."""
        was_tracking = self.is_tracking
        if was_tracking:
            self.stop()
        try:
            yield self
        finally:
            if was_tracking:
                self.start()

    @contextmanager
    def tracking(self) -> Iterator[NeuronEngine]:
        """``with engine.tracking(): ...`` observes every forward inside the block; the hooks
        are removed on exit, also when the block raises."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def fork(self, model_copy: nn.Module | None = None) -> NeuronEngine:
        """A second engine on a copy of the model, starting from this engine's state (same
        settings, statistics, neuron IDs, history and records) and independent from then on:
        try two plans side by side (see ``engine.forking``). ``model_copy`` (default: a
        ``copy.deepcopy`` made without the tracking hooks) must be a structural twin sharing
        no tensor with the model. The fork is not tracking; listeners are not copied.

        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> engine = NeuronEngine(model)
        >>> with engine.tracking():
        ...     _ = model(torch.randn(16, 4))
        >>> twin = engine.fork()
        >>> twin.snapshot().layers["0"].count, twin.fingerprint() == engine.fingerprint()
        (16, True)
        """
        if model_copy is None:
            with self.paused():
                model_copy = copy.deepcopy(self.model)
        check_fork_target(self.model, model_copy, engine_hook_functions(self._hooks))
        twin = type(self)(model_copy, **self._settings)
        copy_engine_state(self, twin)
        return twin

    # --- statistics -----------------------------------------------------------------------
    def layer(self, name: str) -> TrackedLayer:
        try:
            return self.layers[name]
        except KeyError:
            raise LayerNotFoundError(name, list(self.layers)) from None

    def layer_stats(self, name: str) -> LayerSnapshot:
        """Statistics of one layer as plain CPU data (flushes pending batches)."""
        layer = self.layer(name)
        acc = layer.accumulator
        cm = acc.comoments()
        return LayerSnapshot(
            name=name,
            module_type=type(layer.module).__name__,
            neuron_ids=self.neurons.ids(name),
            moments=acc.total().to("cpu"),
            comoments=None if cm is None else cm.to("cpu"),
            observation=layer.observation.describe(),
            bounds=layer.observation.bounds,
            growth=None if layer.growth is None else layer.growth.state(),
        )

    def snapshot(self, *, with_layout: bool = False, **metadata: Any) -> StatsSnapshot:
        """Everything tracked so far, as plain data (save, merge, feed to policies and reports).

        ``with_layout=True`` adds the model layout (consumer weights, output layers), so the
        saved snapshot is all ``python -m engine plan`` needs. Under a process group: every
        rank's statistics, merged exactly (a collective; see ``engine.distributed``).
        """
        return gather_snapshot(self.process_group, StatsSnapshot(  # every rank's, merged
            layers={name: self.layer_stats(name) for name in self.layers},
            firing_threshold=self.firing_threshold,
            saturation_tolerance=self.saturation_tolerance,
            metadata={**getattr(self, "_snapshot_metadata", dict)(), **metadata},
            model_layout=self.model_layout() if with_layout else None,
        ))  # fmt: skip

    def model_layout(self, example_inputs: Any = None) -> ModelLayout:
        """What policies need to know about the model besides statistics (see engine.layout).

        Built with Torch-Pruning's dependency graph on ``example_inputs`` (by default a few
        samples of the first tracked batch); tracking hooks are paused meanwhile.
        """
        probe = self._probe(example_inputs)
        layers = {name: self.neurons.ids(name) for name in self.layers}
        with self.paused():
            if probe.kwargs:  # the model was called with keyword arguments: call it the same way
                forward = lambda m, inp: m(*inp.args, **inp.kwargs)  # noqa: E731
                return build_layout(self.model, layers, probe, forward_fn=forward)
            args = probe.args
            return build_layout(self.model, layers, args[0] if len(args) == 1 else args)

    def _probe(self, example_inputs: Any = None) -> ProbeInputs:
        if example_inputs is not None:
            return ProbeInputs.of(example_inputs)
        if self.example_inputs is None:
            raise ConfigurationError(
                "this needs example inputs: run one tracked forward first, or pass "
                "example_inputs=(batch,)"
            )
        return ProbeInputs(tuple(self.example_inputs), dict(self.example_kwargs))

    def propose(
        self,
        config: Any = None,
        *,
        example_inputs: Any = None,
        epoch: int | None = None,
        planner: Planner | None = None,
        shrink_scale: float = 1.0,
        grow: bool = True,
    ) -> Plan:
        """Run policies on the current statistics and return a plan.

        ``config``: for the default planner (``policies``), a YAML path, a mapping, a
        ``policies.PolicyConfig`` or a list of policy objects; None uses
        ``policies/default.yaml``. ``epoch`` (default: the last one given to ``log_epoch``)
        dates the plan for the ``min_age_epochs`` guard: units grown fewer epochs ago are not
        removed. ``planner``: any ``engine.planning.Planner`` instead of the default one.
        ``shrink_scale`` in [0, 1] scales the step of every policy that removes units (0:
        only growth runs) and ``grow=False`` leaves the growing policies out; ``SurgerySchedule``
        uses both after a refused trial.

        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> engine = NeuronEngine(model)
        >>> with engine.tracking():
        ...     _ = model(torch.randn(128, 4))
        >>> plan = engine.propose({"policies": [{"name": "dead"}]})
        >>> plan.metadata.fingerprint == engine.fingerprint()
        True
        """
        epoch = self.last_epoch if epoch is None else epoch
        last = self.history.records[-1].metrics.get("loss") if len(self.history) else None
        if not 0.0 <= shrink_scale <= 1.0:
            raise ConfigurationError(f"shrink_scale must be in [0, 1], got {shrink_scale!r}")
        context: dict[str, Any] = {"loss": last} if last is not None else {}
        if shrink_scale != 1.0:
            context["shrink_scale"] = float(shrink_scale)
        if not grow:
            context["grow"] = False
        snapshot = self.snapshot(**context)  # the loss lets growth policies weigh their gains
        layout = self.model_layout(example_inputs)
        ages = self.neurons.ages(epoch) if epoch is not None else None
        plan = make_plan(snapshot, layout, config, planner=planner, ages=ages)
        return agree_on_plan(plan, self.process_group)  # one plan for every rank

    @property
    def last_epoch(self) -> int | None:
        """The epoch last given to ``log_epoch`` (None before the first): the default epoch
        of ``propose`` and ``apply``."""
        return self.history.records[-1].epoch if len(self.history) else None

    def load_snapshot(self, snapshot: StatsSnapshot) -> None:
        """Replace the running statistics with ``snapshot``'s (same layout, neuron IDs,
        settings and correlation state required: ``LayoutMismatchError`` otherwise)."""
        snapshot.check_continues(
            self.layout,
            {name: self.neurons.ids(name) for name in self.layers},
            {name: layer.accumulator.correlation for name, layer in self.layers.items()},
            firing_threshold=self.firing_threshold,
            saturation_tolerance=self.saturation_tolerance,
        )
        for name, layer in snapshot.layers.items():
            self.layers[name].accumulator.load(layer.moments, layer.comoments)

    def reset(self) -> None:
        """Forget all statistics (the history is kept)."""
        for layer in self.layers.values():
            layer.accumulator.reset()
            if layer.growth is not None:
                layer.growth.reset()

    @property
    def layout(self) -> list[tuple[str, int]]:
        return [(name, self.neurons.size(name)) for name in self.layers]

    def fingerprint(self) -> str:
        """Hash of the tracked layers' names and sizes (plans record it)."""
        return layout_fingerprint(self.layout)

    def neuron_stats(self, neuron_id: int) -> dict[str, Any]:
        """All statistics of one neuron by global ID."""
        layer, local = self.neurons.locate(neuron_id)
        return self.layer_stats(layer).neuron(local)

    def dead_neurons(self) -> dict[str, list[int]]:
        """Local indices of units that never fired, per layer."""
        return {
            name: torch.nonzero(self.layer_stats(name).dead).flatten().tolist()
            for name in self.layers
        }

    def observation_points(self) -> dict[str, dict[str, Any]]:
        """How each layer is observed (hook module, replayed activations, fallback reason)."""
        return {name: layer.observation.describe() for name, layer in self.layers.items()}

    # --- history --------------------------------------------------------------------------
    def log_epoch(
        self,
        epoch: int,
        loss: float | None = None,
        accuracy: float | None = None,
        **metrics: float,
    ) -> EpochRecord:
        """Record per-neuron mean/variance/firing over the observations since the last call,
        with the given training metrics."""
        layers = {}
        for name, layer in self.layers.items():
            window = layer.accumulator.take_window().to("cpu")
            layers[name] = (self.neurons.ids(name), window)
        return self.history.log(epoch, layers, loss=loss, accuracy=accuracy, **metrics)

    # --- training dynamics ----------------------------------------------------------------
    def gradient_tracker(self, **kwargs: Any) -> Any:
        """The engine's ``engine.dynamics.GradientTracker`` (created on first use with
        ``kwargs``; parameters are looked up by name, so it follows surgery)."""
        from engine.dynamics import GradientTracker

        tracker = getattr(self, "_gradient_tracker", None)
        if tracker is None:
            tracker = self._gradient_tracker = GradientTracker(self.model, **kwargs)
        elif kwargs:
            raise ConfigurationError(
                f"the gradient tracker already exists; options {sorted(kwargs)} apply only "
                f"on first use"
            )
        return tracker

    @contextmanager
    def gradient_tracking(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Iterator[Any]:
        """``with engine.gradient_tracking(opt):`` records gradient dynamics before each
        ``opt.step()``; the optimizer hook is removed on exit, also when the block raises."""
        with self.gradient_tracker(**kwargs).tracking(optimizer) as tracker:
            yield tracker

    def representation_dynamics(self, probe_inputs: Any, **kwargs: Any) -> Any:
        """An ``engine.dynamics.RepresentationDynamics`` over this engine's tracked layers,
        captured at their observation points (post-activation)."""
        from engine.dynamics import RepresentationDynamics

        return RepresentationDynamics(self, probe_inputs, **kwargs)
