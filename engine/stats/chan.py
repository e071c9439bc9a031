"""Chan et al.'s parallel merge of two running states, written once.

Every mergeable state in ``engine.stats`` holds a count ``n`` and a per-unit ``mean``; the rest
(sums of squared deviations, a co-moment matrix, minima, counters) merges with the same few
terms of Chan's formula, where ``a`` and ``b`` are the two states:

    n = n_a + n_b,   δ = mean_b − mean_a,   mean = mean_a + δ·n_b/n,   weight = n_a·n_b/n,
    M2 = M2_a + M2_b + δ²·weight,   C = C_a + C_b + δδᵀ·weight.

:func:`chan_merge` does the checks and the empty-side shortcuts (merging with an empty state
returns the other one as it is) and hands :class:`ChanTerms` to the state's own ``combine``,
which only says how each of its fields merges. Everything stays in the states' dtype (float64):
no ``E[x²] − E[x]²``, no rounding beyond the formula itself.

>>> import torch
>>> t = chan_terms(2, torch.tensor([1.0]), 2, torch.tensor([3.0]))
>>> t.n, t.mean.tolist(), t.delta.tolist(), t.weight
(4, [2.0], [2.0], 1.0)
>>> t.m2(torch.tensor([0.5]), torch.tensor([0.5])).tolist()  # 0.5 + 0.5 + 2²·1
[5.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from engine.errors import LayoutMismatchError

__all__ = ["ChanState", "ChanTerms", "chan_merge", "chan_terms", "counted_chan_terms"]


class ChanState(Protocol):
    """What :func:`chan_merge` reads of a state: its count, per-unit mean and width."""

    @property
    def n(self) -> int: ...

    @property
    def mean(self) -> torch.Tensor: ...

    @property
    def num_units(self) -> int: ...


State = TypeVar("State", bound=ChanState)


@dataclass(frozen=True)
class ChanTerms:
    """The shared terms of merging two non-empty states ``a`` and ``b`` (see module docstring):
    merged count ``n`` and ``mean``, ``delta = mean_b − mean_a`` and ``weight = n_a·n_b/n``."""

    n: int | torch.Tensor
    mean: torch.Tensor
    delta: torch.Tensor
    weight: float | torch.Tensor

    def m2(self, m2_a: torch.Tensor, m2_b: torch.Tensor) -> torch.Tensor:
        """Merged per-unit sums of squared deviations: ``M2_a + M2_b + δ²·weight``."""
        return m2_a + m2_b + self.delta.square() * self.weight

    def comoment(self, c_a: torch.Tensor, c_b: torch.Tensor) -> torch.Tensor:
        """Merged co-moment matrices: ``C_a + C_b + δδᵀ·weight``.

        >>> d = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> t = ChanTerms(2, d, d, 0.5)
        >>> t.comoment(torch.zeros(2, 2), torch.zeros(2, 2)).tolist()
        [[0.5, -0.5], [-0.5, 0.5]]
        """
        return c_a + c_b + torch.outer(self.delta, self.delta) * self.weight


def chan_terms(n_a: int, mean_a: torch.Tensor, n_b: int, mean_b: torch.Tensor) -> ChanTerms:
    """The terms of Chan's merge of ``(n_a, mean_a)`` and ``(n_b, mean_b)``; ``n_a + n_b > 0``.

    >>> chan_terms(1, torch.tensor([0.0]), 3, torch.tensor([4.0])).mean.tolist()
    [3.0]
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    return ChanTerms(n=n, mean=mean_a + delta * (n_b / n), delta=delta, weight=n_a * n_b / n)


def chan_merge(
    a: State, b: State, combine: Callable[[State, State, ChanTerms], State], what: str
) -> State:
    """Merge two states over the same units: ``combine(a, b, terms)`` when both hold
    observations; ``a`` itself when ``b`` is empty, else ``b`` itself when ``a`` is.

    ``what`` names the states in the error raised for different widths
    (:class:`~engine.errors.LayoutMismatchError`).

    >>> from engine.stats.comoments import CoMoments
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> a, b = CoMoments.from_samples(x[:4]), CoMoments.from_samples(x[4:])
    >>> def combine(a, b, t):
    ...     return CoMoments(t.n, t.mean, t.comoment(a.c, b.c))
    >>> torch.allclose(chan_merge(a, b, combine, "co-moments").c, CoMoments.from_samples(x).c)
    True
    >>> chan_merge(a, CoMoments.empty(3), combine, "co-moments") is a
    True
    """
    if a.num_units != b.num_units:
        raise LayoutMismatchError(
            f"cannot merge {what} of {a.num_units} units with {b.num_units} units"
        )
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    return combine(a, b, chan_terms(a.n, a.mean, b.n, b.mean))


def counted_chan_terms(
    n_a: torch.Tensor, mean_a: torch.Tensor, n_b: torch.Tensor, mean_b: torch.Tensor
) -> ChanTerms:
    """:func:`chan_terms` for counts held as 0-d float64 tensors on the device (the hot path's
    running block, whose count of finite rows is only known there): no branch on a count, no
    host sync. Either side may be empty: an empty ``a`` gives ``b``'s mean exactly, two empty
    sides give ``a``'s mean and a zero weight.

    >>> t = counted_chan_terms(torch.tensor(0.0), torch.tensor([5.0]),
    ...                        torch.tensor(2.0), torch.tensor([3.0]))
    >>> t.n.item(), t.mean.tolist(), t.weight.item()
    (2.0, [3.0], 0.0)
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    safe = n.clamp_min(1.0)
    mean = torch.where(n_a > 0, mean_a + delta * (n_b / safe), mean_b)
    mean = torch.where(n > 0, mean, mean_a)
    return ChanTerms(n=n, mean=mean, delta=delta, weight=n_a * n_b / safe)
