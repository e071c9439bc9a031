"""Per-step gradient statistics of many parameters at once, on their device, without host sync.

The previous step of every component is kept as one ``int8`` code packing the sign of the
gradient and whether it was near zero (``|g| < eps``):

=====  ====================================
code   meaning
=====  ====================================
 +2    near zero, positive
 +1    not near zero, positive
  0    exactly zero (near zero, no sign)
 -1    not near zero, negative
 -2    near zero, negative
=====  ====================================

plus a float copy of the previous weights. ``step_sums`` turns one step into ``RAW`` sums (0/±1
float arithmetic: CPU comparisons to bool are several times slower), writing only into given
buffers; ``derive_columns`` turns recorded sums into the user-facing ``COLUMNS`` on the host.

**Local minimum / maximum heuristic.** Along one coordinate, a gradient that changes sign between
two recorded steps means the weight crossed a stationary point of the loss along that
coordinate. The secant curvature ``Δg / Δw`` tells which kind: positive (``Δg·Δw > 0``: the
gradient grows with the weight) is a minimum, negative a maximum. On a sign flip
``sign(Δg) = sign(g_now)``, so the class is ``sign(g_now · Δw)``; ``Δw = 0`` counts as neither.

>>> import torch
>>> g0, w0 = torch.tensor([1e-9, 0.5, -0.5, 0.0]), torch.zeros(4)
>>> code = torch.empty(4, dtype=torch.int8)
>>> _ = step_sums(g0, w0, code, w0.clone(), 1e-6, torch.empty(8, 4), torch.empty(3, 4))
>>> code.tolist()
[2, 1, -1, 0]
>>> g1, w1 = torch.tensor([0.3, -0.2, -1e-8, 0.0]), torch.tensor([0.1, -0.1, 0.2, 0.0])
>>> raw = step_sums(g1, w1, code, w0, 1e-6, torch.empty(8, 4), torch.empty(3, 4))
>>> cols = derive_columns(np.array([[4, 0, *raw.tolist()]]))
>>> {c: float(cols[0, COLUMN[c]]) for c in COLUMNS[1:8]}  # doctest: +NORMALIZE_WHITESPACE
{'near_zero': 2.0, 'prev_near_zero': 2.0, 'retained': 1.0, 'released': 1.0,
 'sign_flips': 1.0, 'minimum_crossings': 1.0, 'maximum_crossings': 0.0}
"""

from __future__ import annotations

import numpy as np
import torch

COLUMNS: tuple[str, ...] = (
    "numel",
    "near_zero",
    "prev_near_zero",
    "retained",
    "released",
    "sign_flips",
    "minimum_crossings",
    "maximum_crossings",
    "weight_diff_norm",
    "grad_norm",
)
"""The per-step record of one parameter, in this order (counts are exact integers)."""
COLUMN = {name: i for i, name in enumerate(COLUMNS)}

RAW: tuple[str, ...] = (
    "far",  # Σ [|g| ≥ eps]
    "prev_near",  # Σ [previous |g| < eps]
    "released",  # Σ prev_near · far
    "minus_flips",  # Σ −[sign flip]
    "minus_curvature_balance",  # Σ −[flip]·sign(g·Δw)  = −(minima − maxima)
    "minus_curvature_total",  # Σ −[flip]·|sign(g·Δw)| = −(minima + maxima)
    "weight_diff_sq",  # Σ Δw²
    "grad_sq",  # Σ g²
)
"""The per-step sums a device computes; a stored record is ``(numel, fresh, *RAW)``."""
RECORD_WIDTH = 2 + len(RAW)


def step_sums(
    grad: torch.Tensor,
    weight: torch.Tensor,
    code: torch.Tensor,
    prev_weight: torch.Tensor,
    eps: float,
    rows: torch.Tensor,
    scratch: torch.Tensor,
    segments: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Fill ``rows`` (``len(RAW)`` × n) with one step's per-component terms and return their
    sums (``(len(RAW),)``, or ``(len(segments), len(RAW))`` summed over each ``[a, b)``);
    update ``code`` and ``prev_weight`` (flat, n) in place.

    ``grad``/``weight`` are flat float vectors; ``scratch`` is 3 × n. Tensor ops only.
    """
    far, prev_near, released, flip, balance, total, wdiff_sq, grad_sq = rows
    prev, sign, diff = scratch
    torch.abs(grad, out=far).clamp_(max=eps).div_(eps).floor_()  # 1.0 where |g| ≥ eps
    prev.copy_(code)
    torch.abs(prev, out=prev_near).sub_(1.0).square_()  # |code| ∈ {0, 1, 2} → 1, 0, 1
    torch.mul(prev_near, far, out=released)
    torch.sign(grad, out=sign)
    torch.sign(prev, out=flip).mul_(sign).clamp_(max=0.0)  # −1 on a sign flip, else 0
    torch.sub(weight, prev_weight, out=diff)
    torch.mul(diff, diff, out=wdiff_sq)
    prev_weight.copy_(weight)
    torch.sign(diff, out=diff).mul_(sign)  # sign(g·Δw)
    torch.mul(flip, diff, out=balance)
    torch.mul(flip, diff.abs_(), out=total)
    torch.mul(grad, grad, out=grad_sq)
    code.copy_(torch.mul(far, -1.0, out=prev).add_(2.0).mul_(sign))  # sign·(2 − far)
    if segments is None:
        return rows.sum(dim=1)
    return torch.stack([rows[:, a:b].sum(dim=1) for a, b in segments])


def derive_columns(records: np.ndarray) -> np.ndarray:
    """``(steps, RECORD_WIDTH)`` stored records → ``(steps, len(COLUMNS))`` (host arithmetic).

    A record marked fresh (the first after the parameter appeared or changed) has no previous
    step: its previous-step columns are NaN.
    """
    numel, fresh = records[:, 0], records[:, 1]
    raw = {name: records[:, 2 + i] for i, name in enumerate(RAW)}
    out = np.empty((records.shape[0], len(COLUMNS)))
    out[:, COLUMN["numel"]] = numel
    out[:, COLUMN["near_zero"]] = numel - raw["far"]
    out[:, COLUMN["prev_near_zero"]] = raw["prev_near"]
    out[:, COLUMN["retained"]] = raw["prev_near"] - raw["released"]
    out[:, COLUMN["released"]] = raw["released"]
    out[:, COLUMN["sign_flips"]] = -raw["minus_flips"]
    bal, tot = -raw["minus_curvature_balance"], -raw["minus_curvature_total"]
    out[:, COLUMN["minimum_crossings"]] = (tot + bal) / 2
    out[:, COLUMN["maximum_crossings"]] = (tot - bal) / 2
    out[:, COLUMN["weight_diff_norm"]] = np.sqrt(raw["weight_diff_sq"])
    out[:, COLUMN["grad_norm"]] = np.sqrt(raw["grad_sq"])
    previous = [COLUMN[c] for c in COLUMNS[2:9]]
    out[np.ix_(fresh > 0, previous)] = np.nan
    return out
