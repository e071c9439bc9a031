"""One batch reduced to one ``(rows, N)`` tensor: the accumulator's per-``update`` kernel.

Every row is a per-unit reduction of the batch (float32; float64 for float64 activations):
``Σ d`` with ``d = x − shift`` (the batch's first sample, so a large common offset cannot
cancel the variance away in float32), ``Σ (d − d̄)²`` (two-pass, around the batch mean),
minimum, maximum, ``Σ |x|``, the firing count, the count of non-finite values, the shift
itself and, for a bounded activation, the saturated count (see the ``SUM`` … ``SAT`` indices).

On a CPU the cost is memory passes over the batch, so the kernel keeps the working set to the
batch and **one scratch tensor**, reused for the non-finite test, the centred values, ``|x|``
and the firing test, and kept between calls (per thread, up to ``SCRATCH_LIMIT`` bytes: no
fresh pages every batch; other devices have a caching allocator). Comparisons write into
that float scratch directly. (Writing the element-wise results side by side into one wide
scratch so that a single reduction gives every sum was measured slower: three times the
working set, for fewer calls.) Behind a ReLU (``nonnegative``) ``|x| = x`` and ``x > 0 ⇔
sign(x) = 1``: ``Σ |x|`` is formed from ``Σ d`` in float64 later.

Nothing here reads a value on the host: a batch holding a NaN or ±inf gives NaN/±inf in some
rows, and the accumulator leaves it out by its non-finite count, on the device.

>>> import torch
>>> rows = batch_rows(torch.tensor([[1.0, -2.0], [3.0, 4.0]]), 0.0, None, 0.02, False)
>>> rows[SUM].tolist(), rows[M2].tolist(), rows[FIRE].tolist(), rows[ABS].tolist()
([2.0, 6.0], [2.0, 18.0], [2.0, 1.0], [4.0, 6.0])
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from engine.stats.moments import saturation_mask

__all__ = ["ABS", "BAD", "FIRE", "M2", "MAX", "MIN", "SAT", "SHIFT", "SUM", "batch_rows"]

SUM, M2, MIN, MAX, ABS, FIRE, BAD, SHIFT, SAT = range(9)
SCRATCH_LIMIT = 64 * 2**20  # bytes of CPU scratch kept per thread (larger batches allocate)
SCRATCH_FROM = 128 * 2**10  # smaller batches allocate too (the allocator keeps those, cheaper)


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[torch.dtype, torch.Tensor] = {}


_kept = _Scratch()


def scratch_like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor shaped like ``x``; on a CPU its memory is reused
    from call to call on one thread (valid until the next call there).

    >>> a = scratch_like(torch.zeros(256, 256)); b = scratch_like(torch.zeros(256, 200))
    >>> a.data_ptr() == b.data_ptr(), b.shape
    (True, torch.Size([256, 200]))
    """
    numel = x.numel()
    size = numel * x.element_size()
    if x.device.type != "cpu" or not SCRATCH_FROM <= size <= SCRATCH_LIMIT:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    buf = _kept.buffers.get(x.dtype)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=x.dtype)
        _kept.buffers[x.dtype] = buf
    return buf[:numel].view(x.shape)


def batch_rows(
    x: torch.Tensor,
    threshold: float,
    bounds: tuple[float, float] | None,
    tolerance: float,
    nonnegative: bool,
    correlate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``(8 or 9, N)`` rows of a float32/float64 batch ``x``: ``(samples, N)``, or
    ``(B, N, L)`` with the units in the middle (a conv map viewed without a copy).

    ``correlate(centred, bad)``, when given, is called with ``x`` minus the batch mean (in
    the scratch tensor, which it may overwrite) and the per-unit non-finite counts, and
    returns the ``M2`` row: the correlation's matmul gives ``Σ (d − d̄)²`` on its diagonal,
    so its caller may return zeros and take the diagonal instead (two passes fewer).
    """
    if x.dim() == 3:
        return _middle_rows(x, threshold, bounds, tolerance, nonnegative, correlate)
    n = x.shape[0]
    s = scratch_like(x)
    shift = x[0]
    # x − x is 0 for a finite value and NaN for NaN/±inf: float ops only (a bool test per
    # value costs several float passes on a CPU).
    bad = torch.sub(x, x, out=s).nan_to_num_(nan=1.0).sum(0)
    sum_d = torch.sub(x, shift, out=s).sum(0)
    s.sub_(sum_d, alpha=1.0 / n)  # centred on the batch mean
    m2 = s.square_().sum(0) if correlate is None else correlate(s, bad)
    if nonnegative:  # Σ|x| = Σd + n·shift is formed in float64 at the fold (row ABS unused)
        abs_sum = sum_d
        fire = torch.sign(x, out=s).sum(0)
    else:
        abs_sum = torch.abs(x, out=s).sum(0)
        fire = torch.gt(x, threshold, out=s).sum(0)
    rows = [sum_d, m2, x.amin(0), x.amax(0), abs_sum, fire, bad, shift]
    sat = saturation_mask(x, bounds, tolerance)
    if sat is not None:
        rows.append(torch.sum(sat, dim=0, dtype=x.dtype))
    return torch.stack(rows)


def _middle_rows(
    x: torch.Tensor,
    threshold: float,
    bounds: tuple[float, float] | None,
    tolerance: float,
    nonnegative: bool,
    correlate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """:func:`batch_rows` of a ``(B, N, L)`` view: sums over ``L`` first, then ``B``."""
    n = x.shape[0] * x.shape[2]
    s = scratch_like(x)
    shift = x[0, :, 0]
    bad = torch.sub(x, x, out=s).nan_to_num_(nan=1.0).sum(2).sum(0)
    sum_d = torch.sub(x, shift[:, None], out=s).sum(2).sum(0)
    s.sub_(sum_d[:, None], alpha=1.0 / n)
    m2 = s.square_().sum(2).sum(0) if correlate is None else correlate(s, bad)
    if nonnegative:
        abs_sum = sum_d
        fire = torch.sign(x, out=s).sum(2).sum(0)
    else:
        abs_sum = torch.abs(x, out=s).sum(2).sum(0)
        fire = torch.gt(x, threshold, out=s).sum(2).sum(0)
    low, high = x.amin(2).amin(0), x.amax(2).amax(0)
    rows = [sum_d, m2, low, high, abs_sum, fire, bad, shift]
    sat = saturation_mask(x, bounds, tolerance)
    if sat is not None:
        rows.append(torch.sum(sat, dim=(0, 2), dtype=x.dtype))
    return torch.stack(rows)
