"""Non-finite samples are left out of the statistics by batch, and counted per unit.

Property: batches with NaN/±inf values injected give the same statistics (moments, extremes,
counters, co-moments) as the float64 two-pass reference on the batches without any, for any
batch split and flush cadence, and the exact number of non-finite values per unit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_accumulator_property import _assert_matches, data_and_splits

from engine.stats import CoMoments, Moments, NeuronAccumulator, merge_moments
from engine.stats.accumulator import NonFiniteStatisticsWarning
from engine.stats.growth import GradientCrossAccumulator
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot

BAD = (np.nan, np.inf, -np.inf)


@st.composite
def poisoned(draw, **kw):
    """Finite data (``data_and_splits``), then some rows get NaN/±inf in some of their units."""
    x, cuts = draw(data_and_splits(**kw))
    x = x.copy()
    rows = draw(st.sets(st.integers(0, x.shape[0] - 1), max_size=max(0, x.shape[0] - 1)))
    for r in rows:
        units = draw(st.sets(st.integers(0, x.shape[1] - 1), min_size=1))
        for u in units:
            x[r, u] = draw(st.sampled_from(BAD))
    return x, cuts


def _finite_batches(chunks: list[np.ndarray]) -> np.ndarray:
    """The samples of the batches that hold no NaN/±inf: the reference's data."""
    kept = [c for c in chunks if np.isfinite(c).all()]
    return np.concatenate(kept) if kept else chunks[0][:0]


def _assert_reference(total: Moments, cm: CoMoments, chunks, flat=None, **kw) -> None:
    ref = _finite_batches(chunks)
    ref = ref if flat is None else flat(ref)
    if ref.shape[0] == 0:  # every batch held a non-finite value: nothing counts
        assert total.n == cm.n == 0 and np.isinf(total.minimum.numpy()).all()
        assert (total.fire == 0).all() and (cm.c == 0).all()
    else:
        _assert_matches(total, cm, ref, **kw)


def _feed(chunks, units: int, flush_every: int, **kw) -> NeuronAccumulator:
    acc = NeuronAccumulator(units, correlation=True, flush_every=flush_every, **kw)
    for chunk in chunks:
        acc.update(torch.from_numpy(np.ascontiguousarray(chunk)))
    return acc


