"""Statistics follow a layer's units through surgery (engine/stats/remap.py).

Survivors keep their state bitwise and keep merging exactly (checked against a float64
two-pass reference on the pre-surgery rows of the kept columns followed by the post-surgery
rows); grown units read "unknown" (NaN) in every state holding pre-surgery observations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference import two_pass

from engine.errors import ConfigurationError, CorrelationLimitError, NeuronNotFoundError
from engine.neurons import NeuronRegistry
from engine.stats import CoMoments, Moments, NeuronAccumulator
from engine.stats.moments import TENSOR_FIELDS
from engine.stats.remap import keep_index, remap_accumulator, remap_comoments, remap_moments

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --- helpers ------------------------------------------------------------------------------
def _feed(acc: NeuronAccumulator, x: np.ndarray | torch.Tensor, cuts=()) -> None:
    x = torch.as_tensor(x)
    for chunk in torch.tensor_split(x, list(cuts)):
        acc.update(chunk)


def _close(actual, expected, atol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    excess = np.abs(actual - expected) - atol
    assert np.all(excess <= 0), f"{what}: max excess {excess.max()}\n{actual}\n{expected}"


def _assert_exact(m: Moments, x: np.ndarray, cm: CoMoments | None = None, nonneg=False) -> None:
    """``m`` (and ``cm``) equal the float64 two-pass statistics of the rows ``x``."""
    ref = two_pass(x)
    spread = np.abs(x - ref["mean"]).max(0) + 1e-30
    magnitude = np.abs(x).max(0)
    assert m.n == ref["n"]
    mean_tol = 1e-6 * magnitude + 1e-30
    _close(m.mean.cpu(), ref["mean"], mean_tol, "mean")
    floor = 1e-9 * spread**2 + 10 * np.finfo(np.float32).tiny
    _close(m.variance.cpu(), ref["variance"], 2e-5 * ref["variance"] + floor, "variance")
    np.testing.assert_array_equal(m.minimum.cpu().numpy(), ref["min"])
    np.testing.assert_array_equal(m.maximum.cpu().numpy(), ref["max"])
    np.testing.assert_array_equal(m.fire.cpu().numpy(), ref["fire"])
    abs_tol = ref["n"] * mean_tol if nonneg else 2e-6 * ref["abs_sum"] + 1e-30
    _close(m.abs_sum.cpu(), ref["abs_sum"], abs_tol, "abs_sum")
    if cm is not None:
        assert cm.n == ref["n"]
        scale = np.sqrt(np.outer(ref["variance"], ref["variance"])) * ref["n"]
        c_floor = 1e-9 * np.outer(spread, spread) + 10 * np.finfo(np.float32).tiny * ref["n"]
        _close(cm.c.cpu(), ref["comoment"], 3e-5 * scale + c_floor, "C")


def _assert_unknown(m: Moments, units: slice) -> None:
    for f in TENSOR_FIELDS:
        assert torch.isnan(getattr(m, f)[units]).all(), f
    assert not m.never_fired[units].any()
    assert torch.isnan(m.variance[units]).all() and torch.isnan(m.firing_rate[units]).all()


def _assert_same(a: Moments, b: Moments) -> None:
    assert a.n == b.n
    for f in TENSOR_FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def _filled(
    n_units=5, rows=40, seed=0, device="cpu", **kw
) -> tuple[NeuronAccumulator, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n_units, generator=gen) * 2 + 1
    acc = NeuronAccumulator(n_units, correlation=True, flush_every=3, name="fc1", **kw)
    _feed(acc, x.to(device), range(7, rows, 7))
    return acc, x


# --- pure functions -------------------------------------------------------------------------
def test_prune_and_reorder_keep_moments_and_comoments_bitwise():
    x = torch.randn(50, 6, dtype=torch.float64)
    m, cm = Moments.from_samples(x), CoMoments.from_samples(x)
    keep = [4, 0, 5, 2]
    r, rc = remap_moments(m, keep, 0), remap_comoments(cm, keep, 0)
    idx = torch.tensor(keep)
    for f in TENSOR_FIELDS:
        assert torch.equal(getattr(r, f), getattr(m, f)[idx])
    assert r.n == rc.n == 50
    assert torch.equal(rc.c, cm.c[idx][:, idx]) and torch.equal(rc.mean, cm.mean[idx])
    assert torch.equal(rc.pearson(), cm.pearson()[idx][:, idx])
    alpha, beta = rc.fit_matrix()
    ref_alpha, ref_beta = cm.fit_matrix()
    assert torch.equal(alpha, ref_alpha[idx][:, idx]) and torch.equal(beta, ref_beta[idx][:, idx])


def test_growth_gives_new_units_unknown_statistics():
    x = torch.randn(20, 3, dtype=torch.float64)
    m, cm = Moments.from_samples(x), CoMoments.from_samples(x)
    r, rc = remap_moments(m, [2, 0], added=2), remap_comoments(cm, [2, 0], added=2)
    assert (r.num_units, rc.num_units, r.n, rc.n) == (4, 4, 20, 20)
    _assert_same(Moments(r.n, *(t[:2] for t in r.tensors().values())), m.select([2, 0]))
    _assert_unknown(r, slice(2, None))
    assert torch.equal(rc.c[:2, :2], cm.c[[2, 0]][:, [2, 0]])
    assert torch.isnan(rc.c[2:]).all() and torch.isnan(rc.c[:, 2:]).all()
    assert torch.isnan(rc.mean[2:]).all()
    assert torch.isnan(rc.pearson()[:, 2:]).all() and torch.isnan(rc.fit_matrix()[0][2:]).all()
    assert torch.equal(rc.pearson()[:2, :2], cm.pearson()[[2, 0]][:, [2, 0]])


def test_growth_of_an_empty_state_is_empty_not_unknown():
    r = remap_moments(Moments.empty(3), [1], added=2)
    _assert_same(r, Moments.empty(3))
    rc = remap_comoments(CoMoments.empty(3), [0, 1], added=1)
    assert rc.n == 0 and torch.equal(rc.mean, torch.zeros(3))
    assert torch.equal(rc.c, torch.zeros(3, 3))


def test_keep_all_and_grow_nothing_is_the_identity():
    m = Moments.from_samples(torch.randn(9, 4))
    _assert_same(remap_moments(m, range(4), 0), m)
    _assert_same(remap_moments(m, torch.arange(4, dtype=torch.int32), 0), m)


def test_everything_can_be_replaced():
    m = Moments.from_samples(torch.randn(9, 4))
    r = remap_moments(m, [], added=3)
    assert r.num_units == 3 and r.n == 9
    _assert_unknown(r, slice(None))
    assert remap_moments(m, torch.empty(0, dtype=torch.long), 0).num_units == 0


# --- the accumulator ------------------------------------------------------------------------
@st.composite
def surgery_cases(draw):
    n_units = draw(st.integers(1, 5))
    scale = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    shift = draw(st.sampled_from([0.0, -7.5, 3000.0]))
    order = draw(st.permutations(range(n_units)))
    keep = order[: draw(st.integers(0, n_units))]
    added = draw(st.integers(0, 3))
    width = len(keep) + added
    if width == 0:
        added, width = 1, 1

    def block(units):
        rows = draw(st.integers(1, 24))
        el = st.floats(-1, 1, width=32, allow_subnormal=False)
        base = draw(arrays(np.float32, (rows, units), elements=el))
        x = (base.astype(np.float64) * scale + shift).astype(np.float32)
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, rows - 1)), max_size=4))))
        return x, [c for c in cuts if 0 < c < rows]

    return block(n_units), keep, added, block(width), draw(st.integers(1, 4))


@given(surgery_cases())
def test_survivors_continue_exactly_and_new_units_stay_unknown(case):
    (pre, pre_cuts), keep, added, (post, post_cuts), flush_every = case
    acc = NeuronAccumulator(pre.shape[1], correlation=True, flush_every=flush_every, name="h")
    _feed(acc, pre, pre_cuts)  # some batches may still be pending: remap flushes them
    remap_accumulator(acc, keep, added)
    assert acc.num_units == len(keep) + added
    _feed(acc, post, post_cuts)
    k = len(keep)
    both = np.concatenate([pre[:, keep], post[:, :k]])
    total, cm = acc.total(), acc.comoments()
    assert total.n == cm.n == both.shape[0] and total.num_units == len(keep) + added
    _assert_exact(total.select(range(k)), both, cm.select(range(k)))
    _assert_unknown(total, slice(k, None))
    assert torch.isnan(cm.c[k:]).all() and torch.isnan(cm.c[:, k:]).all()
    window = acc.take_window()  # no take_window before: the window is the whole history
    _assert_exact(window.select(range(k)), both)
    _assert_unknown(window, slice(k, None))


def test_prune_and_reorder_keep_the_accumulator_state_bitwise():
    acc, _ = _filled()
    acc.update(torch.randn(4, 5))
    acc.flush()
    before_total, before_cm, before_window = acc.total(), acc.comoments(), acc._window
    keep = [3, 1, 4]
    remap_accumulator(acc, keep, 0)
    _assert_same(acc.total(), before_total.select(keep))
    _assert_same(acc._window, before_window.select(keep))
    cm = acc.comoments()
    assert torch.equal(cm.c, before_cm.c[keep][:, keep])
    assert torch.equal(cm.mean, before_cm.mean[keep])
    assert torch.equal(cm.pearson(), before_cm.pearson()[keep][:, keep])
    assert acc._pending == [] and acc._fresh is None and acc._cross is None


def test_remap_flushes_pending_batches_first():
    acc = NeuronAccumulator(3, flush_every=100)
    x = torch.randn(30, 3)
    _feed(acc, x, [10, 20])
    assert len(acc._pending) == 3
    remap_accumulator(acc, [2, 1], 0)
    _assert_exact(acc.total(), x[:, [2, 1]].numpy())


def test_a_merge_keeps_the_survivor_history_by_neuron_id():
    """Folding j into i: i keeps its statistics as they were, j's are dropped; IDs align."""
    reg = NeuronRegistry()
    ids = reg.add_layer("fc1", 5)
    acc, _ = _filled()
    before = acc.total()
    i, j = 1, 3
    reg.remove("fc1", [j], merged_into=[ids[i]])
    keep = [k for k in range(5) if k != j]
    grown = reg.grow("fc1", parents=[ids[0]])
    remap_accumulator(acc, keep, len(grown))
    after = acc.total()
    assert reg.ids("fc1") == [*(ids[k] for k in keep), *grown]
    for local, nid in enumerate(reg.ids("fc1")):
        if nid in grown:
            assert torch.isnan(after.mean[local])
        else:
            old = ids.index(nid)
            assert after.mean[local] == before.mean[old] and after.m2[local] == before.m2[old]


