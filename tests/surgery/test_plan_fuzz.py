"""Random plans against random small models: each is applied cleanly or refused cleanly.

For every generated plan (prunes, merges, folds and expands with indices, IDs, coefficients and
counts that are sometimes wrong or absurd) on one of several small models (plain MLP, CNN with
BatchNorm, a residual block with bias-free convs, LayerNorm, an embedding tied to its output
head), ``engine.apply`` must either

* apply it: every parameter of the model is in the optimizer exactly once, the outputs on the
  probe are finite, the measured change is recorded, the statistics and neuron IDs have the
  model's widths, ties are kept, and a training step runs; or
* refuse it with a typed ``EngineError`` and leave every parameter, buffer, optimizer state
  tensor, statistic and neuron ID bitwise as it was.

Anything else (an untyped error, a half-applied plan) fails the test.
"""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from surgery_models import ResidualCNN, cnn_bn, mlp, state_of
from torch import nn

from engine import NeuronEngine
from engine.errors import EngineError
from engine.plan import ExpandAction, FoldAction, MergeAction, Plan, PruneAction


class TiedLM(nn.Module):
    """An embedding whose table is also the output head's weight."""

    def __init__(self, vocab: int = 10, dim: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens)
        h = h + self.down(F.relu(self.up(h)))
        return self.head(h).mean(dim=1)


class NormMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 10), nn.LayerNorm(10), nn.Linear(10, 7)
        self.out = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.norm(self.fc1(x))))))


MODELS = {
    "mlp": (mlp, lambda g: torch.randn(24, 6, generator=g)),
    "cnn_bn": (cnn_bn, lambda g: torch.randn(12, 3, 4, 4, generator=g)),
    "residual": (ResidualCNN, lambda g: torch.randn(12, 3, 4, 4, generator=g)),
    "norm_mlp": (NormMLP, lambda g: torch.randn(24, 6, generator=g)),
    "tied": (TiedLM, lambda g: torch.randint(0, 10, (12, 5), generator=g)),
}


def _setup(kind: str, seed: int):
    torch.manual_seed(seed)
    factory, inputs = MODELS[kind]
    model = factory()
    x = inputs(torch.Generator().manual_seed(seed))
    engine = NeuronEngine(model, correlation=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with engine.tracking():
        for _ in range(2):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    opt.zero_grad()
    return model, engine, opt, x


def _full_state(model, engine, opt) -> dict:
    state = state_of(model, opt)
    state["neurons"] = engine.neurons.state_dict()
    stats = {}
    for name, layer in engine.snapshot().layers.items():
        m, cm = layer.moments, layer.comoments
        tensors = [v for v in vars(m).values() if isinstance(v, torch.Tensor)]
        if cm is not None:
            tensors += [v for v in vars(cm).values() if isinstance(v, torch.Tensor)]
        stats[name] = (m.n, [t.clone() for t in tensors])
    state["stats"] = stats
    return state


def _assert_unchanged(before: dict, after: dict) -> None:
    assert before["neurons"] == after["neurons"]
    for name, (n, tensors) in before["stats"].items():
        n2, tensors2 = after["stats"][name]
        assert n == n2, name
        assert len(tensors) == len(tensors2), name
        for a, b in zip(tensors, tensors2, strict=True):
            assert a.shape == b.shape and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)), name
    from surgery_models import assert_same_state

    assert_same_state(before, after)


@st.composite
def _index(draw, width: int) -> int:
    """Mostly valid; sometimes one past the end."""
    return draw(st.integers(0, width - 1) if draw(st.integers(0, 24)) else st.just(width))


@st.composite
def _action(draw, engine: NeuronEngine):
    layer = draw(st.sampled_from(list(engine.layers)))
    width = engine.neurons.size(layer)
    ids = engine.neurons.ids(layer)

    def id_of(i: int) -> int:
        wrong = draw(st.integers(0, 39)) == 0
        return 10**6 + i if wrong or i >= width else ids[i]

    kind = draw(st.sampled_from(["prune", "merge", "fold", "expand"]))
    if kind == "prune":
        units = draw(st.lists(_index(width), min_size=1, max_size=3, unique=True))
        constants = draw(st.one_of(st.none(), st.just([0.5] * len(units))))
        return PruneAction(layer=layer, local_indices=units, neuron_ids=[id_of(u) for u in units],
                           constant_values=constants, reason="fuzz")  # fmt: skip
    if kind == "merge":
        keep, remove = draw(_index(width)), draw(_index(width))
        absurd = draw(st.integers(0, 7)) == 0
        alpha = draw(st.sampled_from([1e300, -1e300, 1e30]) if absurd else st.floats(-3, 3))
        beta = draw(st.floats(-2, 2))
        return MergeAction(layer=layer, keep=keep, remove=remove, keep_id=id_of(keep),
                           remove_id=id_of(remove), alpha=alpha, beta=beta, correlation=0.9,
                           reason="fuzz")  # fmt: skip
    if kind == "fold":
        units = draw(st.lists(_index(width), min_size=2, max_size=4, unique=True))
        cut = draw(st.integers(1, len(units) - 1))
        keep, remove = units[:cut], units[cut:]
        big = 1e300 if draw(st.integers(0, 7)) == 0 else 1.0
        coef = [[draw(st.floats(-2, 2)) * big for _ in keep] for _ in remove]
        return FoldAction(layer=layer, keep=keep, remove=remove, keep_ids=[id_of(k) for k in keep],
                          remove_ids=[id_of(r) for r in remove], coefficients=coef,
                          mean_keep=[0.1] * len(keep), mean_remove=[0.2] * len(remove),
                          ridge=1e-6, reason="fuzz")  # fmt: skip
    count = 10**12 if draw(st.integers(0, 7)) == 0 else draw(st.integers(1, 3))
    init = draw(st.sampled_from(["net2net", "zero_outgoing", "random"]))
    sources = None
    if init == "net2net":
        sources = [draw(_index(width)) for _ in range(min(count, 3))]
        count = len(sources)
    return ExpandAction(layer=layer, count=count, init=init, source_indices=sources,
                        source_ids=None if sources is None else [id_of(s) for s in sources],
                        reason="fuzz")  # fmt: skip


def _check_applied(model, engine, opt, x, record) -> None:
    params = {id(p) for p in model.parameters()}
    held = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(held) == len(set(held)), "a parameter is in the optimizer twice"
    assert set(held) == params, "the optimizer does not hold exactly the model's parameters"
    assert record.max_output_change is not None
    for name, layer in engine.layers.items():
        width = engine.neurons.size(name)
        assert engine.snapshot().layers[name].moments.mean.numel() == width, name
        assert layer.kind.units(layer.module) == width, name
    if isinstance(model, TiedLM):
        assert model.head.weight is model.emb.weight, "the tie was broken"
    with engine.tracking():
        out = model(x)
        assert torch.isfinite(out).all(), "non-finite outputs after surgery"
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()  # runs (a finite but huge coefficient may still train badly)


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 3))
def test_random_plans_apply_cleanly_or_are_refused_cleanly(kind, data, seed):
    model, engine, opt, x = _setup(kind, seed)
    try:
        actions = data.draw(st.lists(_action(engine), min_size=1, max_size=2))
        plan = Plan.create(actions, engine.layout)
    except (pydantic.ValidationError, EngineError):
        return  # refused while building the plan: nothing reached the model
    before = _full_state(model, engine, opt)
    try:
        record = engine.apply(plan, opt)
    except EngineError:
        _assert_unchanged(before, _full_state(model, engine, opt))
        return
    _check_applied(model, engine, opt, x, record)
