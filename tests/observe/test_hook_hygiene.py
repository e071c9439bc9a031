"""No hook is ever left behind: normal exit, forward raising, misuse, failed start."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_models import (
    FlagRaiser,
    SmallResNet,
    count_hooks,
    hooked_modules,
    make_cnn_bn,
    make_mlp,
    seeded,
)
from torch import nn

from engine import NeuronEngine, TrackingStateError
from engine import core as engine_core


def _x(*shape: int) -> torch.Tensor:
    with seeded(200):
        return torch.randn(*shape)


def _expected_hook_modules(engine: NeuronEngine) -> dict[str, int]:
    expected = {layer.observation.hook_module: 1 for layer in engine.layers.values()}
    if engine.example_inputs is None:  # the one-shot probe capture on the root, until it fires
        expected[""] = expected.get("", 0) + 1
    return expected


def _expected_count(engine: NeuronEngine) -> int:
    return sum(_expected_hook_modules(engine).values())


MODELS = {
    "mlp": (make_mlp, (4, 6)),
    "cnn_bn": (make_cnn_bn, (2, 3, 5, 5)),
    "resnet": (SmallResNet, (2, 3, 4, 4)),
    "flag_raiser": (FlagRaiser, (3, 4)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_no_hook_left_after_normal_exit(name: str) -> None:
    factory, shape = MODELS[name]
    model = factory()
    engine = NeuronEngine(model)
    assert count_hooks(model) == 0
    assert not engine.is_tracking
    with engine.tracking() as handle:
        assert handle is engine
        assert engine.is_tracking
        assert hooked_modules(model) == _expected_hook_modules(engine)
        assert count_hooks(model) == _expected_count(engine)
        model(_x(*shape))
    assert not engine.is_tracking
    assert count_hooks(model) == 0
    assert hooked_modules(model) == {}


def test_no_hook_left_when_forward_raises_on_flag() -> None:
    model = FlagRaiser()
    engine = NeuronEngine(model)
    model.fail = True
    with pytest.raises(RuntimeError, match="planted failure"), engine.tracking():
        model(_x(3, 4))
    assert count_hooks(model) == 0
    assert not engine.is_tracking
    # statistics gathered before the failure are kept (fc1 ran, fc2 did not)
    assert engine.snapshot().samples_seen == {"fc1": 3, "fc2": 0}


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "resnet"])
def test_no_hook_left_when_input_shape_is_wrong(name: str) -> None:
    factory, _ = MODELS[name]
    model = factory()
    engine = NeuronEngine(model)
    with pytest.raises(RuntimeError), engine.tracking():
        model(torch.randn(2, 7, 7, 7))
    assert count_hooks(model) == 0
    assert not engine.is_tracking


def test_no_hook_left_on_base_exception() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)

    def interrupt(module, args):
        raise KeyboardInterrupt

    user = model[2].register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt), engine.tracking():
        model(_x(2, 6))
    user.remove()
    assert count_hooks(model) == 0
    assert not engine.is_tracking


def test_user_hooks_are_left_alone() -> None:
    model = make_mlp()
    calls: list[str] = []
    handles = [
        model[0].register_forward_hook(lambda m, a, o: calls.append("hook")),
        model[1].register_forward_pre_hook(lambda m, a: calls.append("pre")),
    ]
    engine = NeuronEngine(model)
    with engine.tracking():
        assert count_hooks(model) == 2 + _expected_count(engine)
        model(_x(2, 6))
    assert count_hooks(model) == 2
    model(_x(2, 6))
    assert calls == ["hook", "pre", "hook", "pre"]
    for h in handles:
        h.remove()
    assert count_hooks(model) == 0


def test_explicit_start_stop() -> None:
    model = make_cnn_bn()
    engine = NeuronEngine(model)
    engine.start()
    try:
        assert engine.is_tracking
        assert count_hooks(model) == _expected_count(engine)
        model(_x(2, 3, 5, 5))
    finally:
        engine.stop()
    assert not engine.is_tracking
    assert count_hooks(model) == 0
    assert engine.snapshot().samples_seen == {"0": 50, "3": 50, "8": 2}


def test_start_twice_raises_and_keeps_one_set_of_hooks() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    engine.start()
    with pytest.raises(TrackingStateError):
        engine.start()
    assert engine.is_tracking
    assert hooked_modules(model) == _expected_hook_modules(engine)
    assert count_hooks(model) == _expected_count(engine)
    model(_x(5, 6))
    assert engine.snapshot().samples_seen == {"0": 5, "2": 5, "4": 5}  # counted once
    engine.stop()
    assert count_hooks(model) == 0


def test_nested_tracking_raises_and_cleans_up() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    with engine.tracking():
        with pytest.raises(TrackingStateError), engine.tracking():
            pass  # pragma: no cover - never entered
        assert count_hooks(model) == _expected_count(engine)
    assert count_hooks(model) == 0


def test_stop_when_not_tracking_raises() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    with pytest.raises(TrackingStateError):
        engine.stop()
    with engine.tracking():
        pass
    with pytest.raises(TrackingStateError):
        engine.stop()
    assert count_hooks(model) == 0


def test_tracking_state_error_is_a_runtime_error() -> None:
    engine = NeuronEngine(make_mlp())
    with pytest.raises(RuntimeError):
        engine.stop()


def test_statistics_kept_after_stop_and_accumulate_after_restart() -> None:
    model = make_mlp()
    engine = NeuronEngine(model, flush_every=100)
    x1, x2 = _x(4, 6), _x(6, 6) * 2
    with engine.tracking():
        model(x1)
    first = engine.layer_stats("0")
    assert first.count == 4
    model(x2)  # not tracked
    assert engine.layer_stats("0").count == 4
    torch.testing.assert_close(engine.layer_stats("0").mean, first.mean)
    engine.start()
    model(x2)
    engine.stop()
    stats = engine.layer_stats("0")
    assert stats.count == 10
    with torch.no_grad():
        ref = torch.relu(model[0](torch.cat([x1, x2]))).double()
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.variance, ref.var(0, correction=0), atol=1e-6, rtol=0)


def test_no_hook_left_when_start_fails_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    original = engine_core.make_observer
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("planted failure in make_observer")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_core, "make_observer", failing)
    saved = torch.backends.mha.get_fastpath_enabled()
    with pytest.raises(RuntimeError, match="planted failure in make_observer"):
        engine.start()
    assert calls["n"] == 2
    assert count_hooks(model) == 0
    assert not engine.is_tracking
    assert torch.backends.mha.get_fastpath_enabled() is saved
    # the engine is usable again once the fault is gone
    monkeypatch.undo()
    with engine.tracking():
        model(_x(3, 6))
    assert count_hooks(model) == 0
    assert engine.snapshot().samples_seen == {"0": 3, "2": 3, "4": 3}


def test_no_hook_left_when_register_fails_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    last_hook_module = model.get_submodule(engine.layers["4"].observation.hook_module)

    def refuse(*args, **kwargs):
        raise RuntimeError("planted failure in register_forward_hook")

    monkeypatch.setattr(last_hook_module, "register_forward_hook", refuse)
    with pytest.raises(RuntimeError, match="planted failure in register_forward_hook"):
        engine.start()
    assert count_hooks(model) == 0
    assert not engine.is_tracking


def test_two_engines_on_one_model_are_independent() -> None:
    model = make_mlp()
    a = NeuronEngine(model, include=["0", "2"])
    b = NeuronEngine(model, include="4")
    with a.tracking():
        with b.tracking():
            model(_x(2, 6))
            assert count_hooks(model) == 3
        assert count_hooks(model) == 2
        model(_x(2, 6))
    assert count_hooks(model) == 0
    assert a.snapshot().samples_seen == {"0": 4, "2": 4}
    assert b.snapshot().samples_seen == {"4": 2}


def test_hooks_do_not_keep_graph_alive() -> None:
    """The hooks detach what they observe: no autograd graph is retained by the stats."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking():
        model(_x(2, 3))
    acc = engine.layers["0"].accumulator
    for t in acc._pending:
        assert not t.requires_grad
    assert not engine.layer_stats("0").mean.requires_grad


