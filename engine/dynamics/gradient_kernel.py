"""One recorded step of gradient statistics over a flat, block-padded vector, on its device.

The hot path of ``GradientTracker``: a fixed number of tensor ops whatever the number of
parameters, and no host sync. On CPU its cost is each op's fixed overhead plus the memory it
moves (inside a training step the buffers are cold), so the step keeps both low: six float
passes produce three ``int8`` rows (the float scratch is the previous weights' buffer, free once
Δw is taken), every counter is then a bitwise op on those bytes viewed as ``int64`` words (8
components per word, two rows per op where the row order allows), and the counts are summed per
block with the same word trick.

**Rows of ``int8`` bytes** (one buffer, ``n`` components each; a sign byte is ``0x01`` for +1,
``0xFF`` for −1, ``0x00`` for 0, so bit 0 says "nonzero" and bit 1 "negative"):

==========  ====================================================================================
row         value
==========  ====================================================================================
far_kept    far now and at the last record: ``far & prev_far``
far         ``|g| ≥ eps``: trunc(clamp(g / eps, −1, 1)) is ±1 exactly then (IEEE division is
            correctly rounded, so a ``g`` just below ``eps`` never reaches 1; ``eps`` is a device
            tensor because CUDA turns division by a host scalar into a multiplication), ``& 1``
prev_far    far at the last record (carried)
maxima      a flip with g·Δw < 0: ``crossing & ((sign ^ step_sign) >> 1) & sign``
crossings   a flip with Δw ≠ 0: ``flips & step_sign`` (minima = crossings − maxima, see below)
flips       sign(g)·sign(g_prev) < 0: ``((sign ^ prev_sign) >> 1) & sign & prev_sign & 1``
step_sign   sign(Δw), Δw the weight change since the last record
sign        sign(g)
prev_sign   sign(g) at the last record (carried)
==========  ====================================================================================

with ``crossing = flips & step_sign`` (a flip with Δw ≠ 0; see ``gradient_stats`` for the
minimum / maximum heuristic). A crossing that is not a maximum is a minimum, so the minima are
counted as ``Σ crossings − Σ maxima`` on the block sums (exact in float64) rather than with a
word op over the whole row. ``>> 1`` moves bit 1 of every byte to bit 0 of the same byte, and
``& 1`` (explicit, or through an operand that is already 0/1) clears the other bits, so the word
ops never mix bytes. The first six rows are the counted ones (``COUNT_ROWS``). The row order
lets pairs of rows at equal distances share one op (seven word ops in all, and one copy to
carry ``(sign, far)`` into ``(prev_sign, prev_far)``).

**Block sums.** The flat vector is a run of blocks of ``block`` components (≤ 1024); every
parameter starts on a block boundary and is padded with zeros, which count as nothing. Summing
a row's words over a block adds 8 byte lanes of at most ``block / 8 ≤ 128`` ones each, so no
lane carries into the next; the 8 lanes of the sum then add up to the block's count. Squared
norms of ``g`` and ``Δw`` are squared block norms, computed in float64 (so gradients below
1e-19 do not underflow to 0). ``step`` returns ``(8, blocks)`` float64.

>>> import torch
>>> state = StepState(16, block=8, dtype=torch.float32, device=torch.device("cpu"), eps=1e-3)
>>> state.grad[:4] = torch.tensor([5e-4, 2.0, -3.0, 0.0])
>>> blocks = state.step()  # rows: COUNT_ROWS, then Σ Δw², Σ g² (first block shown)
>>> [round(v, 4) for v in blocks[:, 0].tolist()]
[0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 13.0]
>>> far, sign = state.flat().take(state.sample_index([(0, 4)], 5))[0]
>>> decode_codes((sign + 4 * far).numpy()).tolist()
[2, 1, -1, 0, 3]
>>> state.grad[:4] = torch.tensor([-5e-4, -2.0, -3.0, 1.0])
>>> state.weights[:4] = torch.tensor([0.1, -0.1, 0.0, 0.0])  # Δw
>>> blocks = state.step()
>>> blocks[:6, 0].tolist()  # 2 flips: g < 0 after Δw > 0 (maximum), g < 0 after Δw < 0 (minimum)
[2.0, 3.0, 2.0, 1.0, 1.0, 2.0]
"""

from __future__ import annotations

import math

import numpy as np
import torch

