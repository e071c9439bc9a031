"""Attention written as separate query / key / value Linears (Hugging Face style): a hand plan
naming every projection gets one line saying they are one group, and a width that is not a
multiple of the head size is refused before anything changes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from surgery_models import assert_same_state, state_of
from torch import nn

from engine import NeuronEngine
from engine.errors import PlanValidationError
from engine.plan import ExpandAction, Plan, PruneAction, validation_problems


class SelfAttention(nn.Module):
    """BertSelfAttention's shape: heads split with view(…, -1, attention_head_size)."""

    def __init__(self, hidden: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, hidden // heads
        self.query, self.key = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], -1, self.attention_head_size).transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.query(h)), self.split(self.key(h)), self.split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        context = (scores.softmax(-1) @ v).transpose(1, 2)
        return context.reshape(*context.shape[:-2], -1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.attn, self.out = nn.Linear(6, 16), SelfAttention(), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(F.relu(self.inp(x))).mean(1))


@pytest.fixture
def tracked():
    torch.manual_seed(0)
    model = Net()
    engine = NeuronEngine(model)
    x = torch.randn(8, 5, 6)
    with engine.tracking():
        model(x)
    return model, engine, x


def prune(engine: NeuronEngine, layer: str, units: list[int]) -> PruneAction:
    ids = engine.neurons.ids(layer)
    return PruneAction(layer=layer, local_indices=units, neuron_ids=[ids[i] for i in units],
                       reason="manual")  # fmt: skip


def test_naming_every_projection_gets_one_line(tracked):
    _, engine, _ = tracked
    names = ["attn.query", "attn.key", "attn.value"]
    plan = Plan.create([prune(engine, n, [0, 1, 2, 3]) for n in names], engine.layout)
    problems = validation_problems(plan, engine.model_layout())
    assert problems == [
        "prune[0], prune[1], prune[2]: layers 'attn.query', 'attn.key', 'attn.value' are one "
        "coupled group: they share one unit space, so a unit removed from one is removed from "
        "all; name one of them (e.g. 'attn.query')"
    ]
    with pytest.raises(PlanValidationError, match=r"\(1 problems\).*are one coupled group"):
        engine.apply(plan)


@pytest.mark.parametrize(
    "action",
    [
        lambda e: prune(e, "attn.key", [0, 1, 2]),
        lambda e: ExpandAction(layer="attn.query", count=2, init="zero_outgoing", reason="grow"),
    ],
)
def test_a_width_that_is_not_a_multiple_of_the_head_size_is_refused(tracked, action):
    model, engine, x = tracked
    opt = torch.optim.Adam(model.parameters())
    model(x).sum().backward()
    opt.step()
    before, ids = state_of(model, opt), engine.neurons.state_dict()
    plan = Plan.create([action(engine)], engine.layout)
    with pytest.raises(PlanValidationError) as info:
        engine.apply(plan, optimizer=opt)
    (problem,) = info.value.problems
    assert "'attn.query', 'attn.key', 'attn.value' would have" in problem
    assert "not a multiple of the attention head size 4 ('attn'.attention_head_size)" in problem
    assert_same_state(before, state_of(model, opt))
    assert engine.neurons.state_dict() == ids and engine.surgeries == []


def test_whole_heads_apply(tracked):
    model, engine, x = tracked
    record = engine.apply(Plan.create([prune(engine, "attn.key", [4, 5, 6, 7])], engine.layout))
    assert record.widths_after["attn.query"] == record.widths_after["attn.value"] == 12
    assert model.attn.query.out_features == 12 and torch.isfinite(model(x)).all()


def test_the_layout_asks_for_whole_heads(tracked):
    model, engine, _ = tracked
    layout = engine.model_layout()
    for name in ("attn.query", "attn.key", "attn.value"):
        assert layout.layers[name].width_multiple == model.attn.attention_head_size, name
    assert layout.layers["inp"].width_multiple == 1


def test_a_budget_plan_removes_whole_heads_and_applies(tracked):
    model, _, x = tracked
    before = model(x)
    config = {"policies": [{"name": "budget", "settings": {"target_fraction": 0.6,
                                                           "min_samples": 1}}]}  # fmt: skip
    engine2 = NeuronEngine(model, correlation=True)
    with engine2.tracking():
        model(torch.randn(64, 5, 6))
    plan = engine2.propose(config)
    removed = {a.layer: len(a.local_indices) for a in plan.actions() if a.kind == "prune"}
    removed |= {a.layer: len(a.remove) for a in plan.actions() if a.kind == "fold"}
    size = model.attn.attention_head_size
    assert any(layer.startswith("attn.") for layer in removed), removed
    assert all(n % size == 0 for layer, n in removed.items() if layer.startswith("attn.")), removed
    engine2.apply(plan)
    assert model.attn.query.out_features % size == 0
    assert model(x).shape == before.shape
