"""Through the real hook path: engine statistics equal the float64 two-pass reference."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from engine import NeuronEngine

# Batch reductions run in float32: nothing below its normal range is representable.
TINY = 10 * float(np.finfo(np.float32).tiny)


def _comoment_tolerance(c: np.ndarray, spread: float, n: int) -> np.ndarray:
    """Entry-wise bound: relative to sqrt(C_ii·C_jj), plus float32's resolution floor."""
    diag = np.sqrt(np.clip(np.diag(c), 0, None))
    return 3e-5 * np.outer(diag, diag) + (1e-9 * spread**2 + TINY) * n


def _identity_model(units: int) -> nn.Module:
    lin = nn.Linear(units, units)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(units))
        lin.bias.zero_()
    return nn.Sequential(lin)


@st.composite
def batches(draw):
    units = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 40))
    offset = draw(st.sampled_from([0.0, 3000.0]))
    x = draw(arrays(np.float32, (rows, units), elements=st.floats(-2, 2, width=32)))
    x = (x.astype(np.float64) * 0.01 + offset).astype(np.float32)
    cuts = sorted({c for c in draw(st.lists(st.integers(1, rows), max_size=5)) if c < rows})
    return x, cuts


def _track(x: np.ndarray, cuts: list[int]) -> NeuronEngine:
    model = _identity_model(x.shape[1])
    engine = NeuronEngine(model, correlation=True, flush_every=2)
    with engine.tracking(), torch.no_grad():
        for chunk in np.split(x, cuts):
            model(torch.from_numpy(chunk))
    return engine


@given(batches())
def test_engine_statistics_match_reference_for_any_split(case):
    x, cuts = case
    layer = _track(x, cuts).snapshot().layers["0"]
    ref = x.astype(np.float64)
    mean = ref.mean(0)
    # float32 batch reductions: the mean is exact to float32 resolution of the data's magnitude
    np.testing.assert_allclose(
        layer.mean.numpy(), mean, rtol=0, atol=1e-6 * np.abs(ref).max() + TINY
    )
    spread = np.abs(ref - mean).max() + 1e-12
    np.testing.assert_allclose(
        layer.variance.numpy(), ref.var(0), rtol=1e-5, atol=1e-9 * spread**2 + TINY
    )
    np.testing.assert_array_equal(layer.minimum.numpy(), ref.min(0))
    np.testing.assert_array_equal(layer.maximum.numpy(), ref.max(0))
    np.testing.assert_array_equal(layer.firing_rate.numpy(), (ref > 0).mean(0))
    d = ref - mean
    c_ref = d.T @ d
    err = np.abs(layer.comoments.c.numpy() - c_ref)
    assert np.all(err <= _comoment_tolerance(c_ref, spread, len(ref)))


@given(batches(), st.data())
def test_snapshot_merge_equals_tracking_the_union(case, data):
    x, cuts = case
    split = data.draw(st.integers(0, len(x)))
    whole = _track(x, cuts).snapshot()
    left = _track(x[:split], [c for c in cuts if c < split]).snapshot()
    right = _track(x[split:], [c - split for c in cuts if c > split]).snapshot()
    merged = left.merge(right).layers["0"]
    ref = whole.layers["0"]
    assert merged.count == ref.count == len(x)
    torch.testing.assert_close(
        merged.mean, ref.mean, rtol=0, atol=1e-6 * float(np.abs(x).max()) + TINY
    )
    spread = float(np.abs(x - x.mean(0)).max()) + 1e-12
    torch.testing.assert_close(
        merged.variance, ref.variance, rtol=1e-5, atol=1e-9 * spread**2 + TINY
    )
    torch.testing.assert_close(merged.minimum, ref.minimum, rtol=0, atol=0)
    torch.testing.assert_close(merged.maximum, ref.maximum, rtol=0, atol=0)
    torch.testing.assert_close(merged.moments.fire, ref.moments.fire, rtol=0, atol=0)
    c_ref = ref.comoments.c.numpy()
    err = np.abs(merged.comoments.c.numpy() - c_ref)
    assert np.all(err <= _comoment_tolerance(c_ref, spread, len(x)))
