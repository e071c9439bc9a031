"""A rejected or failed plan leaves the model, the optimizer and the engine bitwise unchanged."""

from __future__ import annotations

import pytest
import torch
from surgery_models import (
    ResidualCNN,
    Transformer,
    assert_same_state,
    inputs_for,
    plan_for,
    seeded_model,
    state_of,
    trained,
)
from torch import nn

import engine.surgery.actions as surgery_actions
from engine import NeuronEngine
from engine.errors import PlanValidationError, SurgeryError
from engine.plan import ExpandAction, MergeAction, Plan, PruneAction
from engine.surgery import apply_plan

LAYERS = ["0", "2", "4"]


def prune(layer, units, ids=None):
    return PruneAction(layer=layer, local_indices=units, neuron_ids=ids or units, reason="dead")


def merge(layer, keep, remove, base=0):
    return MergeAction(layer=layer, keep=keep, remove=remove, keep_id=base + keep,
                       remove_id=base + remove, alpha=1.0, beta=0.0, correlation=1.0,
                       reason="duplicate")  # fmt: skip


def grow(layer, sources, base=0, init="net2net"):
    return ExpandAction(layer=layer, count=len(sources), init=init, source_indices=sources,
                        source_ids=[base + s for s in sources], reason="saturated")  # fmt: skip


INVALID = {
    "unknown layer": ([("0", 10), ("nope", 8), ("4", 3)], [prune("nope", [0], [10])]),
    "index out of range": ([("0", 14), ("2", 8), ("4", 3)], [merge("0", 1, 12)]),
    "conflicting actions": (None, [prune("0", [3]), merge("0", 1, 3)]),
    "output layer": (None, [prune("4", [0], [18])]),
    "fingerprint": ([("0", 10), ("2", 9), ("4", 3)], [prune("0", [1])]),
    "source removed": (None, [prune("0", [1]), grow("0", [1])]),
    "gradmax without gradients": (None, [grow("0", [1], init="gradmax")]),
}


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_invalid_plans_change_nothing(kind):
    model, opt, x = trained()
    layout, actions = INVALID[kind]
    plan = plan_for(model, LAYERS, actions) if layout is None else Plan.create(actions, layout)
    before = state_of(model, opt)
    with pytest.raises(PlanValidationError) as err:
        apply_plan(model, plan, opt, example_inputs=x)
    assert err.value.problems  # every problem names an action or a layer
    assert_same_state(before, state_of(model, opt))


def test_neuron_ids_are_checked_against_the_engine():
    model, opt, x = trained()
    engine = NeuronEngine(model)
    with engine.tracking():
        model(x)
    engine.apply(plan_for(model, LAYERS, [prune("0", [0])]), opt)  # IDs 1..9 remain in "0"
    stale = plan_for(model, LAYERS, [prune("0", [0], [0])])  # local 0 is now neuron 1
    before = state_of(model, opt)
    with pytest.raises(PlanValidationError, match="local index 0 is neuron 1"):
        engine.apply(stale, opt)
    assert_same_state(before, state_of(model, opt))


def test_emptied_residual_group_is_refused():
    model = seeded_model(ResidualCNN)
    layers = [("stem", 6), ("conv1", 8), ("conv2", 6), ("fc", 4)]
    plan = Plan.create([prune("stem", [0, 1, 2]), prune("conv2", [3, 4, 5], [17, 18, 19])],
                       layers)  # fmt: skip
    before = state_of(model)
    with pytest.raises(PlanValidationError, match="removes all of its units"):
        apply_plan(model, plan, example_inputs=inputs_for(model))
    assert_same_state(before, state_of(model))


def test_attention_head_divisibility_is_checked():
    model = seeded_model(Transformer)
    layers = ["embed", "block.linear1", "block.linear2", "head"]
    plan = Plan.create([prune("block.linear2", [0], [48])], [
        ("embed", 16), ("block.linear1", 32), ("block.linear2", 16), ("head", 3)])  # fmt: skip
    before = state_of(model)
    with pytest.raises(PlanValidationError, match="not divisible by its num_heads=2"):
        apply_plan(model, plan, example_inputs=inputs_for(model))
    assert_same_state(before, state_of(model))
    del layers


