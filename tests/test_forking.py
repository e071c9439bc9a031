"""``NeuronEngine.fork``: a twin engine on a copy of the model, independent afterwards."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.errors import ConfigurationError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _tracked(correlation: bool = True) -> tuple[NeuronEngine, torch.Tensor]:
    model = _model()
    engine = NeuronEngine(model, correlation=correlation, growth_signal=True)
    x = torch.randn(160, 6)
    with engine.tracking():
        for chunk in x.split(32):
            model(chunk).square().mean().backward()
    model.zero_grad()
    engine.log_epoch(0, loss=1.0)
    return engine, x


def _stats(engine: NeuronEngine) -> dict[str, tuple]:
    out = {}
    for name, layer in engine.snapshot().layers.items():
        m = layer.moments
        cm = layer.comoments
        out[name] = (m.n, m.mean.clone(), m.m2.clone(), None if cm is None else cm.c.clone(),
                     None if layer.growth is None else layer.growth.total.clone())  # fmt: skip
    return out


def _same(a: dict, b: dict) -> bool:
    for name in a:
        for u, v in zip(a[name], b[name], strict=True):
            if isinstance(u, torch.Tensor):
                if not torch.equal(u, v):
                    return False
            elif u != v:
                return False
    return True


def test_fork_starts_equal_and_proposes_the_same_plan():
    engine, _ = _tracked()
    twin = engine.fork()
    assert twin.model is not engine.model
    assert _same(_stats(engine), _stats(twin))
    assert twin.neurons.state_dict() == engine.neurons.state_dict()
    assert len(twin.history) == len(engine.history) == 1
    config = {"policies": [{"name": "budget", "settings": {"target_fraction": 0.7}}]}
    a, b = engine.propose(config), twin.propose(config)
    assert list(a.actions())
    assert a.model_dump(exclude={"metadata"}) == b.model_dump(exclude={"metadata"})
    assert a.metadata.fingerprint == b.metadata.fingerprint
    x = torch.randn(5, 6)
    assert torch.equal(engine.model(x), twin.model(x))


def test_fork_is_independent_of_the_source():
    engine, x = _tracked()
    before = _stats(engine)
    twin = engine.fork()
    with twin.tracking():
        twin.model(x[:10]).sum().backward()
    assert _same(before, _stats(engine))  # the source saw nothing
    assert twin.snapshot().layers["0"].count == 160 + 10
    twin.reset()
    assert engine.snapshot().layers["0"].count == 160
    # Surgery on the twin leaves the source's model, IDs and statistics alone.
    ids = engine.neurons.state_dict()
    twin = engine.fork()
    plan = twin.propose({"policies": [{"name": "budget", "settings": {"target_fraction": 0.7}}]})
    assert list(plan.actions())
    twin.apply(plan)
    assert twin.neurons.state_dict() != ids
    assert engine.neurons.state_dict() == ids
    assert _same(before, _stats(engine))
    assert engine.model[0].weight.shape == (12, 6)


def test_fork_of_a_tracking_engine_copies_without_hooks():
    engine, x = _tracked()
    with engine.tracking():
        twin = engine.fork()
        twin.model(x)  # no hook of the source runs on the copy
        assert not twin.is_tracking
    assert engine.snapshot().layers["0"].count == 160


def test_fork_refuses_a_copy_that_carries_the_engines_hooks():
    engine, _ = _tracked()
    with engine.tracking():
        hooked = copy.deepcopy(engine.model)
        with pytest.raises(ConfigurationError, match="tracking hooks"):
            engine.fork(hooked)


def test_fork_refuses_shared_or_different_models():
    engine, _ = _tracked()
    with pytest.raises(ConfigurationError, match="not the model itself"):
        engine.fork(engine.model)
    shared = copy.deepcopy(engine.model)
    shared[2].weight = engine.model[2].weight
    with pytest.raises(ConfigurationError, match=r"shares '2\.weight'"):
        engine.fork(shared)
    wider = _model()
    wider[2] = nn.Linear(12, 9)
    with pytest.raises(ConfigurationError, match=r"2\.weight"):
        engine.fork(wider)
    with pytest.raises(ConfigurationError, match="missing"):
        engine.fork(nn.Sequential(nn.Linear(6, 12)))


def test_fork_accepts_a_users_deepcopy():
    engine, x = _tracked(correlation=False)
    with engine.paused():
        mine = copy.deepcopy(engine.model)
    twin = engine.fork(mine)
    assert twin.model is mine
    with twin.tracking():
        mine(x[:4])
    assert twin.snapshot().layers["2"].count == 164
