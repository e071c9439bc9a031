"""TensorBoard summaries of a ``NeuronEngine`` (extra ``tensorboard``): no server needed.

``TensorBoardSummary(writer)`` writes, to a ``torch.utils.tensorboard.SummaryWriter``:

- per tracked layer, scalars ``engine/<layer>/width``, ``params``, ``dead_fraction``,
  ``mean_abs``, ``firing_rate``, ``saturation`` (bounded activations only), ``samples``, and
  ``engine/params`` for the whole model (``engine.integrations.summaries``);
- per layer, the distribution of each per-neuron statistic across the layer's neurons
  (``engine/<layer>/neuron_mean``, ``neuron_std``, ``neuron_mean_abs``,
  ``neuron_firing_rate``, ``neuron_saturation``) as one histogram each, built from the
  engine's own statistics with ``add_histogram_raw`` (bucket counts from one ``histc``):
  never one scalar per neuron;
- surgery events, as a surgery listener (``summary.attach(engine)``):
  ``engine/surgery/params_before``, ``params_after``, ``units_removed``, ``units_added``,
  ``accepted`` (0 for a rolled-back trial) and a text line per plan.

>>> import tempfile, torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> with engine.tracking():
...     _ = model(torch.randn(32, 4))
>>> summary = TensorBoardSummary(log_dir=tempfile.mkdtemp())
>>> tags = summary.log(engine, step=0)
>>> "engine/0/width" in tags and "engine/0/neuron_mean" in tags
True
>>> summary.close()
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from engine.integrations.extras import require
from engine.integrations.summaries import flat_metrics, surgery_metrics

require("tensorboard", "tensorboard")

from torch.utils.tensorboard import SummaryWriter  # noqa: E402

__all__ = ["NEURON_STATISTICS", "TensorBoardSummary", "histogram_raw"]

NEURON_STATISTICS = ("mean", "std", "mean_abs", "firing_rate", "saturation")


def histogram_raw(values: torch.Tensor, bins: int = 30) -> dict[str, Any] | None:
    """The keyword arguments of ``SummaryWriter.add_histogram_raw`` for ``values`` (one
    per neuron; non-finite ones left out), or None when none is finite.

    >>> h = histogram_raw(torch.tensor([0.0, 1.0, 1.0, 3.0]), bins=3)
    >>> h["num"], h["bucket_limits"], h["bucket_counts"]
    (4, [1.0, 2.0, 3.0], [1.0, 2.0, 1.0])
    """
    v = values.detach().double().flatten()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        limits, counts = [hi], [float(v.numel())]
    else:
        counts = torch.histc(v, bins=bins, min=lo, max=hi).tolist()
        limits = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)[1:].tolist()
    return {
        "min": lo, "max": hi, "num": int(v.numel()), "sum": float(v.sum()),
        "sum_squares": float((v * v).sum()), "bucket_limits": limits, "bucket_counts": counts,
    }  # fmt: skip


class TensorBoardSummary:
    """Engine summaries for TensorBoard (see the module docstring).

    Args:
        writer: a ``SummaryWriter`` (e.g. Lightning's ``TensorBoardLogger.experiment``);
            None: one is opened on ``log_dir``.
        prefix: the tags' first part.
        histograms: write the per-neuron distributions.
        bins: buckets per histogram.
    """

    def __init__(
        self,
        writer: Any = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        prefix: str = "engine",
        histograms: bool = True,
        bins: int = 30,
    ) -> None:
        self.writer = writer if writer is not None else SummaryWriter(log_dir=log_dir)
        self.owns_writer = writer is None
        self.prefix, self.histograms, self.bins = prefix, histograms, bins
        self.step = 0  # the last step given to log(): surgery events without one use it

    def log(self, engine: Any, step: int) -> list[str]:
        """Write the layer scalars and per-neuron histograms of ``engine`` at ``step``;
        returns the tags written."""
        self.step = step
        tags = []
        for tag, value in flat_metrics(engine, self.prefix).items():
            self.writer.add_scalar(tag, value, global_step=step)
            tags.append(tag)
        if self.histograms:
            for name in engine.layers:
                stats = engine.layer_stats(name)
                if stats.count == 0:
                    continue
                for key in NEURON_STATISTICS:
                    raw = histogram_raw(getattr(stats, key), self.bins)
                    if raw is None:
                        continue  # e.g. saturation of an unbounded activation (all NaN)
                    tag = f"{self.prefix}/{name}/neuron_{key}"
                    self.writer.add_histogram_raw(tag, global_step=step, **raw)
                    tags.append(tag)
        return tags

    # --- surgery listener -----------------------------------------------------------------
    def attach(self, engine: Any) -> TensorBoardSummary:
        """Write every surgery of ``engine`` (and every refused trial) as it happens."""
        engine.add_listener(self)
        return self

    def before_surgery(self, model: Any, plan: Any, *, step: int | None, epoch: int | None
                       ) -> None:  # fmt: skip
        pass

    def after_surgery(self, model: Any, record: Any) -> None:
        self._surgery(record, accepted=True)

    def after_rollback(self, model: Any, record: Any) -> None:
        self._surgery(record, accepted=False)

    def _surgery(self, record: Any, *, accepted: bool) -> None:
        step = record.step if record.step is not None else self.step
        for tag, value in surgery_metrics(record, f"{self.prefix}/surgery",
                                          accepted=accepted).items():  # fmt: skip
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, global_step=step)
        changes = ", ".join(
            f"{name} {record.widths_before[name]}→{width}"
            for name, width in record.widths_after.items()
            if record.widths_before.get(name) != width
        )
        verdict = "applied" if accepted else "rolled back"
        self.writer.add_text(
            f"{self.prefix}/surgery",
            f"epoch {record.epoch}, step {step}: {verdict}; {changes or 'no width change'}; "
            f"parameters {record.params_before} → {record.params_after}",
            global_step=step,
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Flush; close the writer if this object opened it."""
        self.writer.flush()
        if self.owns_writer:
            self.writer.close()
