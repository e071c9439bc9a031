"""Self-modifying training in one line per epoch: propose and apply plans on a schedule.

``SurgerySchedule`` wraps the four steps a training loop needs every few epochs: run the
policies on the statistics gathered since the last surgery, save the plan, apply it to the live
model and optimizer, and start the statistics afresh for the new shapes.

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with torch.no_grad():  # units 0 and 1 never fire
...     model[0].bias[:2] = -100.0
>>> opt = torch.optim.Adam(model.parameters())
>>> engine = NeuronEngine(model)
>>> schedule = SurgerySchedule(engine, opt, {"policies": [{"name": "dead"}]}, every=2)
>>> for epoch in range(4):
...     with engine.tracking():
...         _ = model(torch.randn(128, 4))  # the training epoch
...     record = schedule.epoch_end(epoch)
>>> [r.epoch for r in schedule.records], model[0].out_features
([1], 6)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from engine.errors import ConfigurationError
from engine.plan import Plan
from engine.surgery import SurgeryRecord
from engine.surgery.heldout import held_out_loss
from engine.surgery.records import TrialRecord


class SurgerySchedule:
    """Propose and apply a plan at the end of every ``every``-th epoch.

    Args:
        engine: the ``NeuronEngine`` watching the model (its statistics feed the policies).
        optimizer: the optimizer training the model; its state follows every surgery.
        config: policies (YAML path, mapping, ``PolicyConfig`` or list; None: the defaults).
        every: epochs between surgeries (the first at the end of epoch ``start + every - 1``).
        start: first epoch counted by the schedule (epochs before it never trigger surgery).
        stop: no surgery at or after this epoch (leave the last epochs to fine-tune).
        plans_dir: where each plan is saved as ``plan-epoch{E}.json`` (also empty ones).
        held_out, loss_fn, evaluate: a judge makes every surgery a *trial*
            (``engine.trial``): ``held_out`` data (an ``(x, y)`` batch or a loader) with
            ``loss_fn``, or ``evaluate(model) -> loss``. A plan whose held-out loss rises by
            more than the tolerance is rolled back bitwise.
        recover: ``recover(model, optimizer)``, run inside each trial before it is judged
            (e.g. a few training steps).
        trial_options: ``tolerance``, ``abs_tolerance``, ``baseline``, ``significance`` of
            ``engine.trial`` (with ``significance``, ``held_out`` is judged per sample and
            growth must be a significant improvement, not noise).
        backoff, min_shrink_scale: in trial mode, a refused plan that grows is proposed again
            at once without the growing policies (``grow=False`` of ``engine.propose``); a
            refused plan that only removes units, with the removal steps scaled by
            ``backoff`` (``shrink_scale``), down to ``min_shrink_scale``. The scale reached is
            kept for the next surgery (``shrink_scale``), and a kept cut at the full current
            scale lengthens it again by ``1/backoff`` (up to 1): pruning approaches the
            smallest size the held-out loss allows in bounded, adaptive steps.
        cut_budget: in trial mode, the share by which all kept cuts together may raise the
            held-out loss: each kept cut's change, relative to its baseline, is added up (a cut
            that lowered the loss gives some back), and a cut is judged with what is left as
            its tolerance (instead of ``trial_options["tolerance"]``). Without it every cut
            gets the full tolerance, and small rises ratchet up over many surgeries.
        shrink_start: surgeries before this epoch only grow (``shrink_scale=0``): a warm-up,
            so that a network is cut once it has learnt for a while, not while its loss still
            falls fast and any cut looks cheap.
        min_growth_gain: in trial mode, a plan that grows is kept only when the held-out loss
            fell by at least this share (e.g. 0.005: new units must pay for themselves). None:
            a growing plan is judged like any other.
        underfit_margin: with ``min_growth_gain``: when the training loss (the last
            ``engine.log_epoch(loss=…)``) is at least ``(1 − underfit_margin)`` × the held-out
            loss, the model fits its training data no better than data it never saw: it is
            short of capacity, not of data, and a growing plan is kept when it does not raise
            the held-out loss (the first steps of new units under Adam are small, so a gain
            rarely shows within a few recovery steps). Otherwise growth must pay
            ``min_growth_gain``. Each growing trial's record says which bar it met
            (``record.metadata["growth_bar"]``: both losses, ``underfitting``, the tolerance).
        apply_options: passed to ``engine.apply`` / ``engine.trial`` (e.g. ``measure="plan"``).

    ``epoch_end(epoch)`` returns the ``SurgeryRecord`` when a plan with actions was applied
    (and, in trial mode, kept), else None; ``plans`` and ``records`` keep every proposed plan
    and applied record, ``trials`` every trial.
    """

    def __init__(
        self,
        engine: Any,
        optimizer: torch.optim.Optimizer | None,
        config: Any = None,
        *,
        every: int = 3,
        start: int = 0,
        stop: int | None = None,
        plans_dir: str | Path | None = None,
        held_out: Any = None,
        loss_fn: Any = None,
        evaluate: Any = None,
        recover: Any = None,
        trial_options: dict[str, Any] | None = None,
        backoff: float = 0.5,
        min_shrink_scale: float = 0.125,
        min_growth_gain: float | None = None,
        shrink_start: int | None = None,
        cut_budget: float | None = None,
        underfit_margin: float | None = None,
        **apply_options: Any,
    ) -> None:
        if every < 1:
            raise ConfigurationError(f"every must be a positive number of epochs, got {every}")
        if stop is not None and stop <= start:
            raise ConfigurationError(f"stop ({stop}) must come after start ({start})")
        self.engine = engine
        self.optimizer = optimizer
        self.config = config
        self.every = every
        self.start = start
        self.stop = stop
        self.plans_dir = Path(plans_dir) if plans_dir is not None else None
        self.apply_options = apply_options
        if evaluate is None and held_out is not None:
            if loss_fn is None:
                raise ConfigurationError("held_out data needs a loss_fn to judge trials with")
            per_sample = (trial_options or {}).get("significance") is not None
            evaluate = held_out_loss(held_out, loss_fn, per_sample=per_sample)
        if (recover is not None or trial_options) and evaluate is None:
            raise ConfigurationError(
                "recover and trial_options need a judge: held_out with loss_fn, or evaluate"
            )
        if not (0.0 < backoff < 1.0 and 0.0 < min_shrink_scale <= 1.0):
            raise ConfigurationError(
                f"backoff must be in (0, 1) and min_shrink_scale in (0, 1], got "
                f"backoff={backoff}, min_shrink_scale={min_shrink_scale}"
            )
        if min_growth_gain is not None and not 0.0 <= min_growth_gain < 1.0:
            raise ConfigurationError(f"min_growth_gain must be in [0, 1), got {min_growth_gain}")
        self.min_growth_gain = min_growth_gain
        if underfit_margin is not None and not 0.0 <= underfit_margin < 1.0:
            raise ConfigurationError(f"underfit_margin must be in [0, 1), got {underfit_margin}")
        self.underfit_margin = underfit_margin
        self.shrink_start = shrink_start
        if cut_budget is not None and not 0.0 <= cut_budget < 1.0:
            raise ConfigurationError(f"cut_budget must be in [0, 1), got {cut_budget}")
        self.cut_budget = cut_budget
        self.cut_budget_used = 0.0
        self.backoff = backoff
        self.min_shrink_scale = min_shrink_scale
        self.shrink_scale = 1.0
        self.evaluate = evaluate
        self.recover = recover
        self.trial_options = dict(trial_options or {})
        self.plans: list[tuple[int, Plan]] = []
        self.records: list[SurgeryRecord] = []
        self.trials: list[TrialRecord] = []

    def due(self, epoch: int) -> bool:
        """Whether ``epoch_end(epoch)`` will propose a plan."""
        if epoch < self.start or (self.stop is not None and epoch >= self.stop):
            return False
        return (epoch - self.start + 1) % self.every == 0

    def epoch_end(self, epoch: int, *, step: int | None = None) -> SurgeryRecord | None:
        """Propose, save and apply a plan if ``epoch`` is due; then reset the statistics."""
        if not self.due(epoch):
            return None
        record = None
        if self.evaluate is not None:
            record = self._trials(epoch, step)
        else:
            plan = self._propose(epoch, 1.0 if self._cuts_allowed(epoch) else 0.0)
            if _has_actions(plan):
                record = self.engine.apply(
                    plan, self.optimizer, epoch=epoch, step=step, **self.apply_options
                )
                self.records.append(record)
        self.engine.reset()  # statistics of the old shapes say nothing about the new ones
        return record

    def _cuts_allowed(self, epoch: int) -> bool:
        return self.shrink_start is None or epoch >= self.shrink_start

    def _propose(self, epoch: int, scale: float, grow: bool = True) -> Plan:
        plan = self.engine.propose(self.config, epoch=epoch, shrink_scale=scale, grow=grow)
        self.plans.append((epoch, plan))
        if self.plans_dir is not None:
            suffix = "" if scale == 1.0 else f"-scale{scale:g}"
            suffix += "" if grow else "-nogrowth"
            plan.save(self.plans_dir / f"plan-epoch{epoch:03d}{suffix}.json")
        return plan

    def _trials(self, epoch: int, step: int | None) -> SurgeryRecord | None:
        """Trial the plan; after a refusal, try a smaller one (see the class docstring)."""
        scale, grow = (self.shrink_scale if self._cuts_allowed(epoch) else 0.0), True
        reference: dict[str, float] = {}  # a refused trial's baseline holds for the retries
        while True:
            plan = self._propose(epoch, scale, grow)
            kinds = {a.kind for a in plan.actions()}
            if not kinds:
                return None
            options = dict(self.trial_options)
            bar = None
            if "expand" in kinds and self.min_growth_gain is not None:
                bar = self._growth_bar()
                options["tolerance"] = bar["tolerance"]  # new units must pay for themselves
            elif "expand" not in kinds and self.cut_budget is not None:
                options["tolerance"] = max(0.0, self.cut_budget - self.cut_budget_used)
            trial = self.engine.trial(
                plan, self.optimizer, evaluate=self.evaluate, recover=self.recover,
                epoch=epoch, step=step, **reference, **options, **self.apply_options,
            )  # fmt: skip
            if bar is not None:
                trial.record.metadata["growth_bar"] = bar
            self.trials.append(trial)
            if trial.loss_before is not None and "significance" not in self.trial_options:
                reference = {"reference_loss": trial.loss_before}  # (a paired test re-measures)
            if trial.accepted:
                self.records.append(trial.record)
                if "expand" not in kinds and trial.loss_change is not None and trial.loss_before:
                    self.cut_budget_used += trial.loss_change / abs(trial.loss_before)
                if "expand" not in kinds and scale == self.shrink_scale:  # a kept cut: lengthen
                    self.shrink_scale = min(1.0, scale / self.backoff)
                return trial.record
            if "expand" in kinds:
                if not grow:
                    return None
                grow = False  # the growth was refused: what can the network spare instead?
                continue
            if scale == 0.0:
                return None  # cuts were not asked for (warm-up): nothing smaller to try
            smaller = scale * self.backoff
            if smaller < self.min_shrink_scale - 1e-12:
                self.shrink_scale = self.min_shrink_scale
                return None  # the smallest step was refused: nothing to spare this time
            scale = self.shrink_scale = smaller

    def _growth_bar(self) -> dict[str, Any]:
        """The tolerance a growing trial is judged with (see ``underfit_margin``)."""
        bar: dict[str, Any] = {"tolerance": -float(self.min_growth_gain), "underfitting": False}
        history = self.engine.history
        train = history.records[-1].metrics.get("loss") if len(history) else None
        if self.underfit_margin is None or train is None:
            return bar
        with self.engine.paused():  # held-out batches never reach the statistics
            value = self.evaluate(self.engine.model)
        held = float(value.double().mean()) if isinstance(value, torch.Tensor) else float(value)
        bar.update(train_loss=float(train), held_out_loss=held)
        if math.isfinite(held) and float(train) >= (1.0 - self.underfit_margin) * held:
            bar.update(tolerance=0.0, underfitting=True)
        return bar


def _has_actions(plan: Plan) -> bool:
    return any(True for _ in plan.actions())
