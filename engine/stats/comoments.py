"""Streaming co-moments of N units: Pearson correlation and pairwise linear fits.

State is ``(n, mean, c)`` with ``c = Σ (x−μ)(x−μ)ᵀ`` (N×N, float64). Two states merge exactly:
``c = c_a + c_b + δδᵀ·n_a·n_b/n``. Memory is O(N²), never O(samples).

>>> import torch
>>> x = torch.randn(500, 2, dtype=torch.float64)
>>> x[:, 1] = 3 * x[:, 0] + 1
>>> cm = merge_comoments(CoMoments.from_samples(x[:100]), CoMoments.from_samples(x[100:]))
>>> round(cm.pearson()[0, 1].item(), 12), [round(v, 9) for v in cm.fit(0, 1)]
(1.0, [3.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import LayoutMismatchError
from engine.stats.chan import ChanTerms, chan_merge, counted_chan_terms


@dataclass(frozen=True)
class CoMoments:
    n: int
    mean: torch.Tensor
    c: torch.Tensor

    @classmethod
    def empty(cls, num_units: int, device: torch.device | str | None = None) -> CoMoments:
        z = torch.zeros(num_units, dtype=torch.float64, device=device)
        return cls(0, z, torch.zeros(num_units, num_units, dtype=torch.float64, device=device))

    @classmethod
    def from_samples(cls, x: torch.Tensor) -> CoMoments:
        """Two-pass float64 reference on a ``(samples, units)`` tensor, as one batch: empty
        when it holds a NaN or ±inf (as the hot path does, see ``engine.stats.moments``)."""
        x = x.detach().to(torch.float64).reshape(-1, x.shape[-1])
        if x.shape[0] == 0 or not bool(x.isfinite().all()):
            return cls.empty(x.shape[1], x.device)
        mean = x.mean(0)
        d = x - mean
        return cls(x.shape[0], mean, d.T @ d)

    @property
    def num_units(self) -> int:
        return self.mean.shape[0]

    def covariance(self) -> torch.Tensor:
        """Population covariance matrix (``c / n``)."""
        if self.n == 0:
            return torch.full_like(self.c, float("nan"))
        return self.c / self.n

    def pearson(self) -> torch.Tensor:
        """Pearson correlation matrix; NaN where a unit has zero variance."""
        d = self.c.diagonal().clamp_min(0).sqrt()
        denom = d[:, None] * d[None, :]
        r = torch.where(denom > 0, self.c / denom, torch.full_like(self.c, float("nan")))
        return r.clamp(-1.0, 1.0)

    def fit(self, i: int, j: int) -> tuple[float, float]:
        """Least-squares ``a_j ≈ α·a_i + β`` over every observation; returns ``(α, β)``.

        α is NaN when unit i is constant (nothing to regress on).
        """
        alpha, beta = self.fit_matrix()
        return float(alpha[i, j]), float(beta[i, j])

    def fit_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All pairs at once: ``alpha[i, j]``, ``beta[i, j]`` fit ``a_j ≈ alpha·a_i + beta``."""
        var = self.c.diagonal()[:, None]
        alpha = torch.where(var > 0, self.c / var, torch.full_like(self.c, float("nan")))
        beta = self.mean[None, :] - alpha * self.mean[:, None]
        return alpha, beta

    def select(self, index: torch.Tensor | list[int]) -> CoMoments:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.mean.device)
        return CoMoments(self.n, self.mean[idx], self.c[idx][:, idx])

    def to(self, device: torch.device | str) -> CoMoments:
        return CoMoments(self.n, self.mean.to(device), self.c.to(device))


def merge_comoments(a: CoMoments, b: CoMoments) -> CoMoments:
    """Exact combination of two co-moment states over the same units.

    >>> x = torch.tensor([[0.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
    >>> merge_comoments(CoMoments.from_samples(x[:1]), CoMoments.from_samples(x[1:])).c.tolist()
    [[2.0, 4.0], [4.0, 8.0]]
    """
    return chan_merge(a, b, _combine_comoments, "co-moments")


def _combine_comoments(a: CoMoments, b: CoMoments, chan: ChanTerms) -> CoMoments:
    """Two non-empty co-moment states merged, given Chan's shared terms."""
    return CoMoments(n=chan.n, mean=chan.mean, c=chan.comoment(a.c, b.c))


def merge_counted_comoments(a: CoMoments, b: CoMoments) -> CoMoments:
    """:func:`merge_comoments` for the hot path's running blocks (``n`` a 0-d float64 tensor
    on the device): branch-free, no host sync (see ``engine.stats.chan.counted_chan_terms``).

    >>> x = torch.tensor([[0.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
    >>> a, b = CoMoments.from_samples(x[:1]), CoMoments.from_samples(x[1:])
    >>> t = lambda cm: CoMoments(torch.tensor(float(cm.n), dtype=torch.float64), cm.mean, cm.c)
    >>> merge_counted_comoments(t(a), t(b)).c.tolist()
    [[2.0, 4.0], [4.0, 8.0]]
    """
    if a.num_units != b.num_units:
        raise LayoutMismatchError(
            f"cannot merge co-moments of {a.num_units} units with {b.num_units} units"
        )
    return _combine_comoments(a, b, counted_chan_terms(a.n, a.mean, b.n, b.mean))