def test_deepcopy_while_tracking_does_not_feed_or_keep_hooks() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    with engine.tracking():
        ema = copy.deepcopy(model)
        ema(_x(5, 6))
        model(_x(2, 6))
    assert engine.snapshot().samples_seen == {"0": 2, "2": 2, "4": 2}
    ema(_x(5, 6))
    assert engine.snapshot().samples_seen == {"0": 2, "2": 2, "4": 2}
    assert count_hooks(ema) == 0


def test_paused_removes_the_hooks_and_puts_them_back_also_on_error() -> None:
    model = make_mlp()
    engine = NeuronEngine(model)
    with engine.tracking():
        model(_x(4, 6))  # captures the probe: its one-shot hook goes
        tracked = count_hooks(model)
        seen = []

        def inside() -> None:
            with engine.paused():
                seen.append((count_hooks(model), engine.is_tracking))
                raise RuntimeError("inside")

        with pytest.raises(RuntimeError, match="inside"):
            inside()
        assert seen == [(0, False)]
        assert count_hooks(model) == tracked and engine.is_tracking
        with engine.paused():  # what surgery and layout builds run under
            model(_x(4, 6))
        assert engine.snapshot().samples_seen["0"] == 4  # the paused forward was not seen
    with engine.paused():  # tracking off: a no-op
        assert count_hooks(model) == 0
    assert count_hooks(model) == 0 and not engine.is_tracking