ONES = 0x0101010101010101
"""Bit 0 of every byte of an ``int64`` word."""
ROWS = (
    "far_kept", "far", "prev_far", "maxima", "crossings", "flips",
    "step_sign", "sign", "prev_sign",
)  # fmt: skip
"""The ``int8`` rows of ``StepState.bytes``, in this order."""
COUNT_ROWS = ROWS[:6]
"""The 0/1 rows counted per block, in this order; ``step`` returns their block sums with the
``crossings`` sum turned into the minima (``crossings − maxima``), then ``weight_diff_sq``,
``grad_sq`` (the order of ``gradient_stats.RAW``)."""
MAX_BLOCK = 1024
"""Largest block: a byte lane of a word sum must stay below 256 (``block / 8``)."""
ABSENT = 3
"""Sign code of a sample slot with no component behind it."""
PACKED_ABSENT = 7
"""A sample packed as ``sign + 4·far`` is in −1 … 5; this value marks a slot without a component
(the sentinel) or a history row never written."""


def choose_block(sizes: list[int]) -> int:
    """The largest power-of-two block (8 … 1024) whose padding adds at most 1/8 to the total."""
    total = sum(sizes)
    block = MAX_BLOCK
    while block > 8 and sum(-(-s // block) * block for s in sizes) > total + total // 8:
        block //= 2
    return block


_DECODE = np.array([-2, 0, 2, ABSENT, -1, ABSENT, 1, ABSENT, ABSENT], dtype=np.int8)
"""Sign code of each packed value −1 … 7 (index = packed + 1); 2, 4, 6 never occur."""


def decode_codes(packed: np.ndarray) -> np.ndarray:
    """Samples packed as ``sign + 4·far`` → sign codes ``sign·(2 − far)``: +2/−2 near zero,
    +1/−1 not near zero, 0 exactly zero, ``ABSENT`` (3) for ``PACKED_ABSENT``."""
    return _DECODE[np.asarray(packed, dtype=np.int16) + 1]


def sample_index(
    bounds: list[tuple[int, int]], k: int, *, rows: tuple[int, int], stride: int, sentinel: int
) -> torch.Tensor:
    """``(len(bounds), 2, k)`` indices into a flat ``(rows, stride)`` byte buffer: the far and
    sign rows (``rows``) at ``k`` evenly spaced components of each ``[start, stop)``; slots past
    a parameter's size point at column ``sentinel`` of those rows.

    >>> sample_index([(0, 2), (8, 11)], 3, rows=(0, 1), stride=20, sentinel=16).tolist()
    [[[0, 1, 16], [20, 21, 36]], [[8, 9, 10], [28, 29, 30]]]
    """
    offsets = torch.tensor(rows) * stride
    index = torch.full((len(bounds), 2, k), sentinel, dtype=torch.long) + offsets[:, None]
    for i, (start, stop) in enumerate(bounds):
        m = min(stop - start, k)
        pos = torch.linspace(0, max(stop - start - 1, 0), m).round().long() + start
        index[i, :, :m] = pos + offsets[:, None]
    return index


class StepState:
    """Carried state (previous weights, signs and far flags) and scratch for ``n`` flat
    components (``n`` a multiple of ``block``). The caller writes ``grad`` and ``weights``
    (zeros in the padding), then calls ``step``."""

    def __init__(
        self, n: int, *, block: int, dtype: torch.dtype, device: torch.device, eps: float
    ) -> None:
        if block % 8 or not 8 <= block <= MAX_BLOCK or n % block:
            raise ValueError(f"need 8 ≤ block ≤ {MAX_BLOCK}, block % 8 == 0 and n % block == 0")
        self.n, self.block, self.blocks = n, block, n // block
        self.eps = torch.tensor(eps, dtype=dtype, device=device)
        self.gd = torch.zeros((2, n), dtype=dtype, device=device)  # weight step, gradient
        self.grad = self.gd[1]
        self.weights = torch.zeros(n, dtype=dtype, device=device)
        self.prev_weights = torch.zeros(n, dtype=dtype, device=device)
        # one spare word per row: a sentinel that sign samples of absent slots point at
        self._bytes = torch.zeros((len(ROWS), n + 8), dtype=torch.int8, device=device)
        self._bytes[ROWS.index("prev_far"), n] = 1  # packs with the sign's 3 as PACKED_ABSENT
        self._bytes[ROWS.index("prev_sign"), n] = 3
        self.bytes = self._bytes[:, :n]
        self.out = torch.empty(
            (len(COUNT_ROWS) + 2, self.blocks), dtype=torch.float64, device=device
        )
        self._views(dtype, device)

    def _views(self, dtype: torch.dtype, device: torch.device) -> None:
        """Every view the step uses, made once (a view costs about an op's dispatch)."""
        rows, blocks = len(COUNT_ROWS), self.blocks
        self._d, self._g = self.gd
        self._gd_blocks = self.gd.view(2, blocks, self.block)
        self._norms = torch.empty((2, blocks), dtype=torch.float64, device=device)
        self._far_bytes, self._sign_bytes = self.bytes[1], self.bytes[6:8]  # ← t, sign(Δw, g)
        w = self.bytes.view(torch.int64)  # 8 components per word
        self._words = tuple(w)
        self._xor_with, self._xor_out = w[6:9:2], w[3:6:2]  # (step_sign, prev_sign) → (max, flips)
        self._far_flips = w[1:6:4]  # (far, flips)
        self._and_with, self._and_out = w[2:7:4], w[0:5:4]  # (prev_far, step_sign) → (kept, cross)
        self._count_words = w[:rows].view(rows, blocks, self.block // 8)
        self._lanes = torch.empty((rows, blocks), dtype=torch.int64, device=device)
        self._lane_bytes = self._lanes.view(torch.uint8).view(rows, blocks, 8)
        self._out_counts, self._out_norms = self.out[:rows], self.out[rows:]
        self._out_maxima, self._out_minima = self.out[3], self.out[4]
        self._carry_to, self._carry_from = self.bytes[2:9:6], self.bytes[1:8:6]  # ← (far, sign)

    def row(self, name: str) -> torch.Tensor:
        """One ``int8`` row (``ROWS``) of length ``n``: a view, writable."""
        return self.bytes[ROWS.index(name)]

    def flat(self) -> torch.Tensor:
        """The byte rows as one flat vector (with the sentinels), for ``take``."""
        return self._bytes.view(-1)

    def sample_index(self, bounds: list[tuple[int, int]], k: int) -> torch.Tensor:
        """``(parameters, 2, k)`` indices into ``flat()`` of ``(far, sign)`` of the last step
        (carried in ``prev_far``, ``prev_sign``) at ``k`` evenly spaced components of each
        ``[start, stop)``; slots past a parameter's size point at the sentinels (decoded as
        ``ABSENT``)."""
        rows = (ROWS.index("prev_far"), ROWS.index("prev_sign"))
        index = sample_index(bounds, k, rows=rows, stride=self.n + 8, sentinel=self.n)
        return index.to(self.eps.device)

    def step(self) -> torch.Tensor:
        """Count this step against the carried one, then carry this one. Returns
        ``(len(COUNT_ROWS) + 2, blocks)`` float64 block sums (counts, Σ Δw², Σ g²)."""
        torch.sub(self.weights, self.prev_weights, out=self._d)
        # in float64: squares of float32 values are exact there (tiny gradients do not underflow)
        torch.linalg.vector_norm(self._gd_blocks, dim=-1, dtype=torch.float64, out=self._norms)
        # a NaN counts as 0 (near zero, no sign), as in the fused kernel; its norm stays NaN
        self.gd.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
        t = self.prev_weights  # free until the swap below
        torch.div(self._g, self.eps, out=t).clamp_(-1.0, 1.0)
        self._far_bytes.copy_(t)  # signed for now
        self._sign_bytes.copy_(self.gd.sign_())  # step_sign, sign

        _, _, _, maxima, crossings, flips, _, sign, prev_sign = self._words
        pairs = self._xor_out  # (maxima, flips) rows as scratch: sign ^ (step_sign, prev_sign)
        torch.bitwise_xor(sign, self._xor_with, out=pairs).bitwise_right_shift_(1)
        pairs.bitwise_and_(sign)
        flips.bitwise_and_(prev_sign)  # bit 0: a flip
        self._far_flips.bitwise_and_(ONES)  # far (was signed), flips: clean 0/1
        torch.bitwise_and(self._far_flips, self._and_with, out=self._and_out)  # kept, crossing
        maxima.bitwise_and_(crossings)

        torch.sum(self._count_words, -1, out=self._lanes)
        torch.sum(self._lane_bytes, -1, dtype=torch.float64, out=self._out_counts)
        self._out_minima.sub_(self._out_maxima)  # crossings − maxima
        torch.mul(self._norms, self._norms, out=self._out_norms)
        self._carry_to.copy_(self._carry_from)  # (far, sign) become (prev_far, prev_sign)
        self.weights, self.prev_weights = self.prev_weights, self.weights
        return self.out
