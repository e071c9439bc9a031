"""Per-neuron moments with an exact merge rule (Chan et al.), as plain tensors.

``Moments`` holds, for N units, the count ``n`` of observations (a Python int), the float64
``mean`` and ``m2`` (sum of squared deviations from the mean), ``minimum``/``maximum``,
``abs_sum`` (for mean |a|), ``fire`` (observations above the firing threshold), ``saturated``
(observations at a bound of a bounded activation) and ``nonfinite`` (NaN/±inf values the unit
produced).

**Non-finite samples** are left out by *batch*: a batch (one ``update`` of the accumulator, one
``from_samples`` call) with a NaN or ±inf in any unit counts in no statistic of that layer
(``n`` counts the samples of the other batches; moments, extremes, counters and co-moments all
see the same samples), and ``nonfinite`` counts, per unit, the non-finite values it produced.
So one NaN batch no longer turns every statistic into NaN for good, the co-moment matrix stays
consistent with the moments, and a policy can tell which units saw broken values
(``nonfinite > 0``) and refuse to judge them. (``engine.stats.accumulator`` says why by batch.)

Merging two states is exact and pure, so per-batch, per-epoch, per-rank and per-file states all
combine the same way:

>>> import torch
>>> x = torch.randn(100, 3, dtype=torch.float64)
>>> a, b = Moments.from_samples(x[:30]), Moments.from_samples(x[30:])
>>> torch.allclose(merge_moments(a, b).variance, x.var(0, correction=0))
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from engine.errors import LayoutMismatchError
from engine.stats.chan import ChanTerms, chan_merge, counted_chan_terms

TENSOR_FIELDS = (
    "mean", "m2", "minimum", "maximum", "abs_sum", "fire", "saturated", "nonfinite",
)  # fmt: skip


@dataclass(frozen=True)
class Moments:
    """Exact running statistics of N units (see module docstring)."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor
    minimum: torch.Tensor
    maximum: torch.Tensor
    abs_sum: torch.Tensor
    fire: torch.Tensor
    saturated: torch.Tensor
    nonfinite: torch.Tensor

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def empty(cls, num_units: int, device: torch.device | str | None = None) -> Moments:
        z = torch.zeros(num_units, dtype=torch.float64, device=device)
        inf = torch.full_like(z, float("inf"))
        return cls(0, z, z.clone(), inf, -inf, z.clone(), z.clone(), z.clone(), z.clone())

    @classmethod
    def from_samples(
        cls,
        x: torch.Tensor,
        firing_threshold: float = 0.0,
        bounds: tuple[float, float] | None = None,
        saturation_tolerance: float = 0.02,
    ) -> Moments:
        """Two-pass statistics of a ``(samples, units)`` tensor, computed in float64, as one
        batch: if it holds a NaN or ±inf, nothing but those values (``nonfinite``, per unit)
        counts, as in the accumulator.

        The reference implementation: slow-path and test use, not the training hot path.

        >>> Moments.from_samples(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).mean.tolist()
        [2.0, 3.0]
        >>> m = Moments.from_samples(torch.tensor([[1.0, 2.0], [float("nan"), 5.0]]))
        >>> m.n, m.nonfinite.tolist()
        (0, [1.0, 0.0])
        """
        x = x.detach().to(torch.float64).reshape(-1, x.shape[-1])
        nonfinite = (~x.isfinite()).sum(0).to(torch.float64)
        if x.shape[0] == 0 or bool(nonfinite.any()):
            return replace(cls.empty(x.shape[1], x.device), nonfinite=nonfinite)
        mean = x.mean(0)
        sat = saturation_mask(x, bounds, saturation_tolerance)
        return cls(
            n=x.shape[0],
            mean=mean,
            m2=((x - mean) ** 2).sum(0),
            minimum=x.amin(0),
            maximum=x.amax(0),
            abs_sum=x.abs().sum(0),
            fire=(x > firing_threshold).sum(0).to(torch.float64),
            saturated=torch.zeros_like(mean) if sat is None else sat.sum(0).to(torch.float64),
            nonfinite=nonfinite,
        )

    # --- derived statistics ---------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.mean.shape[0]

    def _per_sample(self, total: torch.Tensor) -> torch.Tensor:
        if self.n == 0:
            return torch.full_like(total, float("nan"))
        return total / self.n

    @property
    def variance(self) -> torch.Tensor:
        """Population variance pooled over every observation (``m2 / n``)."""
        return self._per_sample(self.m2)

    @property
    def std(self) -> torch.Tensor:
        return self.variance.sqrt()

    @property
    def mean_abs(self) -> torch.Tensor:
        return self._per_sample(self.abs_sum)

    @property
    def firing_rate(self) -> torch.Tensor:
        return self._per_sample(self.fire)

    @property
    def saturation(self) -> torch.Tensor:
        return self._per_sample(self.saturated)

    @property
    def never_fired(self) -> torch.Tensor:
        """True for units that never exceeded the firing threshold (requires ``n > 0``)."""
        return (self.fire == 0) & (self.n > 0)

    # --- conversion -----------------------------------------------------------------------
    def to(self, device: torch.device | str) -> Moments:
        return Moments(self.n, *(getattr(self, f).to(device) for f in TENSOR_FIELDS))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f) for f in TENSOR_FIELDS}

    @classmethod
    def from_tensors(cls, n: int, tensors: dict[str, torch.Tensor]) -> Moments:
        """From :meth:`tensors`' arrays; ``nonfinite`` may be absent (files written before it
        was counted): zeros then."""
        if "nonfinite" not in tensors:
            tensors = {**tensors, "nonfinite": torch.zeros_like(tensors["mean"])}
        return cls(int(n), *(tensors[f].to(torch.float64) for f in TENSOR_FIELDS))

    @property
    def nonfinite_units(self) -> torch.Tensor:
        """True for units that produced a NaN or ±inf value (their statistics count only the
        finite rows; policies do not judge them)."""
        return self.nonfinite > 0

    def select(self, index: torch.Tensor | list[int]) -> Moments:
        """The statistics of a subset of units (used when surgery removes units)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.mean.device)
        return Moments(self.n, *(getattr(self, f)[idx] for f in TENSOR_FIELDS))


assert [f.name for f in fields(Moments)][1:] == list(TENSOR_FIELDS)


def saturation_mask(
    x: torch.Tensor, bounds: tuple[float, float] | None, tolerance: float
) -> torch.Tensor | None:
    """Where ``x`` lies within ``tolerance·(hi−lo)`` of a bound of a bounded activation."""
    if bounds is None:
        return None
    lo, hi = bounds
    eps = tolerance * (hi - lo)
    return (x <= lo + eps) | (x >= hi - eps)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Exact combination of two states over the same units (Chan's parallel formula).

    >>> x = torch.tensor([[0.0], [2.0], [4.0]], dtype=torch.float64)
    >>> m = merge_moments(Moments.from_samples(x[:1]), Moments.from_samples(x[1:]))
    >>> m.n, m.mean.tolist(), m.m2.tolist(), m.maximum.tolist()
    (3, [2.0], [8.0], [4.0])
    """
    merged = chan_merge(a, b, _combine_moments, "statistics")
    if a.n == 0 or b.n == 0:  # one side returned as it is: keep the other's non-finite counts
        merged = replace(merged, nonfinite=a.nonfinite + b.nonfinite)
    return merged


