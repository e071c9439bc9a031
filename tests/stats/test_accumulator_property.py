"""The hot-path accumulator equals a float64 two-pass reference for any batch split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference import two_pass

from engine.stats import CoMoments, Moments, NeuronAccumulator, merge_comoments, merge_moments


@st.composite
def data_and_splits(draw, max_rows=48, max_units=5, offset=None):
    n_rows = draw(st.integers(1, max_rows))
    n_units = draw(st.integers(1, max_units))
    scale = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    base = draw(
        arrays(
            np.float32,
            (n_rows, n_units),
            elements=st.floats(-1, 1, width=32, allow_subnormal=False),
        )
    )
    shift = draw(st.sampled_from([0.0, -7.5, 3000.0])) if offset is None else offset
    x = (base.astype(np.float64) * scale + shift).astype(np.float32)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n_rows - 1)), max_size=6))))
    cuts = [c for c in cuts if 0 < c < n_rows]
    return x, cuts


def _feed(x: np.ndarray, cuts: list[int], flush_every: int, **kw) -> NeuronAccumulator:
    acc = NeuronAccumulator(x.shape[1], correlation=True, flush_every=flush_every, **kw)
    for chunk in np.split(x, cuts):
        acc.update(torch.from_numpy(chunk))
    return acc


def _close(actual, expected, rtol, atol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    assert np.all(err <= bound), f"{what}: max excess {np.max(err - bound)}\n{actual}\n{expected}"


def _assert_matches(
    total: Moments, cm: CoMoments, x: np.ndarray, threshold: float = 0.0, abs_like_mean=False
):
    ref = two_pass(x, threshold)
    spread = np.abs(x - ref["mean"]).max(0) + 1e-30
    magnitude = np.abs(x).max(0)
    assert total.n == ref["n"] == cm.n
    _close(total.mean, ref["mean"], 0, 1e-6 * magnitude + 1e-30, "mean")
    # Variance: relative to the reference, with a floor set by the data's own spread and by
    # float32's normal range (batch reductions run in float32; 1e-57 is not representable).
    floor = 1e-9 * spread**2 + 10 * np.finfo(np.float32).tiny
    _close(total.variance, ref["variance"], 2e-5, floor, "variance")
    np.testing.assert_array_equal(total.minimum.numpy(), ref["min"])
    np.testing.assert_array_equal(total.maximum.numpy(), ref["max"])
    np.testing.assert_array_equal(total.fire.numpy(), ref["fire"])
    if abs_like_mean:  # derived from the sum: the mean's absolute resolution, times n
        _close(total.abs_sum, ref["abs_sum"], 0, ref["n"] * (1e-6 * magnitude + 1e-30), "abs_sum")
    else:
        _close(total.abs_sum, ref["abs_sum"], 2e-6, 1e-30, "abs_sum")
    scale = np.sqrt(np.outer(ref["variance"], ref["variance"])) * ref["n"]
    c_floor = 1e-9 * np.outer(spread, spread) + 10 * np.finfo(np.float32).tiny * ref["n"]
    _close(cm.c, ref["comoment"], 0, 3e-5 * scale + c_floor, "C")


@given(data_and_splits(), st.integers(1, 4))
def test_any_batch_split_matches_two_pass_reference(case, flush_every):
    x, cuts = case
    acc = _feed(x, cuts, flush_every)
    _assert_matches(acc.total(), acc.comoments(), x)


@given(data_and_splits(offset=3000.0), st.integers(1, 4))
def test_large_constant_offset_keeps_the_variance(case, flush_every):
    x, cuts = case
    acc = _feed(x, cuts, flush_every)
    _assert_matches(acc.total(), acc.comoments(), x)


def test_offset_3000_plus_small_noise_std_is_right_not_zero():
    gen = torch.Generator().manual_seed(0)
    x = (3000 + 0.01 * torch.randn(4096, 3, generator=gen)).float()
    acc = NeuronAccumulator(3)
    for chunk in x.split(100):
        acc.update(chunk)
    ref = x.double().std(0, correction=0)
    assert torch.all(acc.total().std > 0.005)
    torch.testing.assert_close(acc.total().std, ref, rtol=1e-5, atol=0)


@given(data_and_splits(max_rows=12))
def test_batch_size_one(case):
    x, _ = case
    acc = _feed(x, list(range(1, x.shape[0])), flush_every=3)
    _assert_matches(acc.total(), acc.comoments(), x)


@given(data_and_splits(), st.floats(-0.5, 0.5, width=32))
def test_firing_threshold(case, threshold):
    x, cuts = case
    acc = _feed(x, cuts, 2, firing_threshold=threshold)
    ref = two_pass(x, threshold)
    np.testing.assert_array_equal(acc.total().fire.numpy(), ref["fire"])


@given(data_and_splits(), st.data())
def test_merging_two_states_equals_tracking_the_union(case, data):
    x, cuts = case
    split = data.draw(st.integers(0, x.shape[0]))
    a = _feed(x[:split], [c for c in cuts if c < split], 2)
    b = _feed(x[split:], [c - split for c in cuts if c > split], 3)
    merged = merge_moments(a.total(), b.total())
    merged_cm = merge_comoments(a.comoments(), b.comoments())
    _assert_matches(merged, merged_cm, x)


def test_window_is_per_epoch_and_total_is_cumulative():
    x = torch.randn(300, 4)
    acc = NeuronAccumulator(4, flush_every=5)
    for chunk in x[:100].split(7):
        acc.update(chunk)
    first = acc.take_window()
    for chunk in x[100:].split(9):
        acc.update(chunk)
    second = acc.take_window()
    assert (first.n, second.n, acc.total().n) == (100, 200, 300)
    torch.testing.assert_close(second.mean, x[100:].double().mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acc.total().mean, x.double().mean(0), rtol=1e-6, atol=1e-6)
    assert acc.take_window().n == 0


def test_empty_and_reset():
    acc = NeuronAccumulator(2, correlation=True)
    acc.update(torch.empty(0, 2))
    assert acc.total().n == 0
    assert torch.isnan(acc.total().variance).all()
    acc.update(torch.ones(3, 2))
    acc.reset()
    assert acc.total().n == 0 and acc.comoments().n == 0


def test_saturation_counts_bounded_activation():
    x = torch.tensor([[0.001, 0.5], [0.999, 0.5], [0.5, 0.0]])
    acc = NeuronAccumulator(2, bounds=(0.0, 1.0), saturation_tolerance=0.02)
    acc.update(x)
    assert acc.total().saturated.tolist() == [2.0, 1.0]


def test_half_precision_input_is_accumulated_in_float32_or_better():
    x = torch.randn(64, 3).half()
    acc = NeuronAccumulator(3)
    acc.update(x)
    torch.testing.assert_close(acc.total().mean, x.double().mean(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad_units", [5000])
def test_correlation_bound_names_the_layer(bad_units):
    from engine.errors import CorrelationLimitError

    with pytest.raises(CorrelationLimitError, match=r"layer 'wide' has 5000 units.*4096"):
        NeuronAccumulator(bad_units, correlation=True, name="wide")


@given(data_and_splits(max_rows=24, max_units=4), st.integers(1, 5), st.integers(1, 3))
def test_units_in_the_middle_view_matches_the_flat_reference(case, positions, flush_every):
    """Conv maps are fed as (B, C, L) views; the statistics equal those of the (B·L, C) rows."""
    x, cuts = case
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((x.shape[0], x.shape[1], positions)).astype(np.float32)
    maps = (x[:, :, None] + noise * np.float32(0.1)).astype(np.float32)  # (B, C, L)
    acc = NeuronAccumulator(x.shape[1], correlation=True, flush_every=flush_every)
    for chunk in np.split(maps, cuts):
        acc.update(torch.from_numpy(np.ascontiguousarray(chunk)))
    flat = maps.transpose(0, 2, 1).reshape(-1, x.shape[1])
    _assert_matches(acc.total(), acc.comoments(), flat)


@given(data_and_splits(), st.integers(1, 4))
def test_nonnegative_fast_path_matches_the_reference(case, flush_every):
    """Behind a ReLU the engine derives Σ|x| from the sum and counts firing by sign."""
    x, cuts = case
    x = np.maximum(x, np.float32(0))
    acc = _feed(x, cuts, flush_every, nonnegative=True)
    assert acc.nonnegative
    _assert_matches(acc.total(), acc.comoments(), x, abs_like_mean=True)


def test_float64_input_keeps_its_variance_under_a_large_offset():
    """1e6 + 1e-3 noise has no float32 variance: float64 batches are reduced in float64."""
    torch.manual_seed(0)
    x = 1e6 + torch.randn(256, 3, dtype=torch.float64) * 1e-3
    for flush_every in (1, 3):
        acc = NeuronAccumulator(3, correlation=True, flush_every=flush_every)
        for chunk in x.split(50):
            acc.update(chunk)
        ref = Moments.from_samples(x)
        torch.testing.assert_close(acc.total().std, ref.std, rtol=1e-6, atol=0)
        torch.testing.assert_close(acc.total().mean, ref.mean, rtol=1e-12, atol=0)
        cref = CoMoments.from_samples(x)
        torch.testing.assert_close(acc.comoments().c, cref.c, rtol=1e-6, atol=1e-12)


def test_a_window_may_mix_float32_and_float64_batches():
    torch.manual_seed(0)
    a = torch.randn(20, 3, dtype=torch.float64) + 5
    b = torch.randn(30, 3) - 2
    for first, second in ((a, b), (b, a)):
        acc = NeuronAccumulator(3, correlation=True, flush_every=8)
        acc.update(first)
        acc.update(second)
        both = torch.cat([first.double(), second.double()])
        ref = Moments.from_samples(both)
        torch.testing.assert_close(acc.total().mean, ref.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(acc.total().variance, ref.variance, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            acc.comoments().c, CoMoments.from_samples(both).c, rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("flush_every", [1, 4])
def test_state_follows_the_batches_to_another_device(flush_every):
    """A model moved after tracking (or after load_snapshot): the running state follows the
    batches. The 'meta' device stands in for an accelerator."""
    acc = NeuronAccumulator(3, correlation=True, flush_every=flush_every)
    acc.update(torch.randn(4, 3))
    acc.flush()  # state on the CPU
    acc.update(torch.randn(4, 3))  # pending on the CPU too (when flush_every > 1)
    acc.update(torch.randn(4, 3, device="meta"))
    total = acc.total()
    assert total.n == 12
    assert total.mean.device.type == "meta"
    assert acc.comoments().c.device.type == "meta"


def test_loaded_cpu_state_follows_meta_batches():
    acc = NeuronAccumulator(2, correlation=True)
    x = torch.randn(10, 2, dtype=torch.float64)
    acc.load(Moments.from_samples(x), CoMoments.from_samples(x))
    acc.update(torch.randn(5, 2, device="meta"))
    assert acc.total().n == 15
    assert acc.total().mean.device.type == "meta"