def test_lstm_hidden_units_are_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(4, 6, batch_first=True), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])

    model = seeded_model(Net)
    plan = Plan.create([prune("lstm", [0])], [("lstm", 6), ("fc", 2)])
    with pytest.raises(PlanValidationError, match="does not support 'prune'"):
        apply_plan(model, plan, example_inputs=torch.randn(2, 3, 4))


def test_failure_in_the_middle_rolls_everything_back(monkeypatch):
    model, opt, _ = trained()
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking():
        model(torch.randn(64, 6))
    stats = {n: engine.layer_stats(n).moments.mean.clone() for n in engine.layers}
    registry = engine.neurons.state_dict()
    before = state_of(model, opt)
    real = surgery_actions.expand_units
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(surgery_actions, "expand_units", failing)
    plan = engine_plan = plan_for(model, LAYERS, [
        prune("0", [2]), merge("2", 0, 1, base=10), grow("0", [4]), grow("2", [3], base=10),
    ])  # fmt: skip
    with pytest.raises(SurgeryError, match=r"expand\[1\].*injected"):
        engine.apply(plan, opt)
    assert_same_state(before, state_of(model, opt))
    assert engine.neurons.state_dict() == registry
    for n, mean in stats.items():
        assert torch.equal(engine.layer_stats(n).moments.mean, mean)
    assert engine.surgeries == []
    del engine_plan


def test_a_validation_error_mid_plan_is_prefixed_once(monkeypatch):
    model, opt, _ = trained()
    before = state_of(model, opt)

    def refusing(*args, **kwargs):
        raise PlanValidationError(["expand[0] (layer '0'): refused late"])

    monkeypatch.setattr(surgery_actions, "expand_units", refusing)
    plan = plan_for(model, LAYERS, [grow("0", [4])])
    with pytest.raises(PlanValidationError) as info:
        apply_plan(model, plan, opt, example_inputs=torch.randn(4, 6))
    assert str(info.value).count("plan rejected") == 1
    assert info.value.problems == ["expand[0]: expand[0] (layer '0'): refused late"]
    assert_same_state(before, state_of(model, opt))


def test_broken_forward_after_surgery_rolls_back():
    model, opt, x = trained()
    plan = plan_for(model, LAYERS, [prune("0", [2])])
    before = state_of(model, opt)
    calls = {"n": 0}

    def hook(module, args, out):
        calls["n"] += 1
        if module.in_features != 10:  # only after surgery
            raise ValueError("probe failure")

    handle = model[2].register_forward_hook(hook)
    try:
        with pytest.raises(SurgeryError, match=r"prune\[0\].*probe failure"):
            apply_plan(model, plan, opt, example_inputs=x)
    finally:
        handle.remove()
    assert_same_state(before, state_of(model, opt))


def test_tolerance_refuses_a_wrong_exact_claim():
    model, opt, x = trained()
    action = PruneAction(layer="0", local_indices=[2], neuron_ids=[2], reason="constant",
                         constant_values=[0.0])  # fmt: skip  # unit 2 is alive: not exact
    before = state_of(model, opt)
    with pytest.raises(SurgeryError, match="tolerance"):
        apply_plan(model, plan_for(model, LAYERS, [action]), opt, example_inputs=x,
                   tolerance=1e-6)  # fmt: skip
    assert_same_state(before, state_of(model, opt))


def test_no_hook_left_behind_and_modes_restored():
    model, opt, x = trained()
    model.train()
    model[2].eval()
    engine = NeuronEngine(model)
    engine.start()
    try:
        model(x)
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        engine.apply(plan_for(model, LAYERS, [prune("0", [2]), grow("2", [0], base=10)]), opt)
        after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        assert after == hooks and engine.is_tracking
        assert model.training and not model[2].training and model[0].training
    finally:
        engine.stop()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
