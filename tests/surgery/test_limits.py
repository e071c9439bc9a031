"""Coefficients and sizes that would give non-finite or absurd tensors are refused, naming the
action, and the model, optimizer, statistics and neuron IDs stay bitwise as they were."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from surgery_models import assert_same_state, plan_for, state_of, trained

import engine.surgery.checks as checks
import engine.surgery.limits as limits
from engine import NeuronEngine
from engine.errors import PlanValidationError, SurgeryError
from engine.plan import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery import apply_plan

LAYERS = ["0", "2", "4"]


def merge(alpha: float, beta: float = 0.0) -> MergeAction:
    return MergeAction(layer="0", keep=0, remove=1, keep_id=0, remove_id=1, alpha=alpha,
                       beta=beta, correlation=0.9, reason="duplicate")  # fmt: skip


def grow(count: int) -> ExpandAction:
    return ExpandAction(layer="2", count=count, init="zero_outgoing", reason="saturated")


def engine_state(engine: NeuronEngine) -> tuple[dict, dict]:
    stats = {n: dataclasses.asdict(layer.accumulator.checkpoint())
             for n, layer in engine.layers.items()}  # fmt: skip
    return stats, engine.neurons.state_dict()


def assert_same(a, b) -> None:
    if torch.is_tensor(a):
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (merge(1e300), r"merge\[0\] \(layer '0'\): coefficients up to 1e\+300 .* past the "
                       r"largest float32"),
        (merge(1.0, beta=-1e300), r"merge\[0\] \(layer '0'\): coefficients up to 1e\+300"),
        (grow(10**12), r"expand\[0\] \(layer '2'\): growing by 1000000000000 units would give "
                       r"'2'.weight 10,000,000,000,080 elements .* over the limit of "
                       r"2,147,483,648"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("measure", ["none", "action"])
def test_the_issues_probes_are_refused_and_nothing_changes(action, message, measure):
    model, opt, x = trained()
    engine = NeuronEngine(model)
    with engine.tracking():
        model(x)
    before, tracked = state_of(model, opt), engine_state(engine)
    with pytest.raises(PlanValidationError, match=message):
        engine.apply(plan_for(model, LAYERS, [action]), optimizer=opt, example_inputs=x,
                     measure=measure)  # fmt: skip
    assert_same_state(before, state_of(model, opt))
    assert_same(tracked, engine_state(engine))
    assert engine.surgeries == []


def test_fold_coefficients_that_overflow_are_refused():
    model, opt, x = trained()
    fold = FoldAction(layer="0", keep=[0, 2], remove=[1], keep_ids=[0, 2], remove_ids=[1],
                      coefficients=[[1e40, 0.0]], mean_keep=[0.0, 0.0], mean_remove=[0.0],
                      ridge=0.0, reason="redundant")  # fmt: skip
    before = state_of(model, opt)
    with pytest.raises(PlanValidationError, match=r"merge\[0\] \(layer '0'\): coefficients up"):
        apply_plan(model, plan_for(model, LAYERS, [fold]), opt, x, measure="none")
    assert_same_state(before, state_of(model, opt))


def test_sensible_values_still_apply():
    model, opt, x = trained()
    plan = plan_for(model, LAYERS, [merge(3.0, beta=0.5), grow(1000)])
    record = apply_plan(model, plan, opt, x, measure="none")
    assert record.widths_after["2"] == 1008
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_limit_can_be_changed(monkeypatch):
    model, opt, x = trained()
    monkeypatch.setattr(limits, "MAX_TENSOR_ELEMENTS", 100)
    with pytest.raises(PlanValidationError, match="over the limit of 100 "):
        apply_plan(model, plan_for(model, LAYERS, [grow(3)]), opt, x)


def test_the_catch_all_rolls_back_anything_non_finite(monkeypatch):
    """Past the static bound (here switched off), the finiteness check after each action
    refuses the result with a SurgeryError naming the action and the tensor."""
    model, opt, x = trained()
    monkeypatch.setattr(checks, "coefficient_problems", lambda labelled, groups: [])
    before = state_of(model, opt)
    plan = plan_for(model, LAYERS, [
        PruneAction(layer="2", local_indices=[0], neuron_ids=[10], reason="dead"), merge(1e300),
    ])  # fmt: skip
    with pytest.raises(
        SurgeryError, match=r"merge\[0\]: wrote non-finite values into \['2.weight'\]"
    ):
        apply_plan(model, plan, opt, x, measure="none")
    assert_same_state(before, state_of(model, opt))
