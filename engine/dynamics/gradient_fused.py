"""The CPU hot path of ``GradientTracker``: one fused pass per parameter, compiled with numba.

On CPU the tensor-op kernel (``gradient_kernel``) costs about twenty ops per recorded step, each
with its fixed overhead and a pass over cold memory. This kernel reads each gradient and weight
once, in place (no flat copy), updates the carried state (previous weights, sign and
"far from zero" flag of every component) and sums the ``gradient_stats.RAW`` counters of the
parameter straight into its record: the same numbers as the tensor-op kernel, counts exact
(``int64``), squared norms summed in float64 from exact squares (as the tensor-op kernel's
float64 block norms). Half-precision parameters are read through a float32
copy, as the tensor-op kernel counts them.

numba compiles the kernel on first use (about half a second per dtype, then cached on disk next
to this file or in numba's user cache). Without numba, ``GradientTracker(kernel="auto")`` uses
the tensor-op kernel; ``fused_kernel_available()`` says which.

>>> import numpy as np
>>> g = np.array([5e-4, 2.0, -3.0, 0.0], dtype=np.float32)
>>> w = np.zeros(4, dtype=np.float32)
>>> prev_w, sign, far = w.copy(), np.zeros(4, np.int8), np.zeros(4, np.int8)
>>> out = np.zeros(8)
>>> step = fused_kernel() if fused_kernel_available() else count_and_carry
>>> step(g, w, prev_w, sign, far, np.float32(1e-3), out)
>>> sign.tolist(), far.tolist()  # carried: sign(g), |g| ≥ eps
([1, 1, -1, 0], [0, 1, 1, 0])
>>> step(-g, w + np.float32([0.1, -0.1, 0, 0]), prev_w, sign, far, np.float32(1e-3), out)
>>> out[:6].tolist()  # RAW: far_kept, far, prev_far, maxima, minima, flips
[2.0, 2.0, 2.0, 1.0, 1.0, 3.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from engine.dynamics.gradient_kernel import sample_index


@functools.cache
def fused_kernel_available() -> bool:
    """Whether numba can be imported (the fused CPU kernel needs it)."""
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a numba that fails against this numpy
        return False
    return True


def count_and_carry(g, w, prev_w, prev_sign, prev_far, eps, out):  # pragma: no cover
    """One parameter's step over 1-D arrays (``fused_kernel`` compiles this): counts ``g``
    against the carried state, writes the ``RAW`` sums into ``out`` (8 float64) and carries
    ``g`` and ``w`` into ``prev_sign``, ``prev_far`` and ``prev_w``. Plain Python runs it too
    (slowly), component by component."""
    kept = far = was_far = maxima = crossings = flips = 0
    weight_sq = 0.0
    grad_sq = 0.0
    for i in range(g.size):
        gi = g[i]
        wi = w[i]
        d = wi - prev_w[i]
        prev_w[i] = wi
        s = np.int8(gi > 0) - np.int8(gi < 0)
        ds = np.int8(d > 0) - np.int8(d < 0)
        f = np.int8(abs(gi) >= eps)
        pf = prev_far[i]
        flip = np.int8(s * prev_sign[i] < 0)
        crossing = flip & np.int8(ds != 0)
        kept += f & pf
        far += f
        was_far += pf
        flips += flip
        crossings += crossing
        maxima += crossing & np.int8(s * ds < 0)
        prev_far[i] = f
        prev_sign[i] = s
        dd = np.float64(d)  # squares of float32 values are exact in float64
        weight_sq += dd * dd
        gg = np.float64(gi)
        grad_sq += gg * gg
    out[0] = kept
    out[1] = far
    out[2] = was_far
    out[3] = maxima
    out[4] = crossings - maxima
    out[5] = flips
    out[6] = weight_sq
    out[7] = grad_sq


@functools.cache
def fused_kernel() -> Callable[..., None]:
    """``count_and_carry`` compiled by numba (on first call; cached on disk when a cache folder
    is writable: next to this file, or numba's user cache)."""
    from numba import njit

    # reassoc lets LLVM vectorise the float64 sums (order of summation only); comparisons,
    # signs and the float32 subtraction are exact whatever the flags
    options = {"nogil": True, "fastmath": {"reassoc", "contract", "nsz"}}
    try:
        return njit(cache=True, **options)(count_and_carry)
    except RuntimeError:  # no writable cache location: compile in memory only
        return njit(**options)(count_and_carry)


CARRIED = ("prev_far", "prev_sign")
"""The ``int8`` rows of ``FusedState``, named as in ``gradient_kernel.ROWS``."""


class FusedState:
    """Carried state of ``n`` flat components laid out like ``StepState`` (previous weights in
    ``dtype``, ``prev_far`` and ``prev_sign`` rows with a sentinel past ``n`` for samples), and
    a ``step`` that runs the fused kernel once per parameter slice."""

    def __init__(self, n: int, bounds: list[tuple[int, int]], *, dtype: torch.dtype, eps: float):
        self.n = n
        self.dtype = dtype
        self.prev_weights = torch.zeros(n, dtype=dtype)
        self._bytes = torch.zeros((len(CARRIED), n + 8), dtype=torch.int8)
        self._bytes[0, n], self._bytes[1, n] = 1, 3  # packs as PACKED_ABSENT
        self._eps = torch.tensor(eps, dtype=dtype).numpy()[()]  # eps rounded as the tensor kernel
        weights, rows = self.prev_weights.numpy(), self._bytes.numpy()
        self._slices = [(weights[a:b], rows[1, a:b], rows[0, a:b]) for a, b in bounds]
        self._kernel = fused_kernel()

    def row(self, name: str) -> torch.Tensor:
        """One carried ``int8`` row (``"prev_far"`` or ``"prev_sign"``) of length ``n``."""
        return self._bytes[CARRIED.index(name), : self.n]

    def flat(self) -> torch.Tensor:
        """The rows as one flat vector (with the sentinels), for ``take``."""
        return self._bytes.view(-1)

    def sample_index(self, bounds: list[tuple[int, int]], k: int) -> torch.Tensor:
        """As ``StepState.sample_index``: ``(parameters, 2, k)`` indices of ``(far, sign)``."""
        return sample_index(bounds, k, rows=(0, 1), stride=self.n + 8, sentinel=self.n)

    def step(self, params: list[nn.Parameter], sums: np.ndarray) -> None:
        """Count every parameter's gradient against the carried state into ``sums[i]``
        (``RAW`` order) and carry the gradients and weights."""
        for p, (prev_w, prev_sign, prev_far), out in zip(params, self._slices, sums):
            g = p.grad
            if g.is_sparse:  # densified: missing entries are exact zeros
                g = g.to_dense()
            g, w = g.detach().reshape(-1), p.detach().reshape(-1)
            if g.dtype != self.dtype:  # float16 / bfloat16: counted in float32
                g, w = g.to(self.dtype), w.to(self.dtype)
            self._kernel(g.numpy(), w.numpy(), prev_w, prev_sign, prev_far, self._eps, out)
