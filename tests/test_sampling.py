"""Sampling windows: statistics over exactly the tracked steps, no hooks in between."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import ConfigurationError, NeuronEngine, SamplingWindow, TrackingStateError
from engine.stats import CoMoments, Moments, merge_comoments, merge_moments


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(("track", "every", "offset"), [(1, 4, 0), (2, 5, 1), (3, 3, 0)])
def test_statistics_equal_a_reference_over_exactly_the_tracked_steps(track, every, offset):
    model = _model()
    engine = NeuronEngine(model, correlation=True)
    window = SamplingWindow(engine, track=track, every=every, offset=offset)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(7 + i, 5, generator=gen) for i in range(13)]
    hidden, out = Moments.empty(6), Moments.empty(3)
    hidden_cm = CoMoments.empty(6)
    covered = []
    for i, x in enumerate(batches):
        with window.step() as tracked:
            assert tracked == window.tracks(i)
            assert (_hooks(model) > 0) == tracked  # hook-free fast path between
            model(x)
        assert _hooks(model) == 0
        if tracked:
            covered.append(i)
            with torch.no_grad():
                h = model[1](model[0](x)).double()
                hidden = merge_moments(hidden, Moments.from_samples(h))
                hidden_cm = merge_comoments(hidden_cm, CoMoments.from_samples(h))
                out = merge_moments(out, Moments.from_samples(model(x).double()))
    assert covered == [i for i in range(13) if (i - offset) % every < track]
    snap = engine.snapshot()
    for name, ref in (("0", hidden), ("2", out)):
        got = snap.layers[name]
        assert got.count == ref.n == sum(batches[i].shape[0] for i in covered)
        torch.testing.assert_close(got.mean, ref.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.variance, ref.variance, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.moments.minimum, ref.minimum.float().double())
        assert torch.equal(got.moments.maximum, ref.maximum.float().double())
        assert torch.equal(got.moments.fire, ref.fire)
    torch.testing.assert_close(snap.layers["0"].comoments.c, hidden_cm.c, rtol=1e-5, atol=1e-5)
    coverage = window.coverage()
    assert (coverage.steps, coverage.steps_tracked) == (13, len(covered))
    assert snap.metadata["sampling"] == coverage.as_dict()
    assert snap.metadata["sampling"]["fraction"] == pytest.approx(len(covered) / 13)


def test_a_step_that_raises_removes_the_hooks_and_is_counted():
    model = _model()
    engine = NeuronEngine(model)
    window = SamplingWindow(engine, track=1, every=2)

    def failing_step() -> None:
        with window.step():
            model(torch.randn(4, 5))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_step()
    assert _hooks(model) == 0 and not engine.is_tracking
    assert window.coverage().steps_tracked == 1
    assert engine.snapshot().layers["0"].count == 4


def test_the_window_owns_the_hooks_and_checks_its_arguments():
    model = _model()
    engine = NeuronEngine(model)
    window = SamplingWindow(engine, track=1, every=3)
    with engine.tracking(), pytest.raises(TrackingStateError, match="already tracking"):
        window.step().__enter__()
    assert window.coverage().steps == 0
    for kwargs, match in (
        ({"track": 0, "every": 3}, "track <= every"),
        ({"track": 4, "every": 3}, "track <= every"),
        ({"track": 1, "every": 3, "offset": 3}, "offset < every=3"),
        ({"track": 1.0, "every": 3}, "track must be an int"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            SamplingWindow(engine, **kwargs)


def test_reset_restarts_the_count_and_snapshots_without_a_window_have_no_entry():
    model = _model()
    engine = NeuronEngine(model)
    assert "sampling" not in engine.snapshot().metadata
    window = SamplingWindow(engine, track=1, every=2)
    for _ in range(5):
        with window.step():
            model(torch.randn(2, 5))
    assert (window.coverage().steps, window.coverage().steps_tracked) == (5, 3)
    window.reset()
    assert window.coverage().fraction == 0.0 and window.tracks_next
    assert engine.snapshot(note="x").metadata["note"] == "x"