def test_windows_after_growth_are_exact_or_unknown_never_wrong():
    acc = NeuronAccumulator(4, correlation=True, flush_every=2, name="fc1")
    gen = torch.Generator().manual_seed(1)
    epoch1, mid, post, epoch3 = (torch.randn(r, 4, generator=gen) + 5 for r in (30, 12, 18, 25))
    _feed(acc, epoch1, [9, 20])
    assert acc.take_window().n == 30
    _feed(acc, mid, [5])
    keep, k = [3, 0, 1], 3
    remap_accumulator(acc, keep, added=2)
    post5 = torch.cat([post[:, :3], post[:, :2] * 3 - 1], 1)  # 3 survivors + 2 new
    _feed(acc, post5, [7])
    window2 = acc.take_window()  # the surgery happened inside it
    _assert_exact(window2.select(range(k)), torch.cat([mid[:, keep], post5[:, :k]]).numpy())
    _assert_unknown(window2, slice(k, None))

    epoch3 = torch.cat([epoch3[:, :3], -epoch3[:, :2]], 1)
    _feed(acc, epoch3, [4, 11])
    window3 = acc.take_window()  # opened after the surgery
    ref = two_pass(epoch3.numpy())
    _assert_exact(window3.select(range(k)), epoch3[:, :k].numpy())
    new = slice(k, None)
    np.testing.assert_array_equal(window3.minimum[new].numpy(), ref["min"][new])
    np.testing.assert_array_equal(window3.maximum[new].numpy(), ref["max"][new])
    np.testing.assert_array_equal(window3.fire[new].numpy(), ref["fire"][new])
    for name, got, want in [
        ("mean", window3.mean[new], ref["mean"][new]),
        ("variance", window3.variance[new], ref["variance"][new]),
        ("abs_sum", window3.abs_sum[new], ref["abs_sum"][new]),
    ]:
        got = got.numpy()  # exact from the first window opened after the surgery
        assert np.isclose(got, want, rtol=1e-5, atol=1e-6).all(), f"{name}: {got} vs {want}"

    everything = torch.cat([epoch1[:, keep], mid[:, keep], post5[:, :k], epoch3[:, :k]])
    _assert_exact(
        acc.total().select(range(k)), everything.numpy(), acc.comoments().select(range(k))
    )
    _assert_unknown(acc.total(), slice(k, None))  # until reset
    acc.reset()
    after = torch.randn(40, 5, generator=gen)
    _feed(acc, after, [13])
    _assert_exact(acc.total(), after.numpy(), acc.comoments())


