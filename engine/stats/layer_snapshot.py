"""One tracked layer's statistics as plain CPU data: moments, optional co-moments, where and
how it was observed. ``StatsSnapshot`` (``engine.stats.snapshot``) holds one per layer.

>>> import torch
>>> from engine.stats.moments import Moments
>>> layer = LayerSnapshot("fc", "Linear", [0, 1], Moments.from_samples(torch.rand(5, 2)))
>>> layer.count, layer.num_units
(5, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from engine.errors import LayoutMismatchError, SnapshotError
from engine.stats.comoments import CoMoments, merge_comoments
from engine.stats.growth import GradientCross
from engine.stats.moments import Moments, merge_moments

__all__ = ["LayerSnapshot"]


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


@dataclass(eq=False)
class LayerSnapshot:
    """Statistics of one tracked layer's units, in local-index order."""

    name: str
    module_type: str
    neuron_ids: list[int]
    moments: Moments
    comoments: CoMoments | None = None
    observation: dict[str, Any] = field(default_factory=dict)
    bounds: tuple[float, float] | None = None
    growth: GradientCross | None = None  # GradMax signal (engine.stats.growth), on request

    @property
    def num_units(self) -> int:
        return len(self.neuron_ids)

    @property
    def count(self) -> int:
        return self.moments.n

    # derived per-neuron statistics (float64 CPU tensors)
    mean = property(lambda self: self.moments.mean)
    variance = property(lambda self: self.moments.variance)
    std = property(lambda self: self.moments.std)
    minimum = property(lambda self: self.moments.minimum)
    maximum = property(lambda self: self.moments.maximum)
    mean_abs = property(lambda self: self.moments.mean_abs)
    firing_rate = property(lambda self: self.moments.firing_rate)
    nonfinite = property(lambda self: self.moments.nonfinite)  # NaN/±inf values per unit

    @property
    def nonfinite_units(self) -> torch.Tensor:
        """Units that produced a NaN or ±inf value: their statistics count only the finite
        sample rows, and policies do not judge them (reset the statistics to clear it)."""
        return self.moments.nonfinite_units

    @property
    def rectified(self) -> bool:
        """True when the observed signal ends in a rectifier (ReLU, ReLU6, Threshold)."""
        return bool(self.observation.get("rectified", False))

    @property
    def dead(self) -> torch.Tensor:
        """Units that carry no signal: behind a rectifier, never above the firing threshold;
        otherwise (logits, tanh, a layer observed before its activation) exactly constant."""
        m = self.moments
        clean = ~m.nonfinite_units  # a unit that produced NaN/inf is not judged dead
        if self.rectified:
            return m.never_fired & clean
        return (m.maximum == m.minimum) & (m.n > 0) & clean

    @property
    def saturation(self) -> torch.Tensor:
        """Fraction of observations at a bound; NaN for unbounded activations (ReLU, GELU…)."""
        if self.bounds is None:
            return torch.full_like(self.moments.mean, float("nan"))
        return self.moments.saturation

    def pearson(self) -> torch.Tensor:
        if self.comoments is None:
            raise SnapshotError(
                f"layer {self.name!r} was tracked without correlation; "
                f"pass correlation=True (or a list of layers) to NeuronEngine"
            )
        return self.comoments.pearson()

    def neuron(self, local_index: int) -> dict[str, Any]:
        """All statistics of one unit as plain Python values."""
        i = local_index
        return {
            "neuron_id": self.neuron_ids[i],
            "layer": self.name,
            "local_index": i,
            "count": self.count,
            "mean": float(self.mean[i]),
            "variance": float(self.variance[i]),
            "std": float(self.std[i]),
            "min": float(self.minimum[i]),
            "max": float(self.maximum[i]),
            "mean_abs": float(self.mean_abs[i]),
            "firing_rate": float(self.firing_rate[i]),
            "saturation": _finite(float(self.saturation[i])),
            "dead": bool(self.dead[i]),
            "nonfinite": _finite(float(self.nonfinite[i])),
        }

    def summary(self) -> dict[str, Any]:
        """Layer-level figures: units, dead units, mean firing rate, mean |a|, and the units
        that produced non-finite values with the number of those values."""
        n_dead = int(self.dead.sum())
        has = self.count > 0 and self.num_units > 0
        return {
            "units": self.num_units,
            "dead": n_dead,
            "dead_fraction": n_dead / self.num_units if self.num_units else 0.0,
            "mean_firing_rate": float(self.firing_rate.mean()) if has else None,
            "mean_abs_activation": float(self.mean_abs.mean()) if has else None,
            "nonfinite_units": int(self.nonfinite_units.sum()),
            "nonfinite_values": int(torch.nansum(self.nonfinite)),
        }

    def merge(self, other: LayerSnapshot) -> LayerSnapshot:
        if (self.name, self.neuron_ids) != (other.name, other.neuron_ids):
            raise LayoutMismatchError(
                f"layer {self.name!r}: cannot merge statistics of different neuron sets "
                f"({self.num_units} units vs {other.num_units} in {other.name!r})"
            )
        if (self.comoments is None) != (other.comoments is None):
            raise LayoutMismatchError(
                f"layer {self.name!r}: one snapshot has correlation state and the other has not"
            )
        cm = None
        if self.comoments is not None and other.comoments is not None:
            cm = merge_comoments(self.comoments, other.comoments)
        growth = None
        if self.growth is not None and other.growth is not None:
            growth = self.growth.merge(other.growth)
        else:
            growth = self.growth or other.growth
        return replace(
            self, moments=merge_moments(self.moments, other.moments), comoments=cm, growth=growth
        )
