"""Whole-plan validation against a model layout: every problem named, nothing applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine import NeuronEngine, PlanValidationError
from engine.layout import LayerLayout, ModelLayout
from engine.plan import ExpandAction, MergeAction, Plan, PruneAction, validate_plan

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
        ([_prune("fc", [1, 1])], r"prune\[0\] \(layer 'fc'\): units \[1\] appear more than once"),
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
    plan = Plan.create(actions, layout)
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
    validate_plan(Plan.create([_prune("out", [0])], layout), layout, allow_output_changes=True)