def test_growth_before_any_observation_tracks_every_unit_exactly():
    acc = NeuronAccumulator(3, correlation=True, name="fc1")
    remap_accumulator(acc, [1], added=3)
    x = torch.randn(33, 4)
    _feed(acc, x, [10])
    _assert_exact(acc.total(), x.numpy(), acc.comoments())


def test_conv_maps_and_relu_layers_continue_after_growth():
    gen = torch.Generator().manual_seed(2)
    acc = NeuronAccumulator(3, correlation=True, flush_every=2, name="conv", nonnegative=True)
    pre = torch.randn(6, 3, 5, generator=gen).relu()
    _feed(acc, pre, [2, 4])
    remap_accumulator(acc, [2, 0], added=2)
    post = torch.randn(8, 4, 5, generator=gen).relu()
    _feed(acc, post, [3])
    flat = lambda t: t.transpose(1, 2).reshape(-1, t.shape[1])  # noqa: E731
    both = torch.cat([flat(pre)[:, [2, 0]], flat(post)[:, :2]])
    _assert_exact(acc.total().select([0, 1]), both.numpy(), acc.comoments().select([0, 1]), True)
    _assert_unknown(acc.total(), slice(2, None))


# --- errors and bounds ------------------------------------------------------------------------
def _state(acc: NeuronAccumulator):
    return (acc.num_units, acc._total, acc._window, acc._comoments, list(acc._pending))


