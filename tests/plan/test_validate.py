"""Whole-plan validation against a model layout: every problem named, nothing applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine import NeuronEngine, PlanError, PlanValidationError
from engine.layout import LayerLayout, ModelLayout
from engine.plan import (
    ExpandAction,
    FoldAction,
    MergeAction,
    Plan,
    PruneAction,
    validate_plan,
)

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def _fixture_model_layout() -> ModelLayout:
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip
    engine = NeuronEngine(model)
    return engine.model_layout(example_inputs=torch.randn(4, 784))


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="../shared/fixtures is not beside the repo")
def test_selfmodifying_slm_fixture_loads_but_removing_a_logit_is_refused():
    plan = Plan.load(FIXTURE / "sms_optimization.json")
    layout = _fixture_model_layout()
    with pytest.raises(PlanValidationError) as info:
        validate_plan(plan, layout)
    problems = info.value.problems
    assert any(
        p.startswith("prune[") and "layer '4'" in p and "output layer" in p for p in problems
    )
    assert all("layer '4'" in p for p in problems), problems  # hidden-layer actions are fine
    assert "plan rejected" in str(info.value)


def _layout() -> ModelLayout:
    return ModelLayout(
        {
            "fc": LayerLayout("fc", "Linear", 4, [0, 1, 2, 3]),
            "rnn": LayerLayout("rnn", "LSTM", 3, [4, 5, 6], supports=frozenset()),
            "out": LayerLayout("out", "Linear", 2, [7, 8], is_output=True),
        }
    )


def _prune(layer, idx, **kw):
    return PruneAction(layer=layer, local_indices=idx, neuron_ids=idx, reason="test", **kw)


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ([_prune("nope", [0])], r"prune\[0\] \(layer 'nope'\): no such tracked layer"),
        ([_prune("fc", [4])], r"prune\[0\] \(layer 'fc'\): local indices \[4\] out of range"),
        (
            [_prune("fc", [1]), MergeAction(layer="fc", keep=0, remove=1, keep_id=0, remove_id=1,
                                            alpha=1, beta=0, correlation=1, reason="t")],
            r"merge\[0\] \(layer 'fc'\): unit 1 is already used by prune\[0\]",
        ),
        ([_prune("fc", [0, 1, 2, 3])], r"layer 'fc': the plan removes all of its units"),
        ([_prune("rnn", [0])], r"surgery does not support 'prune' on this LSTM layer"),
        ([_prune("out", [0])], r"prune\[0\] \(layer 'out'\): removes units of an output layer"),
        (
            [ExpandAction(layer="fc", count=1, source_indices=[7], source_ids=[7], reason="t")],
            r"expand\[0\] \(layer 'fc'\): local indices \[7\] out of range",
        ),
    ],
)  # fmt: skip
def test_each_invalid_plan_kind_is_named(actions, message):
    layout = _layout()
    try:
        plan = Plan.create(actions, layout)
    except PlanError:  # a plan file cannot carry it for this layout: made for a wider 'fc'
        plan = Plan.create(actions, [("fc", 8), ("rnn", 3), ("out", 2)])
    with pytest.raises(PlanValidationError, match=message):
        validate_plan(plan, layout)


def test_fingerprint_mismatch_is_a_validation_problem():
    plan = Plan.create([_prune("fc", [0])], [("fc", 5), ("rnn", 3), ("out", 2)])
    with pytest.raises(
        PlanValidationError, match="layer 'fc': 5 units in the plan, 4 in the model"
    ):
        validate_plan(plan, _layout())


def test_valid_plans_pass_and_growth_keeps_a_layer_alive():
    layout = _layout()
    ok = [
        _prune("fc", [0, 1, 2]),
        ExpandAction(layer="fc", count=2, source_indices=[3, 3], source_ids=[3, 3], reason="t"),
    ]
    validate_plan(Plan.create(ok, layout), layout)
    out = PruneAction(layer="out", local_indices=[0], neuron_ids=[7], reason="t")
    validate_plan(Plan.create([out], layout), layout, allow_output_changes=True)


def test_expand_whose_source_the_same_plan_removes_names_both_actions():
    layout = _layout()
    fold = FoldAction(layer="fc", keep=[0, 1], remove=[2], keep_ids=[0, 1], remove_ids=[2],
                      coefficients=[[1.0, 0.0]], mean_keep=[0, 0], mean_remove=[0], ridge=0,
                      reason="t")  # fmt: skip
    grow = ExpandAction(layer="fc", count=2, source_indices=[3, 2], source_ids=[3, 2], reason="t")
    for removing, by in ((_prune("fc", [2]), "prune[0]"), (fold, "merge[0]")):
        with pytest.raises(PlanValidationError) as info:
            validate_plan(Plan.create([removing, grow], layout), layout)
        assert info.value.problems == [
            f"expand[0] (layer 'fc'): source unit 2 is removed by {by} (layer 'fc')"
        ]
    # copying a unit that a fold keeps (reads) is fine
    ok = ExpandAction(layer="fc", count=1, source_indices=[0], source_ids=[0], reason="t")
    validate_plan(Plan.create([fold, ok], layout), layout)


def _residual_layout() -> ModelLayout:
    return ModelLayout(
        {
            "inp": LayerLayout("inp", "Linear", 4, [0, 1, 2, 3], coupled=["f2"]),
            "f1": LayerLayout("f1", "Linear", 6, [4, 5, 6, 7, 8, 9]),
            "f2": LayerLayout("f2", "Linear", 4, [10, 11, 12, 13], coupled=["inp"]),
            "out": LayerLayout("out", "Linear", 2, [14, 15], is_output=True),
        }
    )


def test_residual_coupled_layers_are_one_group_for_emptying_and_sharing():
    layout = _residual_layout()
    ids = {n: layer.neuron_ids for n, layer in layout.layers.items()}

    def prune(name, idx):
        return PruneAction(layer=name, local_indices=idx, neuron_ids=[ids[name][i] for i in idx],
                           reason="t")  # fmt: skip

    with pytest.raises(PlanValidationError) as info:
        validate_plan(Plan.create([prune("inp", [0, 1]), prune("f2", [2, 3])], layout), layout)
    assert info.value.problems == [
        "layers ['f2', 'inp'] (residual-coupled, one unit space): the plan removes all of its units"
    ]
    with pytest.raises(PlanValidationError) as info:
        validate_plan(Plan.create([prune("inp", [0]), prune("f2", [0])], layout), layout)
    assert info.value.problems == [
        "prune[0], prune[1]: layers 'inp', 'f2' are one coupled group: they share one unit "
        "space, so a unit removed from one is removed from all; name one of them (e.g. 'inp')"
    ]
    validate_plan(Plan.create([prune("inp", [0]), prune("f2", [1])], layout), layout)


def test_expanding_an_output_layer_is_refused_unless_allowed():
    layout = _layout()
    plan = Plan.create([ExpandAction(layer="out", count=2, init="zero_outgoing", reason="t")],
                       layout)  # fmt: skip
    with pytest.raises(PlanValidationError) as info:
        validate_plan(plan, layout)
    assert info.value.problems == [
        "expand[0] (layer 'out'): expands an output layer (changes the model's output width)"
    ]
    validate_plan(plan, layout, allow_output_changes=True)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            PruneAction(layer="fc", local_indices=[0, 2], neuron_ids=[0, 99], reason="t"),
            "prune[0] (layer 'fc'): neuron_ids[1] = 99, but local index 2 is neuron 2",
        ),
        (
            MergeAction(layer="fc", keep=0, remove=1, keep_id=5, remove_id=1, alpha=1, beta=0,
                        correlation=1, reason="t"),
            "merge[0] (layer 'fc'): keep_id = 5, but local index 0 is neuron 0",
        ),
        (
            MergeAction(layer="fc", keep=0, remove=1, keep_id=0, remove_id=7, alpha=1, beta=0,
                        correlation=1, reason="t"),
            "merge[0] (layer 'fc'): remove_id = 7, but local index 1 is neuron 1",
        ),
        (
            FoldAction(layer="fc", keep=[0], remove=[1], keep_ids=[3], remove_ids=[1],
                       coefficients=[[1.0]], mean_keep=[0], mean_remove=[0], ridge=0, reason="t"),
            "merge[0] (layer 'fc'): keep_ids[0] = 3, but local index 0 is neuron 0",
        ),
        (
            FoldAction(layer="fc", keep=[0], remove=[1], keep_ids=[0], remove_ids=[8],
                       coefficients=[[1.0]], mean_keep=[0], mean_remove=[0], ridge=0, reason="t"),
            "merge[0] (layer 'fc'): remove_ids[0] = 8, but local index 1 is neuron 1",
        ),
        (
            ExpandAction(layer="rnn", count=1, init="random", source_indices=[1], source_ids=[1],
                         reason="t"),
            "expand[0] (layer 'rnn'): source_ids[0] = 1, but local index 1 is neuron 5",
        ),
    ],
)  # fmt: skip
def test_neuron_ids_are_checked_against_the_layout(action, message):
    layout = _layout()
    with pytest.raises(PlanValidationError) as info:
        validate_plan(Plan.create([action], layout), layout)
    assert message in info.value.problems
