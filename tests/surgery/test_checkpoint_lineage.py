"""A checkpoint records its neuron IDs: a plan applies once, to the state it was made for."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine import NeuronEngine, checkpoint
from engine.cli import main
from engine.errors import FingerprintMismatchError, StalePlanError
from engine.plan import ExpandAction, Plan, PruneAction

LAYOUT = [("0", 6), ("2", 4)]
SPEC = checkpoint.ModelSpec(factory="lineage_test_model")


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 4))


@pytest.fixture(autouse=True)
def registered():
    checkpoint.register_model_factory(SPEC.factory, make_model)
    yield
    checkpoint.unregister_model_factory(SPEC.factory)


def swap(local: int, neuron: int) -> Plan:
    """Remove one unit of layer '0' and grow one: the widths (and fingerprint) stay."""
    return Plan.create([
        PruneAction(layer="0", local_indices=[local], neuron_ids=[neuron], reason="dead"),
        ExpandAction(layer="0", count=1, init="zero_outgoing", reason="saturated"),
    ], LAYOUT)  # fmt: skip


@pytest.fixture
def first(tmp_path):
    """The original checkpoint, a plan applied to it once (out1), and the plan's file."""
    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    swap(1, 1).save(tmp_path / "a.json")
    checkpoint.apply_to_checkpoint(tmp_path / "a.json", tmp_path / "model.pt", SPEC,
                                   tmp_path / "out1.safetensors")  # fmt: skip
    return tmp_path


def raw(path) -> bytes:
    return open(path, "rb").read()


def test_the_ids_recorded_are_the_engines(first):
    engine = NeuronEngine(make_model())
    engine.apply(swap(1, 1), example_inputs=torch.randn(2, 3))
    ids = checkpoint.load_neurons(first / "out1.safetensors")
    assert ids.ids("0") == engine.neurons.ids("0") == [0, 2, 3, 4, 5, 10]
    assert ids.ids("2") == engine.neurons.ids("2") and ids.next_id == engine.neurons.next_id
    assert checkpoint.load_neurons(first / "model.pt") is None  # a plain state dict


def test_the_same_plan_twice_is_refused_by_the_cli_and_nothing_is_written(first, capsys):
    args = ["apply", str(first / "a.json"), str(first / "out1.safetensors"), "--model",
            SPEC.factory, "-o", str(first / "out2.safetensors")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was already applied to" in err
    assert "plan 1 of 1" in err and not (first / "out2.safetensors").exists()
    with pytest.raises(StalePlanError, match="already applied"):
        checkpoint.apply_to_checkpoint(first / "a.json", first / "out1.safetensors", None,
                                       dry_run=True)  # fmt: skip


def test_a_plan_made_before_an_earlier_surgery_is_refused(first, capsys):
    stale = swap(2, 2)  # made for the original model: local 2 was neuron 2, now it is 3
    stale.save(first / "b.json")
    before = raw(first / "out1.safetensors")
    with pytest.raises(StalePlanError) as info:
        checkpoint.apply_to_checkpoint(stale, first / "out1.safetensors", None,
                                       first / "out2.safetensors")  # fmt: skip
    assert isinstance(info.value, FingerprintMismatchError)
    message = str(info.value)
    assert "made for another state of" in message and "1 plan(s) applied" in message
    assert "neuron_ids[0] = 2, but local index 2 is neuron 3" in message
    args = ["apply", str(first / "b.json"), str(first / "out1.safetensors"), "--model",
            SPEC.factory, "-o", str(first / "out2.safetensors")]  # fmt: skip
    assert main(args) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (first / "out2.safetensors").exists() and raw(first / "out1.safetensors") == before


def test_a_fresh_plan_applies_and_the_chain_goes_on(first):
    fresh = swap(2, 3)  # local 2 is neuron 3 after the first plan
    model, _ = checkpoint.apply_to_checkpoint(fresh, first / "out1.safetensors", None,
                                              first / "out2.safetensors")  # fmt: skip
    engine = NeuronEngine(make_model())
    engine.apply(swap(1, 1), example_inputs=torch.randn(2, 3))
    engine.apply(fresh, example_inputs=torch.randn(2, 3))
    assert checkpoint.load_neurons(first / "out2.safetensors").ids("0") == engine.neurons.ids("0")
    rebuilt = checkpoint.load(first / "out2.safetensors")
    x = torch.randn(5, 3)
    assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(StalePlanError, match="plan 1 of 2"):  # the first file, a third time
        checkpoint.apply_to_checkpoint(first / "a.json", first / "out2.safetensors", None,
                                       dry_run=True)  # fmt: skip
    with pytest.raises(StalePlanError, match=r"2 plan\(s\) applied"):  # made again: IDs tell
        checkpoint.apply_to_checkpoint(swap(1, 1), first / "out2.safetensors", None, dry_run=True)


def test_a_file_without_recorded_ids_gets_them_by_replaying_its_plans(first):
    """A file written before the IDs were recorded (header version 1, no "neurons" key) still
    loads, and its IDs are replayed from its plans for the check."""
    tensors, header = checkpoint.load_state(first / "out1.safetensors")
    data = json.loads(header.model_dump_json())
    del data["neurons"]
    data["version"] = 1
    old = first / "old.safetensors"
    save_file(tensors, old, metadata={"format": checkpoint.FORMAT,
                                      "neuron_engine": json.dumps(data)})  # fmt: skip
    assert checkpoint.load_neurons(old) is None
    assert "neuron IDs not recorded" in checkpoint.checkpoint_summary(old)
    x = torch.randn(4, 3)
    assert torch.equal(checkpoint.load(old)(x), checkpoint.load(first / "out1.safetensors")(x))
    with pytest.raises(StalePlanError, match="local index 2 is neuron 3"):
        checkpoint.apply_to_checkpoint(swap(2, 2), old, None, dry_run=True)
    checkpoint.apply_to_checkpoint(swap(2, 3), old, None, first / "new.safetensors")
    assert checkpoint.load_neurons(first / "new.safetensors").ids("0") == [0, 2, 4, 5, 10, 11]
