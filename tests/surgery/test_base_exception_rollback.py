"""A KeyboardInterrupt (or any BaseException) in the middle of a plan rolls the whole
transaction back (module, optimizer, statistics, neuron IDs) and propagates unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from surgery_models import assert_same_state, inputs_for, plan_for, state_of, trained

import engine.stats.remap as stats_remap
import engine.surgery.transaction as transaction
from engine import NeuronEngine
from engine.plan import ExpandAction, MergeAction, PruneAction

LAYERS = ["0", "2", "4"]


def setup():
    """A trained MLP, its Adam optimizer with state, and an engine with statistics (some
    batches still pending, not yet flushed) and correlation on."""
    model, opt, _ = trained()
    engine = NeuronEngine(model, correlation=True, flush_every=64)
    with engine.tracking():
        for seed in range(3):
            model(torch.randn(32, 6, generator=torch.Generator().manual_seed(seed)))
    plan = plan_for(model, LAYERS, [
        PruneAction(layer="0", local_indices=[2], neuron_ids=[2], reason="dead"),
        MergeAction(layer="2", keep=0, remove=1, keep_id=10, remove_id=11, alpha=1.0, beta=0.0,
                    correlation=1.0, reason="duplicate"),
        ExpandAction(layer="0", count=1, init="net2net", source_indices=[4], source_ids=[4],
                     reason="saturated"),
    ])  # fmt: skip
    return model, opt, engine, plan


def stats_of(engine: NeuronEngine) -> dict:
    """Every accumulator's whole state (running total, window, co-moments, pending batches,
    shift), copied."""
    return {n: dataclasses.asdict(layer.accumulator.checkpoint()) for n, layer in
            engine.layers.items()}  # fmt: skip


def assert_bitwise(a, b, where="") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_bitwise(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def check_unchanged(model, opt, engine, before, stats, registry) -> None:
    assert_same_state(before, state_of(model, opt))
    assert_bitwise(stats, stats_of(engine), "stats")
    assert engine.neurons.state_dict() == registry
    assert engine.surgeries == []
    params = {id(p) for p in model.parameters()}
    assert params == {id(p) for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_interrupt_after_the_first_action_rolls_everything_back(monkeypatch, error):
    model, opt, engine, plan = setup()
    before, stats, registry = state_of(model, opt), stats_of(engine), engine.neurons.state_dict()
    real, calls = transaction.apply_action, []

    def interrupted(action, ctx):
        calls.append(action.kind)
        if len(calls) == 2:  # the merge, after the prune went through
            raise error("interrupted by the user")
        return real(action, ctx)

    monkeypatch.setattr(transaction, "apply_action", interrupted)
    with pytest.raises(error) as raised:
        engine.apply(plan, opt)
    assert type(raised.value) is error and str(raised.value) == "interrupted by the user"
    assert raised.value.__cause__ is None  # re-raised unchanged, not wrapped
    assert calls == ["prune", "merge"]
    check_unchanged(model, opt, engine, before, stats, registry)
    # nothing half-done is left: the same plan applies cleanly afterwards
    monkeypatch.setattr(transaction, "apply_action", real)
    record = engine.apply(plan, opt)
    assert record.widths_after == {"0": 10, "2": 7, "4": 3}
    opt.zero_grad()
    model(inputs_for(model)).square().mean().backward()
    opt.step()


def test_interrupt_half_way_through_committing_the_statistics(monkeypatch):
    """The statistics are swapped in layer by layer at the very end: an interrupt between two
    layers restores the ones already swapped, and the optimizer remap before them."""
    model, opt, engine, plan = setup()
    before, stats, registry = state_of(model, opt), stats_of(engine), engine.neurons.state_dict()
    real, commits = stats_remap.PreparedRemap.commit, []

    def interrupted(self):
        commits.append(self.accumulator.name)
        if len(commits) == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(stats_remap.PreparedRemap, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.apply(plan, opt)
    assert len(commits) == 2  # one layer's statistics were already remapped
    check_unchanged(model, opt, engine, before, stats, registry)
    monkeypatch.setattr(stats_remap.PreparedRemap, "commit", real)
    with engine.tracking():  # tracking goes on at the old widths
        model(torch.randn(8, 6))
    assert engine.layer_stats("0").moments.mean.shape == (10,)
