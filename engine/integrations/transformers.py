"""Hugging Face integration (extra ``transformers``): self-modification of a model trained
by ``transformers.Trainer``, and GPT-2's ``Conv1D`` as a known layer type.

Importing this module registers ``transformers.pytorch_utils.Conv1D`` with the engine
(``engine.integrations.hf_conv1d``), so ``NeuronEngine`` tracks GPT-2's ``c_fc`` / ``c_proj``
and plans on them apply.

**A callback, not a Trainer mixin.** ``SelfModifyingTrainerCallback`` is a plain
``TrainerCallback``: the Trainer hands every callback the live ``model``, ``optimizer`` and
``lr_scheduler``, and surgery changes all three in place (modules keep their identity, the
optimizer's param groups and state are edited, not replaced; the scheduler writes into the
same groups), so nothing of the Trainer has to be swapped. That holds for one process. Under
``torch.distributed`` the Trainer's DDP wrapper (``trainer.model_wrapped``) would have to be
rebuilt after each surgery, which a callback cannot reach: the callback refuses to start
there (use the Lightning callback, or ``engine.distributed`` in your own loop).

Tracking is on from ``on_step_begin`` to ``on_step_end`` (the training forwards of one
optimizer step; evaluation runs outside, so it never reaches the statistics). Surgery runs
after the optimizer step: every ``every``-th step (``interval="step"``) or epoch
(``interval="epoch"``). ``model.config.use_cache`` is off during training (the key/value
cache only serves generation, and its concatenation defeats the dependency trace); it is put
back at ``on_train_end``. The model's ``config`` still names the old widths (e.g.
``intermediate_size``): ``save_pretrained`` writes the new weights, but ``from_pretrained``
cannot rebuild them; keep ``callback.plans()`` (``engine.checkpoint`` replays them) to rebuild.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.integrations.extras import require

require("transformers", "transformers")

from transformers import TrainerCallback  # noqa: E402

from engine.core import NeuronEngine  # noqa: E402
from engine.errors import ConfigurationError  # noqa: E402
from engine.integrations.architecture import ArchitectureRecorder  # noqa: E402
from engine.integrations.hf_conv1d import register_conv1d  # noqa: E402
from engine.schedule import SurgerySchedule  # noqa: E402

__all__ = ["SelfModifyingTrainerCallback", "align_probe", "batch_loss", "register_conv1d"]

register_conv1d()


def batch_loss(batches: Any) -> Any:
    """A judge for trials: ``evaluate(model)`` = the mean of ``model(**batch).loss`` over
    ``batches`` (one dict of tensors, or a list of them), without gradients."""
    batches = [batches] if isinstance(batches, dict) else list(batches)

    def evaluate(model: nn.Module) -> float:
        device = next(model.parameters()).device
        total = 0.0
        with torch.no_grad():
            for batch in batches:
                out = model(**{k: v.to(device) for k, v in batch.items()})
                total += float(out.loss)
        return total / len(batches)

    return evaluate


def _raw_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside Accelerate's ``AcceleratedOptimizer`` (its param groups
    and state are the inner ones, so editing those edits what the Trainer steps)."""
    while optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = getattr(optimizer, "optimizer", None)
    return optimizer


def align_probe(engine: NeuronEngine) -> None:
    """Cut the 1-d tensors of the engine's captured keyword probe (``labels`` of a
    classification batch) to the rows kept of the batched ones: the engine keeps a 1-d
    tensor whole (it may be one unbatched sample), which here would not match the rest."""
    kwargs = engine.example_kwargs
    rows = {v.shape[0] for v in kwargs.values() if isinstance(v, torch.Tensor) and v.dim() >= 2}
    if len(rows) == 1:
        (k,) = rows
        for key, v in kwargs.items():
            if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] > k:
                kwargs[key] = v[:k].clone()