@pytest.mark.parametrize(
    ("keep", "added", "error", "match"),
    [
        ([0, 5], 0, NeuronNotFoundError, r"layer 'fc1' has 5 units; kept local indices \[5\]"),
        ([-1, 2], 1, NeuronNotFoundError, r"layer 'fc1' .*indices \[-1\] are out of range 0\.\.4"),
        ([1, 2, 1], 0, ConfigurationError, r"layer 'fc1': keep lists local indices \[1\] more"),
        ([0.0, 1.0], 0, ConfigurationError, r"layer 'fc1': keep must hold integer"),
        (torch.tensor([True, False]), 0, ConfigurationError, r"integer local indices"),
        ([[0, 1]], 0, ConfigurationError, r"1-D sequence"),
        ([0, 1], -1, ConfigurationError, r"layer 'fc1': added must be an integer ≥ 0, got -1"),
        ([0, 1], 1.5, ConfigurationError, r"added must be an integer"),
    ],
)
def test_bad_remaps_raise_typed_errors_and_change_nothing(keep, added, error, match):
    acc, _ = _filled()
    acc.update(torch.randn(2, 5))
    before = _state(acc)
    with pytest.raises(error, match=match):
        remap_accumulator(acc, keep, added)
    after = _state(acc)
    assert after[0] == before[0] and after[4] == before[4]  # not even flushed
    assert all(a is b for a, b in zip(after[1:4], before[1:4]))


def test_out_of_range_error_is_a_key_error_with_a_readable_message():
    with pytest.raises(KeyError) as info:
        keep_index(range(20), 3, name="fc2")
    text = str(info.value)
    assert text.startswith("layer 'fc2' has 3 units; kept local indices [3, 4,")
    assert "(17 in all)" in text
    with pytest.raises(NeuronNotFoundError, match=r"^the statistics has 2 units"):
        remap_moments(Moments.empty(2), [2], 0)


def test_a_correlation_layer_stays_within_its_bound_after_growth():
    acc, _ = _filled(max_correlation_units=6)
    before = _state(acc)
    with pytest.raises(
        CorrelationLimitError,
        match=r"layer 'fc1' would have 7 units after surgery.*max_correlation_units=6",
    ):
        remap_accumulator(acc, range(5), added=2)
    assert all(a is b for a, b in zip(_state(acc)[1:4], before[1:4]))
    remap_accumulator(acc, range(5), added=1)  # the bound is inclusive
    assert acc.comoments().num_units == 6
    plain = NeuronAccumulator(3, max_correlation_units=2, name="wide")  # correlation off
    remap_accumulator(plain, [0, 1, 2], added=4)
    assert plain.num_units == 7 and plain.comoments() is None


@pytest.mark.parametrize("device", DEVICES)
def test_state_stays_on_its_device(device):
    acc, x = _filled(device=device)
    keep = torch.tensor([4, 2], device=device)
    remap_accumulator(acc, keep, added=1)
    total, cm = acc.total(), acc.comoments()
    assert all(t.device.type == device for t in [*total.tensors().values(), cm.mean, cm.c])
    post = torch.randn(9, 3)
    acc.update(post.to(device))
    both = torch.cat([x[:, [4, 2]], post[:, :2]]).numpy()
    _assert_exact(acc.total().select([0, 1]), both, acc.comoments().select([0, 1]))
