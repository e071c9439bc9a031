"""Apply a saved plan to a checkpoint; rebuild the result from its spec without pickle."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine import checkpoint
from engine.cli import main
from engine.errors import PlanValidationError
from engine.plan import ExpandAction, MergeAction, Plan, PruneAction
from engine.surgery import apply_plan


def make_model(width: int = 10) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 8), nn.ReLU(),
                         nn.Linear(8, 3))  # fmt: skip


SPEC = checkpoint.ModelSpec(factory="checkpoint_test_model", kwargs={"width": 10})
LAYOUT = [("0", 10), ("2", 8), ("4", 3)]


@pytest.fixture(autouse=True)
def registered():
    """The tests' own code registers the factory their checkpoints name."""
    checkpoint.register_model_factory(SPEC.factory, make_model)
    yield
    checkpoint.unregister_model_factory(SPEC.factory)


def plan() -> Plan:
    return Plan.create([
        PruneAction(layer="0", local_indices=[1, 4], neuron_ids=[1, 4], reason="dead"),
        MergeAction(layer="2", keep=0, remove=3, keep_id=10, remove_id=13, alpha=0.7, beta=0.1,
                    correlation=0.9, reason="redundant"),
        ExpandAction(layer="2", count=2, init="net2net", source_indices=[1, 2],
                     source_ids=[11, 12], reason="saturated"),
    ], LAYOUT)  # fmt: skip


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "nested-pt"])
def test_apply_to_checkpoint_matches_live_surgery(tmp_path, fmt):
    trained = make_model()
    ckpt = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file(trained.state_dict(), ckpt)
    elif fmt == "pt":
        torch.save(trained.state_dict(), ckpt)
    else:
        torch.save({"model": trained.state_dict(), "epoch": 3}, ckpt)
    p = tmp_path / "plan.json"
    plan().save(p)
    before = digest(ckpt)
    out = tmp_path / "out.safetensors"
    live = make_model()
    example = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    apply_plan(live, plan(), example_inputs=example)
    model, record = checkpoint.apply_to_checkpoint(p, ckpt, SPEC, out)
    assert digest(ckpt) == before  # the input is untouched
    rebuilt = checkpoint.load(out)
    x = torch.randn(32, 6)
    assert torch.equal(rebuilt(x), live(x)) and torch.equal(model(x), live(x))
    assert record.widths_after == {"0": 8, "2": 9, "4": 3}
    # a second plan on top of the modified checkpoint: replayed, then applied
    second = Plan.create([PruneAction(layer="0", local_indices=[0], neuron_ids=[0],
                                      reason="dead")], [("0", 8), ("2", 9), ("4", 3)])  # fmt: skip
    second.save(tmp_path / "second.json")
    checkpoint.apply_to_checkpoint(tmp_path / "second.json", out, None, tmp_path / "o2.st")
    assert checkpoint.load(tmp_path / "o2.st")[0].out_features == 7


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"0.weight": Payload()}, f)
    evil2 = tmp_path / "evil2.pt"
    torch.save({"weights": make_model().state_dict(), "obj": Payload()}, evil2)
    for path in (bad, evil2):
        with pytest.raises(checkpoint.CheckpointError, match=r"refused|not a safetensors"):
            checkpoint.load_state(path)


