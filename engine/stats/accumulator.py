"""The hot path: per-batch reductions, buffered and merged exactly into float64 state.

Every batch costs a handful of fused reductions on the activation's device (no ``.item()``, no
``.cpu()``, no Python loop over units):

* the batch is shifted by a per-window constant ``K`` (the running mean, or the first sample),
  so a large common offset (3000 + small noise) does not cancel the variance away in float32;
* two-pass sums around the batch mean, ``amin``/``amax``, Σ|x| and a firing count (reusing one
  scratch buffer) give one ``(rows, N)`` tensor (float32; float64 for float64 activations),
  appended to a short pending list;
* with correlation on, the centred batch adds ``dcᵀ·dc`` into a window accumulator.

Every ``flush_every`` batches (and whenever statistics are read) the pending window is combined
in float64 with the exact k-way formula and Chan-merged into the running ``total`` and the
per-epoch ``window`` states.

>>> import torch
>>> acc = NeuronAccumulator(4)
>>> for chunk in torch.randn(10, 32, 4).unbind(0):
...     acc.update(chunk)
>>> acc.total().n
320
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import CorrelationLimitError
from engine.stats.comoments import CoMoments, merge_comoments
from engine.stats.moments import Moments, merge_moments, saturation_mask

_SUM, _M2, _MIN, _MAX, _ABS, _FIRE, _SAT = range(7)


@dataclass(frozen=True, eq=False)
class AccumulatorCheckpoint:
    """A ``NeuronAccumulator``'s state at one moment (see ``NeuronAccumulator.checkpoint``)."""

    num_units: int
    total: Moments | None
    window: Moments | None
    comoments: CoMoments | None
    pending: tuple[torch.Tensor, ...]
    pending_n: tuple[int, ...]
    shift: torch.Tensor | None
    cross: torch.Tensor | None