def merge_counted(a: Moments, b: Moments) -> Moments:
    """:func:`merge_moments` for the hot path's running blocks, whose ``n`` is a 0-d float64
    tensor on the device (the number of finite rows): branch-free, no host sync.

    >>> a = Moments.from_samples(torch.tensor([[0.0], [2.0]], dtype=torch.float64))
    >>> b = Moments.from_samples(torch.tensor([[4.0]], dtype=torch.float64))
    >>> count = lambda m: replace(m, n=torch.tensor(float(m.n), dtype=torch.float64))
    >>> m = merge_counted(count(a), count(b))
    >>> m.n.item(), m.mean.tolist(), m.m2.tolist()
    (3.0, [2.0], [8.0])
    """
    if a.num_units != b.num_units:
        raise LayoutMismatchError(
            f"cannot merge statistics of {a.num_units} units with {b.num_units} units"
        )
    return _combine_moments(a, b, counted_chan_terms(a.n, a.mean, b.n, b.mean))


def _combine_moments(a: Moments, b: Moments, chan: ChanTerms) -> Moments:
    """How each field of two non-empty states merges, given Chan's shared terms."""
    return Moments(
        n=chan.n,
        mean=chan.mean,
        m2=chan.m2(a.m2, b.m2),
        minimum=torch.minimum(a.minimum, b.minimum),
        maximum=torch.maximum(a.maximum, b.maximum),
        abs_sum=a.abs_sum + b.abs_sum,
        fire=a.fire + b.fire,
        saturated=a.saturated + b.saturated,
        nonfinite=a.nonfinite + b.nonfinite,
    )