def test_cli_apply_dry_run_and_errors(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    torch.save(make_model().state_dict(), ckpt)
    plan().save(tmp_path / "plan.json")
    args = ["apply", str(tmp_path / "plan.json"), str(ckpt), "--model", SPEC.factory,
            "--kwargs", '{"width": 10}']  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "merge[0]" in out and not list(tmp_path.glob("*.safetensors"))
    assert main([*args, "-o", str(tmp_path / "o.safetensors")]) == 0
    assert (tmp_path / "o.safetensors").is_file()
    bad_kwargs = [*args[:-1], "{width"]
    assert main([*bad_kwargs, "-o", str(tmp_path / "x.st")]) == 2
    assert "--kwargs is not JSON" in capsys.readouterr().err
    wrong = ["apply", str(tmp_path / "plan.json"), str(ckpt), "--model", SPEC.factory,
             "--kwargs", '{"width": 12}', "-o", str(tmp_path / "y.st")]  # fmt: skip
    assert main(wrong) == 2
    err = capsys.readouterr().err
    assert "weights do not fit" in err and len(err.strip().splitlines()) == 1
    assert main(["apply", str(tmp_path / "plan.json"), str(ckpt), "-o", "z"]) == 2
    assert "names no model" in capsys.readouterr().err
    imported = ["apply", str(tmp_path / "plan.json"), str(ckpt), "--model",
                f"{__name__}:make_model", "--kwargs", '{"width": 10}', "--dry-run"]  # fmt: skip
    assert main(imported) == 0  # MODULE:FUNCTION typed by the user is imported


def test_stale_plan_on_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "model.pt"
    torch.save(make_model(width=12).state_dict(), ckpt)
    plan().save(tmp_path / "plan.json")
    spec = checkpoint.ModelSpec(factory=SPEC.factory, kwargs={"width": 12})
    with pytest.raises(PlanValidationError, match="layer '0' with 10 units"):
        checkpoint.apply_to_checkpoint(tmp_path / "plan.json", ckpt, spec, tmp_path / "o.st")
    assert not (tmp_path / "o.st").exists()


def test_cli_inspect_summarises_a_checkpoint(tmp_path, capsys):
    from engine.cli import main

    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    plan().save(tmp_path / "plan.json")
    checkpoint.apply_to_checkpoint(tmp_path / "plan.json", tmp_path / "model.pt", SPEC,
                                   tmp_path / "out.safetensors")  # fmt: skip
    assert main(["inspect", str(tmp_path / "out.safetensors")]) == 0
    text = capsys.readouterr().out
    assert f"model {SPEC.factory} " in text and "plans applied: 1" in text
    assert "  0.weight  [8, 6]" in text
    assert main(["inspect", str(tmp_path / "model.pt")]) == 0
    assert "no engine header" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_probe_file_measures_the_output_change_on_real_inputs(tmp_path, capsys, fmt):
    import numpy as np

    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    plan().save(tmp_path / "plan.json")
    inputs = torch.rand(32, 6)  # another range than the default N(0, 1) probe
    if fmt == "npy":
        np.save(tmp_path / "probe.npy", inputs.numpy())
    else:
        save_file({"inputs": inputs, "labels": torch.zeros(32)}, tmp_path / "probe.safetensors")
    probe = checkpoint.load_probe(tmp_path / f"probe.{fmt}")
    assert torch.equal(probe, inputs)
    model, record = checkpoint.apply_to_checkpoint(
        tmp_path / "plan.json", tmp_path / "model.pt", SPEC, tmp_path / "out.safetensors",
        probe=probe,
    )  # fmt: skip
    with torch.no_grad():
        measured = (model(inputs) - make_model()(inputs)).abs().max().item()
    assert record.max_output_change_eval == pytest.approx(measured, rel=1e-5, abs=1e-7)
    assert checkpoint.load(tmp_path / "out.safetensors")(inputs).shape == (32, 3)
    args = ["apply", str(tmp_path / "plan.json"), str(tmp_path / "model.pt"), "--model",
            SPEC.factory, "--kwargs", '{"width": 10}', "--dry-run",
            "--probe", str(tmp_path / f"probe.{fmt}")]  # fmt: skip
    assert main(args) == 0
    assert f"max output change {record.max_output_change_eval}" in capsys.readouterr().out


def test_bad_probe_files_are_refused_with_the_reason(tmp_path, capsys):
    import numpy as np

    save_file({"a": torch.zeros(2, 6), "b": torch.zeros(2, 6)}, tmp_path / "two.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match=r"one tensor, or one named 'inputs'"):
        checkpoint.load_probe(tmp_path / "two.safetensors")
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(checkpoint.CheckpointError, match="not a plain numeric"):
        checkpoint.load_probe(tmp_path / "objects.npy")
    save_file({"inputs": torch.zeros(())}, tmp_path / "scalar.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="batch axis"):
        checkpoint.load_probe(tmp_path / "scalar.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    plan().save(tmp_path / "plan.json")
    junk = str(tmp_path / "junk.safetensors")
    code = main(["apply", str(tmp_path / "plan.json"), str(tmp_path / "model.pt"), "--model",
                 SPEC.factory, "--dry-run", "--probe", junk])  # fmt: skip
    assert code == 2 and "junk.safetensors" in capsys.readouterr().err
