"""Float64 two-pass reference statistics on the concatenated data (the test oracle)."""

from __future__ import annotations

import numpy as np


def two_pass(x: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Reference statistics of a ``(samples, units)`` array, computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.sum(0) / x.shape[0]
    d = x - mean
    return {
        "n": x.shape[0],
        "mean": mean,
        "variance": (d * d).sum(0) / x.shape[0],
        "min": x.min(0),
        "max": x.max(0),
        "abs_sum": np.abs(x).sum(0),
        "fire": (x > threshold).sum(0).astype(np.float64),
        "comoment": d.T @ d,
    }
