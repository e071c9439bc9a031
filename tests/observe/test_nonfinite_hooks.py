"""A NaN or inf batch through a tracked model: no host sync in the hooks, statistics of the
other batches only (equal to a run that never saw the bad batch), per-unit counts, one
warning per layer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.stats.accumulator import NonFiniteStatisticsWarning

SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
        nn.Tanh(), nn.Linear(6, 3),
    )  # fmt: skip


def _batches(bad: float | None) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 3, 5, 5, generator=gen) for _ in range(5)]
    if bad is not None:
        xs[2][1, 0, 2, 2] = bad  # one pixel of one sample
    return xs


def _track(model: nn.Module, xs: list[torch.Tensor], **kw) -> NeuronEngine:
    engine = NeuronEngine(model, flush_every=2, **kw)
    with engine.tracking(), torch.no_grad():
        for x in xs:
            model(x)
    return engine


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_hooks_and_flushes_make_no_host_sync_on_a_poisoned_batch(monkeypatch, bad):
    model = _conv_model()
    engine = NeuronEngine(model, correlation=True, flush_every=2)

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name} called in the hot path")

        return method

    with monkeypatch.context() as patch:
        for name in SYNCING:
            patch.setattr(torch.Tensor, name, refuse(name))
        with engine.tracking(), torch.no_grad():
            for x in _batches(bad):
                model(x)
    with pytest.warns(NonFiniteStatisticsWarning):
        snap = engine.snapshot()
    for layer in snap.layers.values():
        assert torch.isfinite(layer.mean).all() and torch.isfinite(layer.variance).all()


def test_statistics_equal_a_run_without_the_poisoned_batch():
    xs = _batches(float("nan"))
    model = _conv_model()
    with pytest.warns(NonFiniteStatisticsWarning):
        snap = _track(model, xs).snapshot()
    ref = _track(model, xs[:2] + xs[3:]).snapshot()  # batch 2 never seen
    for name, layer in snap.layers.items():
        want = ref.layers[name]
        assert layer.count == want.count
        torch.testing.assert_close(layer.mean, want.mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(layer.variance, want.variance, rtol=1e-5, atol=1e-7)
        assert torch.equal(layer.minimum, want.minimum)
        assert torch.equal(layer.maximum, want.maximum)
        assert torch.equal(layer.moments.fire, want.moments.fire)
    assert snap.layers["3"].count == 16 and snap.layers["3"].nonfinite.tolist() == [1.0] * 6
    conv = snap.layers["0"]
    # the 3×3 kernels spread the NaN pixel to 9 positions of every channel
    assert conv.count == 4 * 4 * 25 and conv.nonfinite.tolist() == [9.0] * 4


def test_one_warning_per_layer_naming_it_at_read_time():
    model = _conv_model()
    engine = _track(model, _batches(float("inf")))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        engine.snapshot()
        engine.snapshot()  # already said
    messages = [str(w.message) for w in seen if w.category is NonFiniteStatisticsWarning]
    assert len(messages) == 3  # layers "0", "3" and "5", once each
    assert all("engine.reset()" in m for m in messages)
    assert {m.split("'")[1] for m in messages} == {"0", "3", "5"}
    engine.reset()
    assert engine.snapshot().layers["0"].count == 0
