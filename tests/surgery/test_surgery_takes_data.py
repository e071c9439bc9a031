"""Surgery without a NeuronEngine: a model, a plan, an optimizer, a probe, a neuron registry
and the layers' accumulators go in; the registry given is never changed (the record carries
its state after the plan), the accumulators follow the units, and any failure leaves all of
them exactly as they were."""

from __future__ import annotations

import pytest
import torch
from surgery_models import assert_same_state, inputs_for, mlp, plan_for, seeded_model, state_of

import engine.surgery.transaction as transaction
from engine.errors import CorrelationLimitError, SurgeryError
from engine.neurons import NeuronRegistry
from engine.plan import ExpandAction, MergeAction, PruneAction
from engine.stats import NeuronAccumulator
from engine.surgery import ProbeInputs, apply_plan

LAYERS = ["0", "2", "4"]


def parts(max_correlation_units: int = 4096):
    model = seeded_model(mlp)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = inputs_for(model)
    model(x).square().mean().backward()
    opt.step()
    registry = NeuronRegistry()
    accumulators = {}
    for name in LAYERS:
        width = model.get_submodule(name).out_features
        registry.add_layer(name, width)
        acc = NeuronAccumulator(
            width, correlation=True, name=name, max_correlation_units=max_correlation_units
        )
        acc.update(torch.randn(32, width, generator=torch.Generator().manual_seed(width)))
        accumulators[name] = acc
    return model, opt, x, registry, accumulators


def actions():
    return [
        PruneAction(layer="0", local_indices=[2], neuron_ids=[2], reason="dead"),
        MergeAction(layer="2", keep=0, remove=1, keep_id=10, remove_id=11, alpha=1.0,
                    beta=0.0, correlation=1.0, reason="duplicate"),
        ExpandAction(layer="0", count=2, init="net2net", source_indices=[4, 5],
                     source_ids=[4, 5], reason="busy"),
    ]  # fmt: skip


def test_registry_is_read_and_its_state_after_is_returned():
    model, opt, x, registry, accumulators = parts()
    before = registry.state_dict()
    means = {n: a.total().mean.clone() for n, a in accumulators.items()}
    record = apply_plan(
        model, plan_for(model, LAYERS, actions()), opt, x, registry=registry,
        accumulators=accumulators, epoch=3,
    )  # fmt: skip
    assert registry.state_dict() == before  # surgery never writes the registry it is given
    after = NeuronRegistry.from_state_dict(record.neurons_after)
    width0 = model[0].out_features
    assert after.size("0") == width0 == 10 - 1 + 2
    assert after.ids("0")[:9] == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert [after.lineage[i]["parent"] for i in after.ids("0")[9:]] == [4, 5]
    assert after.lineage[11] == {"event": "merged", "layer": "2", "into": 10}
    assert after.ages(epoch=5) == dict.fromkeys(after.ids("0")[9:], 2)
    registry.load_state_dict(record.neurons_after)  # the owner commits it
    assert registry.state_dict() == after.state_dict()
    # the statistics followed the units: survivors bitwise, grown units unknown
    acc0 = accumulators["0"]
    assert acc0.num_units == width0
    kept = [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert torch.equal(acc0.total().mean[:9], means["0"][kept])
    assert acc0.total().mean[9:].isnan().all()
    assert torch.equal(accumulators["2"].total().mean, means["2"][[0, *range(2, 8)]])
    assert torch.equal(accumulators["4"].total().mean, means["4"])
    assert "neurons_after" not in record.model_dump(mode="json")  # not written to logs


def test_without_a_registry_ids_come_from_the_plan():
    model, opt, x, _, _ = parts()
    record = apply_plan(model, plan_for(model, LAYERS, actions()), opt, ProbeInputs((x,), {}))
    assert record.neurons_after is None
    assert record.actions[0].removed_ids == [2]
    assert record.widths_after == {"0": 11, "2": 7, "4": 3}


def test_failure_at_commit_leaves_model_optimizer_registry_and_statistics(monkeypatch):
    model, opt, x, registry, accumulators = parts()
    before = state_of(model, opt)
    ids = registry.state_dict()
    stats = {n: (a.num_units, a.total().mean.clone(), a.comoments().c.clone())
             for n, a in accumulators.items()}  # fmt: skip

    def broken(*args, **kwargs):
        raise RuntimeError("optimizer remap failed")

    monkeypatch.setattr(transaction, "remap_optimizer", broken)
    with pytest.raises(SurgeryError, match=r"commit: RuntimeError: optimizer remap failed"):
        apply_plan(model, plan_for(model, LAYERS, actions()), opt, x, registry=registry,
                   accumulators=accumulators)  # fmt: skip
    assert_same_state(before, state_of(model, opt))
    assert registry.state_dict() == ids
    for name, (width, mean, c) in stats.items():
        acc = accumulators[name]
        assert acc.num_units == width
        assert torch.equal(acc.total().mean, mean)
        assert torch.equal(acc.comoments().c, c)


def test_a_statistics_bound_is_checked_before_anything_moves():
    model, opt, x, registry, accumulators = parts(max_correlation_units=10)
    before = state_of(model, opt)
    grow = ExpandAction(layer="0", count=1, init="net2net", source_indices=[0],
                        source_ids=[0], reason="busy")  # fmt: skip
    with pytest.raises(SurgeryError, match="max_correlation_units=10") as info:
        apply_plan(model, plan_for(model, LAYERS, [grow]), opt, x, registry=registry,
                   accumulators=accumulators)  # fmt: skip
    assert isinstance(info.value.__cause__, CorrelationLimitError)
    assert_same_state(before, state_of(model, opt))
    assert accumulators["0"].num_units == 10
