"""Growth signal: how much the loss could fall with new units in a Linear layer (GradMax).

For a tracked ``nn.Linear`` layer L whose activations one ``nn.Linear`` consumer C reads, a new
unit of L with zero incoming weights and outgoing column ``ω`` leaves the function unchanged,
and the loss gradient with respect to its incoming weights is ``ωᵀ·M`` with

    M = E_batches[ δ_Cᵀ · x_L ]      (consumer outputs × layer inputs)

(``δ_C``: the loss gradient at C's output, ``x_L``: L's input, summed over each batch's
samples). The best ``k`` new units take ``ω`` along the top ``k`` left singular vectors of M
(Evci et al. 2022, GradMax); with ``‖ω‖ = s``, one gradient step of size ``η`` on their
incoming weights lowers the loss by ``η·s²·σᵢ²`` each, to first order.

``GradientCrossAccumulator`` adds ``δᵀ·x`` per batch on the device (float32 product, float64
sum, no host sync); ``GradientCross`` is the plain-data state (sum and batch count), merged
exactly by adding both. A row (one sample) whose ``δ`` or ``x`` holds a NaN or ±inf adds
nothing (a 0/1 row weight, no host sync) and is counted in ``nonfinite_rows``. It also sums
``x`` and ``δ`` over rows, for the sign of each new unit: an SVD leaves ``±ω`` open, and
behind a ReLU the wrong sign closes the unit for good at its first step.
:meth:`GradientCross.opening` gives ``v = M·x̄ + δ̄`` (``δ̄``: the gradient at the consumer's
bias); with ``ωᵀv ≤ 0`` a first gradient step raises the new unit's pre-activation on the
mean input (its incoming weights move by ``−η·Mᵀω``, its bias by
``−η·δ̄ᵀω``).

>>> import torch
>>> acc = GradientCrossAccumulator("fc2")
>>> acc.update(torch.ones(4, 3), torch.ones(4, 2)); acc.update(torch.ones(4, 3), torch.ones(4, 2))
>>> cross = acc.state(); cross.batches, cross.mean().tolist()[0]
(2, [4.0, 4.0])
>>> cross.merge(cross).batches, bool(torch.equal(cross.merge(cross).mean(), cross.mean()))
(4, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import LayoutMismatchError

__all__ = ["GradientCross", "GradientCrossAccumulator"]


@dataclass(eq=False)
class GradientCross:
    """``total = Σ_batches δ_Cᵀ·x_L`` over ``batches`` batches (float64), for a layer whose
    units ``consumer`` reads."""

    consumer: str
    batches: int
    total: torch.Tensor
    # Σ over rows of x_L and of δ_C, and the row count (absent in older snapshot files)
    input_total: torch.Tensor | None = None
    delta_total: torch.Tensor | None = None
    rows: int = 0
    nonfinite_rows: int = 0  # rows left out for holding NaN/±inf (absent in older files: 0)

    def opening(self) -> torch.Tensor | None:
        """``v = M·x̄ + δ̄`` (consumer outputs), or None without the row sums: new units
        whose outgoing column ``ω`` has ``ωᵀv ≤ 0`` open up at their first step."""
        if self.input_total is None or self.delta_total is None or self.rows <= 0:
            return None
        return self.mean() @ (self.input_total / self.rows) + self.delta_total / max(
            1, self.batches
        )

    def mean(self) -> torch.Tensor:
        """``M``: the mean over batches (the gradient of the mean loss, for new units)."""
        return self.total / max(1, self.batches)

    def merge(self, other: GradientCross) -> GradientCross:
        """Exact union of two windows or ranks of the same layer."""
        if other.consumer != self.consumer or other.total.shape != self.total.shape:
            raise LayoutMismatchError(
                f"cannot merge growth signals of {self.consumer!r} {tuple(self.total.shape)} "
                f"and {other.consumer!r} {tuple(other.total.shape)}"
            )
        sums = None, None, 0
        if self.input_total is not None and other.input_total is not None:
            sums = (
                self.input_total + other.input_total,
                self.delta_total + other.delta_total,
                self.rows + other.rows,
            )
        return GradientCross(
            self.consumer, self.batches + other.batches, self.total + other.total, *sums,
            self.nonfinite_rows + other.nonfinite_rows,
        )  # fmt: skip

    def to(self, device: torch.device | str) -> GradientCross:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return GradientCross(
            self.consumer, self.batches, self.total.to(device), move(self.input_total),
            move(self.delta_total), self.rows, self.nonfinite_rows,
        )  # fmt: skip


class GradientCrossAccumulator:
    """Running ``Σ δᵀ·x`` of one layer (see the module docstring). A batch whose shapes differ
    from the running sum's (the layer's input or the consumer's output was resized by
    surgery) starts the sum afresh: old and new shapes do not mix."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.reset()

    def reset(self) -> None:
        self._total: torch.Tensor | None = None
        self._x_total: torch.Tensor | None = None
        self._d_total: torch.Tensor | None = None
        self._rows = 0
        self._batches = 0
        self._bad: torch.Tensor | None = None  # rows left out (a device tensor, read at state)

    def update(self, delta: torch.Tensor, x: torch.Tensor) -> None:
        """Add one batch: ``delta`` (…, consumer out) and ``x`` (…, layer in), same leading
        shape. Tensor ops only; rows holding NaN or ±inf get weight 0 and are counted."""
        d = delta.detach().reshape(-1, delta.shape[-1])
        x = x.detach().reshape(-1, x.shape[-1])
        ok = d.isfinite().all(1) & x.isfinite().all(1)
        d = torch.where(ok[:, None], d, torch.zeros((), dtype=d.dtype, device=d.device))
        x = torch.where(ok[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        product = d.T.float() @ x.float()
        if self._total is None or self._total.shape != product.shape:
            zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=product.device)  # noqa: E731
            self._total = zeros(*product.shape)
            self._x_total, self._d_total = zeros(product.shape[1]), zeros(product.shape[0])
            self._batches = self._rows = 0
            self._bad = None
        elif self._total.device != product.device:
            self._total = self._total.to(product.device)
            self._x_total = self._x_total.to(product.device)
            self._d_total = self._d_total.to(product.device)
        self._total.add_(product)
        self._x_total.add_(x.sum(0, dtype=torch.float64))
        self._d_total.add_(d.sum(0, dtype=torch.float64))
        bad = (~ok).sum()
        self._bad = bad if self._bad is None else self._bad.to(bad.device) + bad
        self._rows += x.shape[0]
        self._batches += 1

    @property
    def batches(self) -> int:
        return self._batches

    def state(self) -> GradientCross | None:
        """The plain-data state on the CPU, or None before the first batch."""
        if self._total is None:
            return None
        bad = 0 if self._bad is None or self._bad.device.type == "meta" else int(self._bad)
        return GradientCross(
            self.consumer, self._batches, self._total.detach().cpu().clone(),
            self._x_total.cpu().clone(), self._d_total.cpu().clone(), self._rows - bad, bad,
        )  # fmt: skip
