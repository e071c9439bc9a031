"""A probe batch without rows measures nothing: it is refused before anything changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.errors import SurgeryError
from engine.plan import Plan, PruneAction
from engine.surgery import apply_plan
from engine.surgery.probe import Probe, check_probe_rows


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))


def _plan() -> Plan:
    return Plan.create(
        [PruneAction(layer="0", local_indices=[1], neuron_ids=[1], reason="dead")],
        [("0", 4), ("2", 2)],
    )


@pytest.mark.parametrize(
    "inputs",
    [torch.zeros(0, 8), (torch.zeros(0, 8),), {"input": torch.zeros(0, 8)}],
    ids=["tensor", "tuple", "mapping"],
)
def test_empty_probe_batch_is_refused_and_nothing_changes(inputs):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        SurgeryError, match=r"probe batch has no rows \(input shapes \[\[0, 8\]\]\)"
    ):
        apply_plan(model, _plan(), example_inputs=inputs)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model[0].out_features == 4


def test_probe_with_rows_still_measures():
    model = _model()
    record = apply_plan(model, _plan(), example_inputs=torch.randn(3, 8))
    assert model[0].out_features == 3 and record.max_output_change_eval is not None


def test_check_probe_rows_judges_batched_tensors_only():
    check_probe_rows((torch.randn(2, 8),))
    check_probe_rows((torch.randn(2, 8), torch.zeros(0, 3)))  # one input has rows
    check_probe_rows((torch.tensor(3.0),))  # no batch axis: not judged
    check_probe_rows(("text",), {"flag": True})  # no tensors: not judged
    with pytest.raises(SurgeryError, match="no rows"):
        check_probe_rows((), {"x": torch.zeros(0, 2), "y": torch.zeros(0)})
    with pytest.raises(SurgeryError, match="no rows"):
        Probe(_model(), (torch.zeros(0, 8),))


def test_the_engine_waits_for_a_batch_with_rows_for_its_probe():
    import torch
    from torch import nn

    from engine import NeuronEngine

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.zeros(0, 3))  # an empty first batch
        model(torch.randn(5, 3))
    assert engine.example_inputs[0].shape == (5, 3)
