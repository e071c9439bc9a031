"""The engine's surgery handle: listeners, ``apply`` and ``trial`` of ``NeuronEngine``.

A mixin of :class:`~engine.core.NeuronEngine`: it hands surgery the engine's parts as data
(model, neuron registry, accumulators, captured probe), runs it with the tracking hooks paused
and commits the registry surgery returns. It relies on the engine's ``model``, ``neurons``,
``layers``, ``paused()``, ``_probe()``, ``last_epoch``, ``surgeries``, ``trials`` and
``_listeners``.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.distributed import apply_on_every_rank, engine_ranks, refuse_trial
from engine.errors import ConfigurationError
from engine.plan import Plan
from engine.surgery.heldout import Evaluate, held_out_loss
from engine.surgery.records import SurgeryListener, SurgeryRecord, TrialRecord
from engine.surgery.transaction import apply_plan
from engine.surgery.trial import Recover, run_trial

__all__ = ["EngineSurgery"]


class EngineSurgery:
    """``add_listener``/``remove_listener``, ``apply`` and ``trial`` (see the module docstring)."""

    model: Any
    neurons: Any
    layers: dict[str, Any]
    surgeries: list[SurgeryRecord]
    trials: list[TrialRecord]
    _listeners: list[SurgeryListener]

    def add_listener(self, listener: SurgeryListener) -> None:
        """Tell ``listener`` (``before_surgery``/``after_surgery``, and ``after_rollback`` when
        it has one, for a refused trial) about every applied plan; a weight tracker takes its
        before/after snapshots and writes its change log this way."""
        if not isinstance(listener, SurgeryListener):
            raise ConfigurationError(
                f"{type(listener).__name__} is not a SurgeryListener (it needs before_surgery "
                f"and after_surgery methods)"
            )
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: SurgeryListener) -> None:
        self._listeners = [x for x in self._listeners if x is not listener]

    def _announcer(self, plan: Plan, step: int | None, epoch: int | None):
        listeners = list(self._listeners)

        def announce() -> None:
            for listener in listeners:
                listener.before_surgery(self.model, plan, step=step, epoch=epoch)

        return listeners, announce

    def _growth_signals(self, plan: Plan) -> dict[str, Any]:
        """The gathered GradMax matrices ``M`` of the layers a plan grows with ``gradmax``, and
        the vectors that sign their new units (``gradients=``, ``gradmax_openings=``)."""
        gradients, openings = {}, {}
        for action in plan.expand:
            layer = self.layers.get(action.layer)
            if action.init == "gradmax" and layer is not None and layer.growth is not None:
                state = layer.growth.state()
                if state is not None:
                    gradients[action.layer] = state.mean()
                    opening = state.opening()
                    if opening is not None:
                        openings[action.layer] = opening
        return {"gradients": gradients, "gradmax_openings": openings}

    def _accumulators(self) -> dict[str, Any]:
        return {name: layer.accumulator for name, layer in self.layers.items()}

    def apply(
        self,
        plan: Plan,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        example_inputs: Any = None,
        step: int | None = None,
        epoch: int | None = None,
        **options: Any,
    ) -> SurgeryRecord:
        """Carry out ``plan`` on the live model, its ``optimizer`` and this engine's
        statistics and neuron IDs, as one transaction (see ``engine.surgery.apply_plan`` for
        ``options``). Tracking goes on afterwards with the same engine and hooks.

        >>> import torch, torch.nn as nn
        >>> from engine import NeuronEngine
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with torch.no_grad():  # units 0 and 1 never fire
        ...     model[0].bias[:2] = -100.0
        >>> opt = torch.optim.Adam(model.parameters())
        >>> engine = NeuronEngine(model)
        >>> with engine.tracking():
        ...     _ = model(torch.randn(128, 4))
        >>> record = engine.apply(engine.propose({"policies": [{"name": "dead"}]}), opt)
        >>> model[0].out_features, engine.neurons.ids("0"), record.max_output_change < 1e-6
        (6, [2, 3, 4, 5, 6, 7], True)
        """
        ranks = engine_ranks(self)  # under torch.distributed: one decision of every rank
        if ranks is not None:
            return apply_on_every_rank(
                ranks, self, plan, optimizer, example_inputs=example_inputs, step=step,
                epoch=epoch, **options,
            )  # fmt: skip
        epoch = self.last_epoch if epoch is None else epoch
        listeners, announce = self._announcer(plan, step, epoch)
        probe = self._probe(example_inputs)
        for key, value in self._growth_signals(plan).items():
            options.setdefault(key, value)
        with self.paused():
            record = apply_plan(
                self.model, plan, optimizer, probe, registry=self.neurons,
                accumulators=self._accumulators(), step=step, epoch=epoch,
                on_validated=announce, **options,
            )  # fmt: skip
        if record.neurons_after is not None:
            self.neurons.load_state_dict(record.neurons_after)
        self.surgeries.append(record)
        for listener in listeners:
            listener.after_surgery(self.model, record)
        return record

    def trial(
        self,
        plan: Plan,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        evaluate: Evaluate | None = None,
        held_out: Any = None,
        loss_fn: Any = None,
        recover: Recover | None = None,
        tolerance: float = 0.0,
        abs_tolerance: float = 1e-6,
        baseline: str = "before",
        example_inputs: Any = None,
        step: int | None = None,
        epoch: int | None = None,
        **options: Any,
    ) -> TrialRecord:
        """Apply ``plan`` as a trial: keep it only if the held-out loss (after ``recover``
        steps, when given) rose by at most ``max(abs_tolerance, tolerance·loss)``; otherwise
        roll the model, optimizer, statistics, neuron IDs and RNG back bitwise (see
        ``engine.surgery.trial``). The judge is ``evaluate(model) -> float``, or
        ``held_out`` data (an ``(x, y)`` batch or a loader) with ``loss_fn``. Every trial is
        in ``engine.trials``; a kept one is also in ``engine.surgeries``.

        >>> import torch, torch.nn as nn
        >>> from engine import NeuronEngine
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> x = torch.randn(256, 4); y = model(x).detach()
        >>> engine = NeuronEngine(model, correlation=True)
        >>> with engine.tracking():
        ...     _ = model(x)
        >>> budget = {"policies": [{"name": "budget", "settings": {"remove_fraction": 0.75}}]}
        >>> trial = engine.trial(engine.propose(budget), held_out=(x, y), loss_fn=nn.MSELoss())
        >>> trial.accepted, model[0].out_features, engine.neurons.size("0")
        (False, 8, 8)
        """
        refuse_trial(self)
        if evaluate is None:
            if held_out is None or loss_fn is None:
                raise ConfigurationError(
                    "a trial needs a judge: evaluate=callable(model) -> loss, or held_out=data "
                    "with loss_fn="
                )
            evaluate = held_out_loss(held_out, loss_fn)
        epoch = self.last_epoch if epoch is None else epoch
        listeners, announce = self._announcer(plan, step, epoch)
        for key, value in self._growth_signals(plan).items():
            options.setdefault(key, value)
        trial = run_trial(
            self.model, plan, optimizer, self._probe(example_inputs), evaluate=evaluate,
            recover=recover, tolerance=tolerance, abs_tolerance=abs_tolerance,
            baseline=baseline, registry=self.neurons, accumulators=self._accumulators(),
            quiet=self.paused, step=step, epoch=epoch, on_validated=announce, **options,
        )  # fmt: skip
        self.trials.append(trial)
        record = trial.record
        if trial.accepted:
            if record.neurons_after is not None:
                self.neurons.load_state_dict(record.neurons_after)
            self.surgeries.append(record)
            for listener in listeners:
                listener.after_surgery(self.model, record)
        else:
            for listener in listeners:
                rolled_back = getattr(listener, "after_rollback", None)
                if rolled_back is not None:
                    rolled_back(self.model, record)
        return trial