@given(poisoned(), st.integers(1, 4))
def test_poisoned_batches_match_the_reference_on_the_finite_batches(case, flush_every):
    x, cuts = case
    chunks = np.split(x, cuts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        acc = _feed(chunks, x.shape[1], flush_every)
        total, cm = acc.total(), acc.comoments()
    _assert_reference(total, cm, chunks)
    np.testing.assert_array_equal(total.nonfinite.numpy(), (~np.isfinite(x)).sum(0))
    assert torch.isfinite(total.mean).all() and torch.isfinite(cm.c).all()


@given(poisoned(offset=3000.0), st.integers(1, 3))
def test_poisoned_batches_keep_the_variance_under_a_large_offset(case, flush_every):
    x, cuts = case
    chunks = np.split(x, cuts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        acc = _feed(chunks, x.shape[1], flush_every)
        _assert_reference(acc.total(), acc.comoments(), chunks)


@given(poisoned(), st.integers(1, 3))
def test_nonnegative_fast_path_leaves_out_the_same_batches(case, flush_every):
    x, cuts = case
    x = np.where(np.isnan(x), x, np.maximum(x, np.float32(0)))  # keep NaN, clip the rest
    chunks = np.split(x, cuts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        acc = _feed(chunks, x.shape[1], flush_every, nonnegative=True)
        total = acc.total()
    _assert_reference(total, acc.comoments(), chunks, abs_like_mean=True)
    np.testing.assert_array_equal(total.nonfinite.numpy(), (~np.isfinite(x)).sum(0))


@given(poisoned(max_rows=16, max_units=4), st.integers(1, 4), st.integers(1, 3))
def test_units_in_the_middle_view_leaves_out_the_same_batches(case, positions, flush_every):
    """(B, C, L) conv views: a batch of maps with one non-finite value anywhere is left out."""
    x, cuts = case
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((x.shape[0], x.shape[1], positions)).astype(np.float32)
    maps = (x[:, :, None] + noise * np.float32(0.1)).astype(np.float32)  # NaN/inf stay
    chunks = np.split(maps, cuts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        acc = _feed(chunks, x.shape[1], flush_every)
        total = acc.total()
    flat = lambda m: m.transpose(0, 2, 1).reshape(-1, x.shape[1])  # noqa: E731
    _assert_reference(total, acc.comoments(), chunks, flat)
    np.testing.assert_array_equal(total.nonfinite.numpy(), (~np.isfinite(flat(maps))).sum(0))


def test_bounded_activation_counts_saturation_on_finite_batches_only():
    acc = NeuronAccumulator(2, bounds=(0.0, 1.0), saturation_tolerance=0.02)
    acc.update(torch.tensor([[0.001, 0.5], [0.5, 0.0]]))
    acc.update(torch.tensor([[float("inf"), 0.999], [0.0, 1.0]]))  # left out whole
    with pytest.warns(NonFiniteStatisticsWarning):
        total = acc.total()
    assert total.saturated.tolist() == [1.0, 1.0] and total.n == 2
    assert total.nonfinite.tolist() == [1.0, 0.0]


def test_a_layer_with_only_nonfinite_rows_has_no_samples_and_counts_them():
    acc = NeuronAccumulator(3, correlation=True, flush_every=2)
    bad = torch.full((4, 3), float("nan"))
    bad[1, 2] = 1.0  # finite values in a poisoned row do not count either
    for _ in range(3):
        acc.update(bad)
    with pytest.warns(NonFiniteStatisticsWarning, match=r"layer 'layer'.*33 value\(s\) in 3"):
        total = acc.total()
    assert total.n == 0 and acc.comoments().n == 0
    assert total.nonfinite.tolist() == [12.0, 12.0, 9.0]
    assert torch.isinf(total.minimum).all() and (total.fire == 0).all()
    acc.update(torch.ones(2, 3))  # finite batches after them are exact
    assert acc.total().n == 2 and acc.total().mean.tolist() == [1.0, 1.0, 1.0]
    assert acc.total().nonfinite.tolist() == [12.0, 12.0, 9.0]


def test_the_warning_is_given_once_per_layer_until_reset():
    acc = NeuronAccumulator(2, name="fc1")
    poisoned_batch = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            acc.update(poisoned_batch)
            acc.total()
        acc.reset()
        acc.update(poisoned_batch)
        acc.total()
    messages = [str(w.message) for w in seen if w.category is NonFiniteStatisticsWarning]
    assert len(messages) == 2 and "'fc1'" in messages[0] and "engine.reset()" in messages[0]


def test_checkpoint_restores_the_device_block_bitwise():
    acc = NeuronAccumulator(2, correlation=True, flush_every=2)
    acc.update(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    acc.update(torch.tensor([[4.0, 1.0]]))  # folded into the device block (flush_every=2)
    token = acc.checkpoint()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        acc.update(torch.tensor([[float("nan"), 1.0], [7.0, 7.0]]))
        acc.update(torch.tensor([[9.0, 9.0]]))
    acc.restore(token)
    same = NeuronAccumulator(2, correlation=True, flush_every=2)  # never saw the later batches
    same.update(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    same.update(torch.tensor([[4.0, 1.0]]))
    total, ref = acc.total(), same.total()
    assert total.n == ref.n == 3 and total.nonfinite.tolist() == [0.0, 0.0]
    for key, value in ref.tensors().items():
        assert torch.equal(total.tensors()[key], value), key
    assert torch.equal(acc.comoments().c, same.comoments().c)


def test_merge_with_an_empty_side_keeps_its_nonfinite_counts():
    only_bad = Moments.from_samples(torch.tensor([[float("nan"), 1.0]]))
    good = Moments.from_samples(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert only_bad.n == 0
    for merged in (merge_moments(only_bad, good), merge_moments(good, only_bad)):
        assert merged.n == 2 and merged.nonfinite.tolist() == [1.0, 0.0]
        assert merged.mean.tolist() == [2.0, 3.0]


def test_reference_constructors_treat_their_samples_as_one_batch():
    x = torch.tensor([[1.0, 2.0], [float("-inf"), 0.0], [3.0, 6.0]], dtype=torch.float64)
    assert CoMoments.from_samples(x).n == 0 and (CoMoments.from_samples(x).c == 0).all()
    m = Moments.from_samples(x)
    assert m.n == 0 and m.nonfinite.tolist() == [1.0, 0.0]


def test_snapshot_carries_nonfinite_counts_and_old_files_load_with_zeros(tmp_path):
    from safetensors.torch import load_file, save_file

    good = Moments.from_samples(torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    bad = Moments.from_samples(torch.tensor([[1.0, float("nan")]]))
    layer = LayerSnapshot("fc", "Linear", [0, 1], merge_moments(good, bad))
    StatsSnapshot({"fc": layer}).save(tmp_path / "new")
    back = StatsSnapshot.load(tmp_path / "new").layers["fc"]
    assert back.nonfinite.tolist() == [0.0, 1.0] and back.count == 2
    assert back.summary()["nonfinite_units"] == 1 and back.neuron(1)["nonfinite"] == 1.0
    # an older file: no "fc/nonfinite" array (its metadata digest kept as it was)
    arrays = tmp_path / "new" / "stats.safetensors"
    from safetensors import safe_open

    with safe_open(str(arrays), framework="pt") as fh:
        meta = fh.metadata()
    tensors = {k: v for k, v in load_file(arrays).items() if not k.endswith("/nonfinite")}
    save_file(tensors, arrays, metadata=meta)
    old = StatsSnapshot.load(tmp_path / "new").layers["fc"]
    assert old.nonfinite.tolist() == [0.0, 0.0]
    assert torch.equal(old.mean, back.mean)


def test_growth_signal_leaves_out_nonfinite_rows_and_counts_them():
    torch.manual_seed(0)
    d, x = torch.randn(6, 3), torch.randn(6, 4)
    d_bad, x_bad = d.clone(), x.clone()
    d_bad[1, 0], x_bad[4, 2] = float("nan"), float("inf")
    acc, ref = GradientCrossAccumulator("fc2"), GradientCrossAccumulator("fc2")
    acc.update(d_bad, x_bad)
    keep = [0, 2, 3, 5]
    ref.update(d[keep], x[keep])
    got, want = acc.state(), ref.state()
    assert (got.rows, got.nonfinite_rows, got.batches) == (4, 2, 1)
    torch.testing.assert_close(got.total, want.total, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.input_total, want.input_total, rtol=1e-6, atol=1e-6)
    assert got.merge(got).nonfinite_rows == 4