class NeuronAccumulator:
    """Running statistics of N units fed with ``(samples, N)`` tensors."""

    def __init__(
        self,
        num_units: int,
        *,
        firing_threshold: float = 0.0,
        bounds: tuple[float, float] | None = None,
        saturation_tolerance: float = 0.02,
        correlation: bool = False,
        max_correlation_units: int = 4096,
        flush_every: int = 64,
        name: str = "layer",
        nonnegative: bool = False,
    ) -> None:
        if correlation and num_units > max_correlation_units:
            mib = num_units * num_units * 8 / 2**20
            raise CorrelationLimitError(
                f"layer {name!r} has {num_units} units: its co-moment matrix would hold "
                f"{num_units}×{num_units} float64 values ({mib:.0f} MiB), above the bound "
                f"max_correlation_units={max_correlation_units}; raise the bound or leave "
                f"correlation off for this layer"
            )
        self.num_units = num_units
        self.firing_threshold = float(firing_threshold)
        self.bounds = bounds
        self.saturation_tolerance = float(saturation_tolerance)
        self.correlation = correlation
        self.max_correlation_units = int(max_correlation_units)  # re-checked after growth
        self.flush_every = max(1, int(flush_every))
        # Observations known to be ≥ 0 (behind ReLU/ReLU6) with threshold 0 take a cheaper path.
        self.nonnegative = bool(nonnegative) and self.firing_threshold == 0.0
        self.name = name
        self._total: Moments | None = None
        self._window: Moments | None = None
        self._comoments: CoMoments | None = None
        self._reset_pending()

    def _reset_pending(self) -> None:
        self._pending: list[torch.Tensor] = []
        self._pending_n: list[int] = []
        self._shift: torch.Tensor | None = None
        self._cross: torch.Tensor | None = None

    # --- hot path -------------------------------------------------------------------------
    def update(self, x: torch.Tensor) -> None:
        """Add observations: ``(samples, N)``, or ``(B, N, L)`` with the units in the middle
        (a conv map viewed as ``(B, C, H·W)``, reduced without a transposing copy).

        No host sync. One scratch buffer is reused for the centred values, |x| and the firing
        test; sums are two-pass around the batch mean (robust, and faster than ``var_mean``).
        """
        x = x.detach()
        middle = x.dim() == 3
        n = x.shape[0] * x.shape[2] if middle else x.shape[0]
        if n == 0:
            return
        self._follow_device(x.device)
        # float64 activations keep float64 (a 1e6 offset + 1e-3 noise has no float32 variance);
        # everything else is reduced in float32. A window centred on a float64 shift stays in
        # float64 so the shift each batch subtracts is exactly the one the flush adds back.
        wide = x.dtype == torch.float64 or (
            self._shift is not None and self._shift.dtype == torch.float64
        )
        dtype = torch.float64 if wide else torch.float32
        if x.dtype != dtype:
            x = x.to(dtype)
        if self._shift is None:
            total = self._total
            first = x[0, :, 0] if middle else x[0]
            if total is None or total.n == 0:
                self._shift = first.clone()
            else:  # units grown by surgery have no history (NaN): centre them on this batch
                running = total.mean.to(dtype)
                self._shift = torch.where(running.isfinite(), running, first)
        shift = self._shift if self._shift.dtype == dtype else self._shift.to(dtype)

        def per_unit(t: torch.Tensor, op=torch.sum) -> torch.Tensor:
            return op(op(t, 2), 0) if middle else op(t, 0)

        def spread(v: torch.Tensor) -> torch.Tensor:
            return v[:, None] if middle else v

        scratch = x - spread(shift)
        sum_d = per_unit(scratch)
        scratch.sub_(spread(sum_d), alpha=1.0 / n)  # centred on the batch mean
        if self.correlation:
            cross = (
                torch.tensordot(scratch, scratch, dims=([0, 2], [0, 2]))
                if middle
                else scratch.T @ scratch
            )
            self._cross = cross if self._cross is None else self._cross + cross
        m2 = per_unit(scratch.square_())
        if self.nonnegative:  # behind a ReLU: |x| = x (Σ|x| = Σd + n·shift, formed in float64
            abs_sum = sum_d  # at flush) and x > 0 ⇔ sign(x) = 1
            fire = per_unit(torch.sign(x, out=scratch))
        else:
            abs_sum = per_unit(torch.abs(x, out=scratch))
            above = torch.sub(x, self.firing_threshold, out=scratch)
            fire = per_unit(above.clamp_(min=0).sign_())
        rows = [sum_d, m2, per_unit(x, torch.amin), per_unit(x, torch.amax), abs_sum, fire]
        sat = saturation_mask(x, self.bounds, self.saturation_tolerance)
        if sat is not None:
            rows.append(torch.sum(sat, dim=(0, 2) if middle else 0, dtype=dtype))
        self._pending.append(torch.stack(rows))
        self._pending_n.append(n)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def _follow_device(self, device: torch.device) -> None:
        """Move the running state to ``device`` when the batches moved (``model.to(...)``
        after tracking or ``load_snapshot``). Compares host metadata only: no device sync."""
        for state in (self._total, self._window, self._comoments):
            if state is not None and state.mean.device != device:
                break
        else:
            if self._shift is None or self._shift.device == device:
                return
        if self._total is not None:
            self._total = self._total.to(device)
        if self._window is not None:
            self._window = self._window.to(device)
        if self._comoments is not None:
            self._comoments = self._comoments.to(device)
        if self._shift is not None:
            self._shift = self._shift.to(device)
        if self._cross is not None:
            self._cross = self._cross.to(device)
        self._pending = [r.to(device) for r in self._pending]

    # --- checkpoint ---------------------------------------------------------------------------
    def checkpoint(self) -> AccumulatorCheckpoint:
        """What :meth:`restore` needs to put this accumulator back bitwise (a trial surgery
        that is rolled back). The running state is only ever replaced, never written in
        place, so holding the current objects is enough: no copy, no sync."""
        return AccumulatorCheckpoint(
            self.num_units, self._total, self._window, self._comoments,
            tuple(self._pending), tuple(self._pending_n), self._shift, self._cross,
        )  # fmt: skip

    def restore(self, checkpoint: AccumulatorCheckpoint) -> None:
        """Return to the state of :meth:`checkpoint` (observations since are forgotten).

        >>> acc = NeuronAccumulator(2)
        >>> acc.update(torch.ones(3, 2)); token = acc.checkpoint()
        >>> acc.update(torch.zeros(5, 2)); acc.restore(token); acc.total().n
        3
        """
        c = checkpoint
        self.num_units, self._total, self._window, self._comoments = (
            c.num_units, c.total, c.window, c.comoments,
        )  # fmt: skip
        self._pending, self._pending_n = list(c.pending), list(c.pending_n)
        self._shift, self._cross = c.shift, c.cross

    # --- window combine -------------------------------------------------------------------
    def flush(self) -> None:
        """Combine the pending batches in float64 and merge them into the running state."""
        if not self._pending:
            return
        # Batches of one window may differ in dtype (float32 and float64): widen each first.
        rows = torch.stack([r.to(torch.float64) for r in self._pending])  # (K, rows, N)
        self._follow_device(rows.device)
        counts = self._pending_n
        total_n = sum(counts)
        # Counts are host ints; an asynchronous copy keeps the flush free of device syncs.
        w = torch.tensor(counts, dtype=torch.float64).to(rows.device, non_blocking=True)[:, None]
        means = rows[:, _SUM] / w
        mean_d = rows[:, _SUM].sum(0) / total_n
        dev = means - mean_d
        shift = self._shift.to(torch.float64)
        block = Moments(
            n=total_n,
            mean=shift + mean_d,
            m2=rows[:, _M2].sum(0) + (w * dev.square()).sum(0),
            minimum=rows[:, _MIN].amin(0),
            maximum=rows[:, _MAX].amax(0),
            abs_sum=(
                rows[:, _SUM].sum(0) + total_n * shift if self.nonnegative else rows[:, _ABS].sum(0)
            ),
            fire=rows[:, _FIRE].sum(0),
            saturated=rows[:, _SAT].sum(0) if rows.shape[1] > _SAT else torch.zeros_like(mean_d),
        )
        self._total = block if self._total is None else merge_moments(self._total, block)
        self._window = block if self._window is None else merge_moments(self._window, block)
        if self._cross is not None:
            cross = self._cross.to(torch.float64) + (w * dev).T @ dev
            cm = CoMoments(total_n, shift + mean_d, cross)
            self._comoments = (
                cm if self._comoments is None else merge_comoments(self._comoments, cm)
            )
        self._reset_pending()

    # --- reading --------------------------------------------------------------------------
    def _or_empty(self, m: Moments | None) -> Moments:
        return m if m is not None else Moments.empty(self.num_units)

    def total(self) -> Moments:
        """Statistics over everything seen since creation or the last ``reset``."""
        self.flush()
        return self._or_empty(self._total)

    def comoments(self) -> CoMoments | None:
        self.flush()
        if not self.correlation:
            return None
        return self._comoments if self._comoments is not None else CoMoments.empty(self.num_units)

    def take_window(self) -> Moments:
        """Statistics since the previous ``take_window`` (one epoch), then start a new window."""
        self.flush()
        window = self._or_empty(self._window)
        self._window = None
        return window

    def reset(self) -> None:
        self._total = self._window = self._comoments = None
        self._reset_pending()

    # --- surgery / merging support ----------------------------------------------------------
    def load(self, total: Moments, comoments: CoMoments | None = None) -> None:
        """Replace the running state (e.g. after merging snapshots, or after surgery)."""
        self._reset_pending()
        self.num_units = total.num_units
        self._total = total
        self._window = None
        self._comoments = comoments if self.correlation else None