class SelfModifyingTrainerCallback(TrainerCallback):
    """Propose and apply plans while ``transformers.Trainer`` trains (module docstring).

    Args:
        config: policies (YAML path, mapping, ``PolicyConfig``; None: the defaults).
        every, interval: surgery every ``every`` optimizer steps (``"step"``) or epochs
            (``"epoch"``); ``start``/``stop`` bound it, in the same unit.
        include, exclude, correlation, engine_options: the ``NeuronEngine``'s layers and
            settings (e.g. ``include=["*.intermediate.dense"]`` for BERT's feed-forward width,
            ``["*.mlp.c_fc"]`` for GPT-2's).
        held_out: a batch dict (or a list of them) with ``labels``: every surgery becomes a
            trial judged by the model's own loss on it (``batch_loss``); or ``evaluate``.
        summary: a ``TensorBoardSummary`` (or anything with ``log(engine, step)`` and the
            surgery-listener methods) written at every epoch end and surgery.
        schedule_options: other ``SurgerySchedule`` arguments (``recover``,
            ``trial_options``, ``measure="plan"``…).
    """

    def __init__(
        self,
        config: Any = None,
        *,
        every: int = 1,
        interval: str = "step",
        start: int = 0,
        stop: int | None = None,
        include: Any = None,
        exclude: Any = None,
        correlation: Any = False,
        engine_options: dict[str, Any] | None = None,
        held_out: Any = None,
        evaluate: Any = None,
        plans_dir: str | Path | None = None,
        summary: Any = None,
        **schedule_options: Any,
    ) -> None:
        if interval not in ("epoch", "step"):
            raise ConfigurationError(f"interval must be 'epoch' or 'step', got {interval!r}")
        if every < 1 or (stop is not None and stop <= start):
            raise ConfigurationError(
                f"every must be positive and stop after start, got every={every}, "
                f"start={start}, stop={stop}"
            )
        self.config, self.every, self.interval = config, every, interval
        self.start, self.stop = start, stop
        self.engine_options = dict(engine_options or {})
        self.engine_options.update(include=include, exclude=exclude, correlation=correlation)
        if evaluate is None and held_out is not None:
            evaluate = batch_loss(held_out)
        self.evaluate = evaluate
        self.plans_dir = plans_dir
        self.summary = summary
        self.schedule_options = schedule_options
        self.engine: NeuronEngine | None = None
        self.schedule: SurgerySchedule | None = None
        self.recorder: ArchitectureRecorder | None = None
        self.events: list[dict[str, Any]] = []
        self._use_cache: Any = None
        self._last_loss: float | None = None
        self._seen_trials = 0

    def plans(self) -> list[Any]:
        """Every plan applied so far, in order (replay them on a fresh model to rebuild it)."""
        return [] if self.recorder is None else list(self.recorder.plans)

    # --- lifecycle ------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigurationError(
                "SelfModifyingTrainerCallback runs in one process only: the Trainer's DDP "
                "wrapper cannot be rebuilt from a callback after surgery"
            )
        if model is None:
            raise ConfigurationError("the Trainer passed no model to the callback")
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            self._use_cache, config.use_cache = config.use_cache, False
        if self.engine is None or self.engine.model is not model:
            self.engine = NeuronEngine(model, **self.engine_options)
            self.recorder = ArchitectureRecorder(self.engine)
            if self.summary is not None and hasattr(self.summary, "after_surgery"):
                self.engine.add_listener(self.summary)
        every = self.every if self.interval == "epoch" else 1
        start, stop = (self.start, self.stop) if self.interval == "epoch" else (0, None)
        self.schedule = SurgerySchedule(
            self.engine, _raw_optimizer(optimizer), self.config, every=every, start=start,
            stop=stop, plans_dir=self.plans_dir, evaluate=self.evaluate,
            **self.schedule_options,
        )  # fmt: skip
        self._seen_trials = 0

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._stop()
        config = getattr(model, "config", None)
        if config is not None and self._use_cache is not None:
            config.use_cache = self._use_cache

    def _stop(self) -> None:
        if self.engine is not None and self.engine.is_tracking:
            self.engine.stop()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.engine is not None and not self.engine.is_tracking:
            self.engine.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self._last_loss = float(loss)

    # --- surgery --------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        self._stop()  # evaluation and logging follow: not part of the statistics
        if self.interval == "step" and self._step_due(state.global_step):
            self._surgery(state)

    def _step_due(self, step: int) -> bool:
        if step < max(1, self.start) or (self.stop is not None and step >= self.stop):
            return False
        return (step - self.start) % self.every == 0

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.engine is None:
            return
        epoch = max(0, math.ceil(state.epoch or 0) - 1)
        loss = {} if self._last_loss is None else {"loss": self._last_loss}
        self.engine.log_epoch(epoch, **loss)
        if self.interval == "epoch":
            self._surgery(state)
        if self.summary is not None:
            self.summary.log(self.engine, state.global_step)

    def _surgery(self, state: Any) -> None:
        engine, schedule = self.engine, self.schedule
        if engine is None or schedule is None or engine.example_inputs is None:
            return
        align_probe(engine)
        epoch = max(0, math.ceil(state.epoch or 0) - 1)
        record = schedule.epoch_end(epoch, step=state.global_step)
        for trial in schedule.trials[self._seen_trials :]:
            if not trial.accepted:
                self.events.append(self._event(state, trial.record, False, trial.reason))
        self._seen_trials = len(schedule.trials)
        if record is not None:
            self.events.append(self._event(state, record, True, ""))

    @staticmethod
    def _event(state: Any, record: Any, accepted: bool, reason: str) -> dict[str, Any]:
        return {
            "step": state.global_step, "epoch": state.epoch, "accepted": accepted,
            "widths_before": dict(record.widths_before), "widths_after": dict(record.widths_after),
            "params_before": record.params_before, "params_after": record.params_after,
            "reason": reason,
        }  # fmt: skip
