"""Change metrics between two aligned tensors, in float64: L1, L2, cosine distance, relative.

:class:`ChangeSums` keeps the four sums every metric derives from (``Σ|Δ|``, ``ΣΔ²``, ``Σa²``,
``Σb²``; the cosine distance is ``(‖Δ‖² − (‖a‖ − ‖b‖)²) / (2‖a‖‖b‖)``, which needs no dot
product and keeps its precision for tiny changes), so per-tensor results add up
exactly to model totals (``sum`` of sums, never an average of ratios). Per-unit metrics use the
same sums taken per row (a Linear row, a conv filter).

>>> import torch
>>> a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 4.0], [1.0, 1.0]])
>>> s = change_sums(a, b)
>>> s.l1, s.l2, round(s.relative, 4), round(s.cosine_distance, 4)
(7.0, 5.0, 1.5076, 0.8579)
>>> rows = RowSums.of(a, b)
>>> rows.l2.tolist(), rows.cosine_distance.tolist()
([5.0, 0.0], [1.0, 0.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_F64 = torch.float64


def _flat64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).to(_F64)


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


@dataclass(frozen=True)
class ChangeSums:
    """``Σ|Δ|, ΣΔ², Σa², Σb²`` over ``numel`` matched entries (Δ = b − a)."""

    numel: int = 0
    l1: float = 0.0
    l2_sq: float = 0.0
    a_sq: float = 0.0
    b_sq: float = 0.0

    def __add__(self, other: ChangeSums) -> ChangeSums:
        return ChangeSums(
            self.numel + other.numel,
            self.l1 + other.l1,
            self.l2_sq + other.l2_sq,
            self.a_sq + other.a_sq,
            self.b_sq + other.b_sq,
        )

    @property
    def l2(self) -> float:
        """‖ΔW‖₂."""
        return math.sqrt(self.l2_sq)

    @property
    def norm_a(self) -> float:
        return math.sqrt(self.a_sq)

    @property
    def norm_b(self) -> float:
        return math.sqrt(self.b_sq)

    @property
    def relative(self) -> float:
        """‖ΔW‖ / ‖W_a‖ (0 when nothing changed, inf when ‖W_a‖ = 0 and W changed)."""
        return _ratio(self.l2, self.norm_a)

    @property
    def cosine_distance(self) -> float:
        """1 − cos(W_a, W_b); 0 when both are zero, 1 when exactly one is."""
        den = 2.0 * self.norm_a * self.norm_b
        if den == 0:
            return 0.0 if self.a_sq == self.b_sq else 1.0
        radial = (self.norm_a - self.norm_b) ** 2
        return max(0.0, min(2.0, (self.l2_sq - radial) / den))

    def to_json(self) -> dict[str, float | int | None]:
        rel = self.relative
        return {
            "numel": self.numel,
            "l1": self.l1,
            "l2": self.l2,
            "cosine_distance": self.cosine_distance,
            "relative": rel if math.isfinite(rel) else None,
            "norm_a": self.norm_a,
            "norm_b": self.norm_b,
        }


def change_sums(a: torch.Tensor, b: torch.Tensor) -> ChangeSums:
    """:class:`ChangeSums` of two same-shape tensors (any float dtype, any device)."""
    a64, b64 = _flat64(a), _flat64(b)
    d = b64 - a64
    return ChangeSums(
        numel=a64.numel(),
        l1=float(torch.linalg.vector_norm(d, 1)),
        l2_sq=float(torch.dot(d, d)),
        a_sq=float(torch.dot(a64, a64)),
        b_sq=float(torch.dot(b64, b64)),
    )


@dataclass(frozen=True)
class RowSums:
    """:class:`ChangeSums` per row (axis 0 of a tensor): float64 vectors of equal length."""

    l1: torch.Tensor
    l2_sq: torch.Tensor
    a_sq: torch.Tensor
    b_sq: torch.Tensor

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor) -> RowSums:
        rows = a.shape[0] if a.dim() > 0 else 1
        a64 = a.detach().reshape(rows, -1).to(_F64)
        b64 = b.detach().reshape(rows, -1).to(_F64)
        d = b64 - a64
        return cls(
            l1=torch.linalg.vector_norm(d, 1, dim=1),
            l2_sq=torch.linalg.vector_norm(d, 2, dim=1).square(),
            a_sq=torch.linalg.vector_norm(a64, 2, dim=1).square(),
            b_sq=torch.linalg.vector_norm(b64, 2, dim=1).square(),
        )

    def __add__(self, other: RowSums) -> RowSums:
        return RowSums(*(getattr(self, k) + getattr(other, k) for k in _ROW_FIELDS))

    def total(self, numel: int) -> ChangeSums:
        return ChangeSums(numel, *(float(getattr(self, k).sum()) for k in _ROW_FIELDS))

    @property
    def l2(self) -> torch.Tensor:
        return self.l2_sq.sqrt()

    @property
    def relative(self) -> torch.Tensor:
        """Per row ‖Δ‖/‖a‖ (0 where nothing changed, inf where ‖a‖ = 0 and the row changed)."""
        na = self.a_sq.sqrt()
        ratio = self.l2 / na.where(na > 0, torch.ones_like(na))
        inf = torch.full_like(ratio, math.inf)
        return torch.where(na > 0, ratio, torch.where(self.l2_sq > 0, inf, torch.zeros_like(na)))

    @property
    def cosine_distance(self) -> torch.Tensor:
        na, nb = self.a_sq.sqrt(), self.b_sq.sqrt()
        den = 2.0 * na * nb
        dist = (self.l2_sq - (na - nb).square()) / den.where(den > 0, torch.ones_like(den))
        degenerate = torch.where(self.a_sq == self.b_sq, 0.0, 1.0).to(_F64)
        return torch.where(den > 0, dist.clamp(0.0, 2.0), degenerate)


_ROW_FIELDS = ("l1", "l2_sq", "a_sq", "b_sq")
