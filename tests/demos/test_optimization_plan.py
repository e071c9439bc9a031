"""demos/optimization_plan.py --fast: the plans fit the saved model, the printed CLI commands
redo the planning and the surgery exactly, and the trained model is left as it was."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from demo_loading import load_demo

from engine import NeuronEngine, checkpoint
from engine.cli import main as cli
from engine.plan import Plan

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path, str]:
    with pytest.MonkeyPatch.context() as mp:
        module = load_demo("optimization_plan", mp)
        out = tmp_path_factory.mktemp("optimization_plan") / "out"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert module.main(["--fast", "--out", str(out)]) == 0
        return module, out, printed.getvalue()


def _results(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "results.json").read_text())["plans"]
    return {r["plan"]: r for r in rows}


def _actions(plan: Plan) -> list[dict]:
    return [a.model_dump(mode="json") for a in plan.actions()]


def test_plans_fit_the_saved_model(demo) -> None:
    module, out, _ = demo
    model = checkpoint.load(out / "model.safetensors", factory=module.mlp)  # the trained model
    fingerprint = NeuronEngine(model).fingerprint()
    for name in ("plan.json", "plan_default.json"):
        plan = Plan.load(out / name)
        assert plan.metadata.fingerprint == fingerprint
        assert list(plan.actions()), name


def test_budget_halves_the_hidden_layers_and_keeps_accuracy(demo) -> None:
    _, out, _ = demo
    budget = _results(out)["budget"]
    assert budget["widths_after"] == {"fc1": 64, "fc2": 32, "fc_out": 10}
    assert budget["params_after"] < budget["params_before"] / 2
    assert budget["test_accuracy_after"] >= budget["test_accuracy_before"] - 0.05  # folded
    default = _results(out)["default"]
    assert default["params_after"] <= default["params_before"] == budget["params_before"]


def test_cli_commands_redo_the_planning(demo, tmp_path: Path) -> None:
    _, out, printed = demo
    assert "python -m engine plan" in printed and "python -m engine inspect" in printed
    again = tmp_path / "plan.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["plan", str(out / "stats"), "--config", str(out / "budget.yaml"),
                    "-o", str(again)]) == 0  # fmt: skip
    assert _actions(Plan.load(again)) == _actions(Plan.load(out / "plan.json"))


def test_cli_apply_gives_the_reported_model(demo, tmp_path: Path) -> None:
    module, out, _ = demo
    pruned, record = checkpoint.apply_to_checkpoint(
        out / "plan.json",
        out / "model.safetensors",
        None,
        tmp_path / "pruned.safetensors",
        factory=module.mlp,
    )
    budget = _results(out)["budget"]
    assert record.params_after == budget["params_after"]
    data = module.digits(0, fast=True)
    assert module.accuracy(pruned, data.x_test, data.y_test) == pytest.approx(
        budget["test_accuracy_after"], abs=1e-6
    )
    reloaded = checkpoint.load(tmp_path / "pruned.safetensors", factory=module.mlp)
    for a, b in zip(reloaded.state_dict().values(), pruned.state_dict().values()):
        assert torch.equal(a, b)


def test_remove_is_checked(demo, capsys: pytest.CaptureFixture[str]) -> None:
    module, _, _ = demo
    with pytest.raises(SystemExit):
        module.main(["--remove", "1.0"])
    assert "--remove must be in (0, 1)" in capsys.readouterr().err
