"""torch.compile and the tracking hooks: the rule the README states, tested.

* By default dynamo does not guard on module hooks (``skip_nnmodule_hook_guards``): a compiled
  graph keeps "whichever version you first compiled". Hooks attached after the first compiled
  call are never seen, so nothing is tracked (the trap), until ``torch._dynamo.reset()``.
* With ``torch._dynamo.config.skip_nnmodule_hook_guards = False`` dynamo guards on them:
  statistics equal eager tracking's (float rounding) and every stop()/start() is honoured
  (one recompile per state, then cached).
* Surgery replaces parameters: the compiled model recompiles by itself, its outputs equal the
  eager model's, and tracking goes on at the new widths.

The tests use the ``aot_eager`` backend (the same graph capture, no C++ compiler, seconds).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import NeuronEngine

torch_dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def hook_guards():
    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
        yield


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _moments(engine: NeuronEngine, layer: str):
    return engine.snapshot().layers[layer].moments


def test_with_hook_guards_tracking_is_exact_and_start_stop_are_honoured(hook_guards):
    model, x = _model(), torch.randn(64, 8)
    engine = NeuronEngine(model, correlation=True)
    engine.start()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x[:32])
    compiled(x[32:])
    engine.stop()
    reference = NeuronEngine(model, correlation=True)
    with reference.tracking():
        model(x)
    for layer in ("0", "2"):
        got, want = _moments(engine, layer), _moments(reference, layer)
        assert got.n == want.n == 64
        torch.testing.assert_close(got.mean, want.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.m2, want.m2, rtol=1e-5, atol=1e-5)
    got = engine.snapshot().layers["0"].comoments.c
    want = reference.snapshot().layers["0"].comoments.c
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    compiled(x)  # stopped: not counted
    assert _moments(engine, "0").n == 64
    engine.start()
    compiled(x)
    engine.stop()
    assert _moments(engine, "0").n == 128
    compiled(x[:32])
    assert _moments(engine, "0").n == 128


def test_hooks_attached_after_the_first_compiled_call_are_not_seen_until_reset():
    model, x = _model(), torch.randn(16, 8)
    engine = NeuronEngine(model)
    compiled = torch.compile(model, backend="aot_eager")
    compiled(x)
    with engine.tracking():
        compiled(x)
    assert _moments(engine, "0").n == 0  # the trap the README warns about
    torch._dynamo.reset()
    with engine.tracking():
        compiled(x)
    assert _moments(engine, "0").n == 16


def test_surgery_recompiles_and_tracking_goes_on_at_the_new_widths(hook_guards):
    model = _model()
    with torch.no_grad():
        model[0].bias[:3] = -100.0  # three units that never fire
    engine = NeuronEngine(model)
    engine.start()
    compiled = torch.compile(model, backend="aot_eager")
    compiled(torch.randn(256, 8))
    engine.stop()
    engine.apply(engine.propose({"policies": [{"name": "dead"}]}))
    assert model[0].out_features == 13
    x = torch.randn(32, 8)
    torch.testing.assert_close(compiled(x), model(x))
    engine.reset()
    with engine.tracking():
        compiled(x)
    assert _moments(engine, "0").n == 32 and _moments(engine, "0").mean.numel() == 13
