"""The recorded gradient columns: what each counter means, and how device sums become them.

For each parameter and recorded step, with ``g`` the gradient, ``Δw`` the weight change since
the previous record and "near zero" meaning ``|g| < eps``:

====================  ==========================================================================
column                meaning
====================  ==========================================================================
numel                 components
near_zero             components near zero now
prev_near_zero        components near zero at the previous record
retained              near zero before and now
released              near zero before, not now
sign_flips            sign(g)·sign(g_prev) < 0 (an exact zero has no sign and never flips)
minimum_crossings     sign flips with g·Δw > 0
maximum_crossings     sign flips with g·Δw < 0 (a flip with Δw = 0 is neither)
weight_diff_norm      ‖Δw‖
grad_norm             ‖g‖
====================  ==========================================================================

A NaN gradient (or weight change) component counts as 0: near zero and without a sign, so it
never flips or crosses; the norms of a parameter with a NaN are NaN, which shows it.

**Local minimum / maximum heuristic.** Along one coordinate, a gradient that changes sign between
two recorded steps means the weight crossed a stationary point of the loss along that
coordinate. The secant curvature ``Δg / Δw`` tells which kind: positive (``Δg·Δw > 0``: the
gradient grows with the weight) is a minimum, negative a maximum. On a sign flip
``sign(Δg) = sign(g_now)``, so the class is ``sign(g_now · Δw)``; ``Δw = 0`` counts as neither.

The device computes ``RAW`` sums (``gradient_kernel``); a stored record is ``(numel, fresh,
*RAW)``, and ``derive_columns`` turns records into ``COLUMNS`` on the host.

>>> rec = np.array([[10, 0, 5, 7, 6, 1, 1, 2, 0.25, 4.0]])  # numel, fresh, RAW
>>> cols = derive_columns(rec)
>>> {c: float(cols[0, COLUMN[c]]) for c in COLUMNS[1:8]}  # doctest: +NORMALIZE_WHITESPACE
{'near_zero': 3.0, 'prev_near_zero': 4.0, 'retained': 2.0, 'released': 2.0,
 'sign_flips': 2.0, 'minimum_crossings': 1.0, 'maximum_crossings': 1.0}
>>> float(cols[0, COLUMN["grad_norm"]]), float(cols[0, COLUMN["weight_diff_norm"]])
(2.0, 0.5)
"""

from __future__ import annotations

import numpy as np

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
    "far_kept",  # Σ [|g| ≥ eps and |g_prev| ≥ eps]
    "far",  # Σ [|g| ≥ eps]
    "prev_far",  # Σ [|g_prev| ≥ eps]
    "maxima",  # Σ [flip and g·Δw < 0]
    "minima",  # Σ [flip and g·Δw > 0]
    "flips",  # Σ [sign(g)·sign(g_prev) < 0]
    "weight_diff_sq",  # Σ Δw²
    "grad_sq",  # Σ g²
)
"""The per-step sums a device computes; a stored record is ``(numel, fresh, *RAW)``."""
RECORD_WIDTH = 2 + len(RAW)


def derive_columns(records: np.ndarray) -> np.ndarray:
    """``(steps, RECORD_WIDTH)`` stored records → ``(steps, len(COLUMNS))`` (host arithmetic).

    A record marked fresh (the first after the parameter appeared or changed) has no previous
    step: its previous-step columns are NaN.
    """
    numel, fresh = records[:, 0], records[:, 1]
    raw = {name: records[:, 2 + i] for i, name in enumerate(RAW)}
    out = np.empty((records.shape[0], len(COLUMNS)))
    released = raw["far"] - raw["far_kept"]  # near before (not far), far now
    out[:, COLUMN["numel"]] = numel
    out[:, COLUMN["near_zero"]] = numel - raw["far"]
    out[:, COLUMN["prev_near_zero"]] = numel - raw["prev_far"]
    out[:, COLUMN["retained"]] = numel - raw["prev_far"] - released
    out[:, COLUMN["released"]] = released
    out[:, COLUMN["sign_flips"]] = raw["flips"]
    out[:, COLUMN["minimum_crossings"]] = raw["minima"]
    out[:, COLUMN["maximum_crossings"]] = raw["maxima"]
    out[:, COLUMN["weight_diff_norm"]] = np.sqrt(raw["weight_diff_sq"])
    out[:, COLUMN["grad_norm"]] = np.sqrt(raw["grad_sq"])
    previous = [COLUMN[c] for c in COLUMNS[2:9]]
    out[np.ix_(fresh > 0, previous)] = np.nan
    return out
