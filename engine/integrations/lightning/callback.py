"""``SelfModifyingCallback``: self-modifying training inside ``lightning.Trainer.fit``.

The callback owns a ``NeuronEngine`` on the LightningModule (or one of its sub-modules) and a
``SurgerySchedule`` over the optimizer Lightning built from ``configure_optimizers``:

- tracking runs during training batches only (paused for validation, off outside ``fit``);
- at the end of every ``every``-th epoch (``interval="epoch"``) or optimizer step
  (``interval="step"``) the schedule proposes a plan from the statistics since the last
  surgery and applies it, or trials it when a judge is given (``held_out`` with ``loss_fn``,
  or ``evaluate``); then the statistics restart;
- surgery edits the optimizer's param groups and state in place, so ``trainer.optimizers``
  and every LR scheduler bound to it keep working;
- widths, parameter counts and surgery events go to every logger of the trainer
  (``engine/<layer>/width``…, ``engine/surgery/params_after``…), and to ``events``;
- checkpoints carry the architecture (``engine.integrations.lightning.checkpoint``):
  ``trainer.fit(model, ckpt_path=...)`` resumes with the new shapes;
- under Lightning's DDP strategy the engine's collectives keep every rank's decision equal
  (``engine.distributed``) and the DDP wrapper is rebuilt after each surgery
  (``engine.distributed.rewrap``); trials are refused there (one judgement per rank could
  disagree), as ``engine.trial`` refuses them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from engine.core import NeuronEngine
from engine.errors import ConfigurationError
from engine.integrations.architecture import (
    ArchitectureRecorder,
    recorded_neurons,
    recorded_plans,
)
from engine.integrations.lightning.checkpoint import (
    CHECKPOINT_KEY,
    install_resize_hook,
    remove_resize_hook,
)
from engine.integrations.summaries import flat_metrics, surgery_metrics
from engine.schedule import SurgerySchedule

__all__ = ["SelfModifyingCallback"]


class SelfModifyingCallback(pl.Callback):
    """Propose and apply plans during ``trainer.fit`` (see the module docstring).

    Args:
        config: policies (YAML path, mapping, ``PolicyConfig``; None: the defaults).
        every: epochs (or optimizer steps, with ``interval="step"``) between surgeries.
        interval: ``"epoch"`` (at the end of the training epoch, after validation) or
            ``"step"`` (after the optimizer step).
        start, stop: no surgery before ``start`` or at/after ``stop`` (in ``interval`` units).
        module: name of the sub-module to modify (``"net"``), ``""``: the LightningModule.
        include, exclude, correlation, engine_options: the ``NeuronEngine``'s layers and
            settings (``correlation`` feeds the redundancy and budget policies).
        held_out, loss_fn, evaluate, recover, trial_options: a judge makes every surgery a
            trial (see ``SurgerySchedule``); ``held_out`` is an ``(x, y)`` batch or a list
            of them, evaluated on the modified module.
        plans_dir: where each proposed plan is saved.
        log: send widths, parameters and surgery events to the trainer's loggers.
        summary: ``True``: also write per-neuron histograms and surgery text with a
            ``TensorBoardSummary`` on the trainer's ``TensorBoardLogger``; or a
            ``TensorBoardSummary`` (anything with ``log(engine, step)``) to write to.
        schedule_options: other ``SurgerySchedule`` arguments (``backoff``, ``cut_budget``,
            ``measure="plan"``…).

    ``engine``, ``schedule`` and ``events`` (one dict per surgery) are available after
    ``fit`` starts.
    """

    def __init__(
        self,
        config: Any = None,
        *,
        every: int = 1,
        interval: str = "epoch",
        start: int = 0,
        stop: int | None = None,
        module: str = "",
        include: Any = None,
        exclude: Any = None,
        correlation: Any = False,
        engine_options: dict[str, Any] | None = None,
        held_out: Any = None,
        loss_fn: Any = None,
        evaluate: Any = None,
        recover: Any = None,
        trial_options: dict[str, Any] | None = None,
        plans_dir: str | Path | None = None,
        log: bool = True,
        summary: Any = None,
        **schedule_options: Any,
    ) -> None:
        if interval not in ("epoch", "step"):
            raise ConfigurationError(f"interval must be 'epoch' or 'step', got {interval!r}")
        if every < 1:
            raise ConfigurationError(f"every must be a positive number, got {every}")
        if stop is not None and stop <= start:
            raise ConfigurationError(f"stop ({stop}) must come after start ({start})")
        self.config = config
        self.every, self.interval, self.start, self.stop = every, interval, start, stop
        self.module_name = module
        self.engine_options = dict(engine_options or {})
        self.engine_options.update(include=include, exclude=exclude, correlation=correlation)
        self.judge = dict(held_out=held_out, loss_fn=loss_fn, evaluate=evaluate,
                          recover=recover, trial_options=trial_options)  # fmt: skip
        self.plans_dir = plans_dir
        self.log = log
        self.summary = summary
        self._summary: Any = None
        self.schedule_options = schedule_options
        self.engine: NeuronEngine | None = None
        self.schedule: SurgerySchedule | None = None
        self.recorder: ArchitectureRecorder | None = None
        self.events: list[dict[str, Any]] = []
        self._restored: dict[str, Any] | None = None  # the record of a resumed checkpoint
        self._paused = False
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._seen_trials = 0

    # --- set-up ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        install_resize_hook(pl_module)  # before Lightning loads a checkpoint's weights

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_tracking()
        remove_resize_hook(pl_module)

    def target(self, pl_module: nn.Module) -> nn.Module:
        """The module the engine watches and surgery changes."""
        return pl_module.get_submodule(self.module_name) if self.module_name else pl_module

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        self._restored = checkpoint.get(CHECKPOINT_KEY)  # the module is resized already

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        if self.recorder is not None:
            checkpoint[CHECKPOINT_KEY] = self.recorder.record()
        elif self._restored is not None:
            checkpoint[CHECKPOINT_KEY] = self._restored

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = self.target(pl_module)
        if self.engine is None or self.engine.model is not target or self._restored is not None:
            self.engine = NeuronEngine(target, **self.engine_options)
            plans = []
            if self._restored is not None:
                self.engine.neurons.load_state_dict(recorded_neurons(self._restored).state_dict())
                plans = recorded_plans(self._restored)
                self._restored = None
            self.recorder = ArchitectureRecorder(self.engine, self.module_name, plans)
        self._attach_summary(trainer)
        distributed = _is_ddp(trainer)
        if distributed and (self.judge["held_out"] is not None or self.judge["evaluate"]):
            raise ConfigurationError(
                "SelfModifyingCallback: trials (held_out= / evaluate=) are refused under a "
                "distributed strategy (one judgement per rank could disagree); drop the judge"
            )
        every = self.every if self.interval == "epoch" else 1
        start, stop = (self.start, self.stop) if self.interval == "epoch" else (0, None)
        self.schedule = SurgerySchedule(
            self.engine, _optimizer_of(trainer, target), self.config, every=every,
            start=start, stop=stop, plans_dir=self.plans_dir, **self.judge,
            **self.schedule_options,
        )  # fmt: skip

    # --- tracking -------------------------------------------------------------------------
    def _start_tracking(self) -> None:
        if self.engine is not None and not self.engine.is_tracking:
            self.engine.start()

    def _stop_tracking(self) -> None:
        if self.engine is not None and self.engine.is_tracking:
            self.engine.stop()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_tracking()
        self._loss_sum, self._loss_count = None, 0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._paused = self.engine is not None and self.engine.is_tracking
        self._stop_tracking()  # validation batches never reach the statistics

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._paused:
            self._start_tracking()
        self._paused = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        self._stop_tracking()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_tracking()

    # --- surgery --------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().float()  # summed on the device: no host sync per batch
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._loss_count += 1
        if self.interval == "step" and self._step_due(trainer.global_step):
            self._surgery(trainer, pl_module)

    def _step_due(self, step: int) -> bool:
        if step < max(1, self.start) or (self.stop is not None and step >= self.stop):
            return False
        return (step - self.start) % self.every == 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.engine is None:
            return
        loss = None
        if self._loss_sum is not None and self._loss_count:
            loss = float(self._loss_sum) / self._loss_count  # one host sync per epoch
        epoch = trainer.current_epoch
        self.engine.log_epoch(epoch, **({"loss": loss} if loss is not None else {}))
        if self.interval == "epoch":
            self._surgery(trainer, pl_module)
        self._stop_tracking()
        if self.log:
            self._log(trainer, flat_metrics(self.engine))
        if self._summary is not None:
            self._summary.log(self.engine, trainer.global_step)

    def _attach_summary(self, trainer: pl.Trainer) -> None:
        summary = self.summary
        if summary is True:
            from engine.integrations.tensorboard import TensorBoardSummary

            board = next((lg for lg in trainer.loggers
                          if isinstance(lg, pl.loggers.TensorBoardLogger)), None)  # fmt: skip
            if board is None:
                raise ConfigurationError(
                    "SelfModifyingCallback(summary=True) needs a TensorBoardLogger among the "
                    "trainer's loggers (or pass a TensorBoardSummary)"
                )
            summary = TensorBoardSummary(board.experiment)
        self._summary = summary or None
        if self._summary is not None and hasattr(self._summary, "after_surgery"):
            assert self.engine is not None
            self.engine.add_listener(self._summary)

    def _surgery(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule, engine = self.schedule, self.engine
        assert schedule is not None and engine is not None
        if engine.example_inputs is None:
            return  # no training batch seen yet
        epoch = trainer.current_epoch
        record = schedule.epoch_end(epoch, step=trainer.global_step)
        new_trials = schedule.trials[self._seen_trials :]
        self._seen_trials = len(schedule.trials)
        if record is not None and _is_ddp(trainer):
            _rewrap(trainer)
        for trial in new_trials:
            if not trial.accepted:
                self._event(trainer, trial.record, accepted=False, reason=trial.reason)
        if record is not None:
            self._event(trainer, record, accepted=True)

    def _event(self, trainer: pl.Trainer, record: Any, *, accepted: bool, reason: str = ""
               ) -> None:  # fmt: skip
        event = {
            "epoch": trainer.current_epoch, "step": trainer.global_step, "accepted": accepted,
            "widths_before": dict(record.widths_before), "widths_after": dict(record.widths_after),
            "params_before": record.params_before, "params_after": record.params_after,
            "reason": reason,
        }  # fmt: skip
        self.events.append(event)
        if self.log:
            self._log(trainer, surgery_metrics(record, accepted=accepted))

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


def _optimizer_of(trainer: pl.Trainer, target: nn.Module) -> torch.optim.Optimizer | None:
    """The optimizer of ``trainer.optimizers`` that trains ``target``'s parameters."""
    wanted = {id(p) for p in target.parameters()}
    holding = [
        opt for opt in trainer.optimizers
        if any(id(p) in wanted for g in opt.param_groups for p in g["params"])
    ]  # fmt: skip
    if len(holding) > 1:
        raise ConfigurationError(
            f"SelfModifyingCallback: {len(holding)} optimizers train the modified module; "
            f"give its parameters to one optimizer (or modify a sub-module: module=...)"
        )
    return holding[0] if holding else None


def _is_ddp(trainer: pl.Trainer) -> bool:
    from torch.nn.parallel import DistributedDataParallel

    return isinstance(getattr(trainer.strategy, "model", None), DistributedDataParallel)


def _rewrap(trainer: pl.Trainer) -> None:
    """A new DDP wrapper around the changed module (the old one's buckets are stale)."""
    from engine.distributed import rewrap

    trainer.strategy.model = rewrap(trainer.strategy.model)
