"""A checkpoint never chooses code: the factory named in its header is only looked up among
the factories the user registered or gave (``--model``, ``factory=``); nothing is imported or
called because a file says so."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from engine import checkpoint
from engine.checkpoint_factories import factory_name, get_model_factory, resolve_factory
from engine.cli import main
from engine.errors import ConfigurationError, ModelFactoryError
from engine.plan import Plan, PruneAction

REPO = Path(__file__).resolve().parents[1]
LAYOUT = [("0", 5), ("2", 2)]


def make_model(width: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def prune_plan() -> Plan:
    action = PruneAction(layer="0", local_indices=[1], neuron_ids=[1], reason="dead")
    return Plan.create([action], LAYOUT)


@pytest.fixture
def registry():
    """Registers factories for one test and removes them afterwards."""
    names: list[str] = []

    def register(name, fn):
        checkpoint.register_model_factory(name, fn)
        names.append(name)
        return fn

    yield register
    for name in names:
        checkpoint.unregister_model_factory(name)


def write_header(path: Path, factory: str, kwargs: dict, tensors=None) -> Path:
    """A checkpoint in our format whose header names ``factory`` (bypassing every check)."""
    header = {"format": checkpoint.FORMAT, "version": 1,
              "model": {"factory": factory, "kwargs": kwargs}, "input_shape": [2, 3],
              "input_dtype": "float32", "plans": []}  # fmt: skip
    state = tensors if tensors is not None else make_model().state_dict()
    meta = {"format": checkpoint.FORMAT, "neuron_engine": json.dumps(header)}
    path.write_bytes(safetensors_bytes({k: v.contiguous() for k, v in state.items()}, meta))
    return path


def hostile(tmp_path: Path) -> list[tuple[str, dict, str]]:
    """(factory, kwargs, module): headers that would run a command or import a module."""
    marker = tmp_path / "pwned"
    return [
        ("subprocess:run", {"args": ["touch", str(marker)]}, "subprocess"),
        ("os:system", {"command": f"touch {marker}"}, "os"),
        ("builtins:eval", {"source": f"open({str(marker)!r}, 'w')"}, "builtins"),
        ("builtins:exec", {"source": f"open({str(marker)!r}, 'w')"}, "builtins"),
        ("this:s", {}, "this"),  # the Zen of Python: prints when imported, never is here
        ("tabnanny:check", {"file": str(marker)}, "tabnanny"),
    ]


@pytest.fixture
def no_imports(monkeypatch):
    """Records every importlib.import_module call; the test asserts on the names."""
    calls: list[str] = []
    real = importlib.import_module

    def recording(name, package=None):
        calls.append(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", recording)
    return calls


def test_hostile_headers_import_nothing_and_run_nothing(tmp_path, no_imports, capsys):
    assert "this" not in sys.modules and "tabnanny" not in sys.modules
    prune_plan().save(tmp_path / "plan.json")
    for i, (factory, kwargs, module) in enumerate(hostile(tmp_path)):
        path = write_header(tmp_path / f"evil{i}.safetensors", factory, kwargs)
        with pytest.raises(ModelFactoryError) as err:
            checkpoint.load(path)
        assert err.value.name == factory and f"{factory!r} is not registered" in str(err.value)
        assert "register_model_factory" in str(err.value) and "--model" in str(err.value)
        with pytest.raises(ModelFactoryError):
            checkpoint.apply_to_checkpoint(tmp_path / "plan.json", path, None, tmp_path / "o")
        code = main(["apply", str(tmp_path / "plan.json"), str(path), "-o", str(tmp_path / "o")])
        err_text = capsys.readouterr().err
        assert code == 2 and len(err_text.strip().splitlines()) == 1
        assert f"model factory {factory!r} is not registered" in err_text
        assert "--model MODULE:FUNCTION" in err_text and str(path) in err_text
        assert module not in no_imports
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o").exists()
    assert "this" not in sys.modules and "tabnanny" not in sys.modules
    assert capsys.readouterr().out == ""  # `this` was not imported: nothing printed


def test_the_real_cli_refuses_a_hostile_checkpoint(tmp_path):
    """``python -m engine apply PLAN CKPT -o OUT`` in its own process, as an attacker hopes."""
    marker = tmp_path / "pwned"
    evil = write_header(tmp_path / "evil.safetensors", "subprocess:run",
                        {"args": ["touch", str(marker)]})  # fmt: skip
    prune_plan().save(tmp_path / "plan.json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "engine", "apply", str(tmp_path / "plan.json"), str(evil),
         "-o", str(tmp_path / "out.safetensors")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "model factory 'subprocess:run' is not registered" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("factory", ["os.system('id')", "__import__('os')", "a b:c", "x:y:z",
                                     "", "a" * 300, "mod:"])  # fmt: skip
def test_names_that_are_not_plain_names_are_malformed_headers(tmp_path, factory, no_imports):
    path = write_header(tmp_path / "bad.safetensors", factory, {})
    with pytest.raises(checkpoint.CheckpointError, match="malformed neuron-engine header"):
        checkpoint.load(path)
    assert no_imports == []


def test_registry_api_checks_names_and_conflicts(registry):
    fn = registry("tests_net", make_model)
    assert (
        get_model_factory("tests_net") is fn
        and "tests_net" in checkpoint.registered_model_factories()
    )
    checkpoint.register_model_factory("tests_net", make_model)  # the same function again: fine
    with pytest.raises(
        ConfigurationError, match=r"'tests_net' is already registered to .*make_model"
    ):
        checkpoint.register_model_factory("tests_net", nn.Linear)
    checkpoint.register_model_factory("tests_net", nn.Linear, replace=True)
    assert get_model_factory("tests_net") is nn.Linear
    with pytest.raises(ConfigurationError, match="invalid model factory name 'bad name'"):
        checkpoint.register_model_factory("bad name", make_model)
    with pytest.raises(ConfigurationError, match="expected a callable"):
        checkpoint.register_model_factory("tests_not_callable", 42)

    @checkpoint.register_model_factory("tests_decorated")
    def decorated(width: int = 4) -> nn.Module:
        return nn.Linear(3, width)

    try:
        assert get_model_factory("tests_decorated") is decorated and decorated().out_features == 4
        assert factory_name(decorated) == "tests_decorated"
    finally:
        assert checkpoint.unregister_model_factory("tests_decorated") is decorated
    assert checkpoint.unregister_model_factory("tests_decorated") is None
    with pytest.raises(ModelFactoryError, match="'tests_decorated' is not registered"):
        get_model_factory("tests_decorated")


def test_registered_factory_through_the_api(tmp_path, registry):
    registry("tests_mlp", make_model)
    torch.save(make_model(6).state_dict(), tmp_path / "model.pt")
    plan = Plan.create([PruneAction(layer="0", local_indices=[0], neuron_ids=[0], reason="dead")],
                       [("0", 6), ("2", 2)])  # fmt: skip
    spec = checkpoint.ModelSpec(factory="tests_mlp", kwargs={"width": 6})
    model, _ = checkpoint.apply_to_checkpoint(plan, tmp_path / "model.pt", spec,
                                              tmp_path / "out.safetensors")  # fmt: skip
    rebuilt = checkpoint.load(tmp_path / "out.safetensors")  # the header's name, registered
    x = torch.randn(4, 3)
    assert rebuilt[0].out_features == 5 and torch.equal(rebuilt(x), model(x))
    _, header = checkpoint.load_state(tmp_path / "out.safetensors")
    assert header.model.factory == "tests_mlp" and header.model.kwargs == {"width": 6}
    # a second plan on our checkpoint: factory and kwargs from the header, through the registry
    # (unit 1 is neuron 2 now: neuron 0 went in the first plan)
    second = Plan.create([PruneAction(layer="0", local_indices=[1], neuron_ids=[2],
                                      reason="dead")], LAYOUT)  # fmt: skip
    checkpoint.apply_to_checkpoint(second, tmp_path / "out.safetensors", None,
                                   tmp_path / "o2.safetensors")  # fmt: skip
    assert checkpoint.load(tmp_path / "o2.safetensors")[0].out_features == 4


def test_registered_factory_through_the_cli(tmp_path, registry, capsys, monkeypatch):
    registry("tests_mlp", make_model)
    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    prune_plan().save(tmp_path / "plan.json")
    out = tmp_path / "out.safetensors"
    # a plain state dict names no model: --model NAME picks the registered factory
    assert main(["apply", str(tmp_path / "plan.json"), str(tmp_path / "model.pt"),
                 "--model", "tests_mlp", "-o", str(out)]) == 0  # fmt: skip
    assert checkpoint.load_state(out)[1].model.factory == "tests_mlp"
    # our checkpoint names it: no --model needed when it is registered
    second = Plan.create([PruneAction(layer="0", local_indices=[0], neuron_ids=[0],
                                      reason="dead")], [("0", 4), ("2", 2)])  # fmt: skip
    second.save(tmp_path / "second.json")
    assert main(["apply", str(tmp_path / "second.json"), str(out), "-o",
                 str(tmp_path / "o2.safetensors")]) == 0  # fmt: skip
    assert checkpoint.load(tmp_path / "o2.safetensors")[0].out_features == 3
    capsys.readouterr()
    # --import: a module of the user's registers the factory the checkpoint names
    checkpoint.unregister_model_factory("tests_mlp")
    assert main(["apply", str(tmp_path / "second.json"), str(out), "--dry-run"]) == 2
    assert "'tests_mlp' is not registered" in capsys.readouterr().err
    (tmp_path / "user_models_for_tests.py").write_text(
        "from torch import nn\nfrom engine.checkpoint import register_model_factory\n\n"
        "@register_model_factory('tests_mlp')\n"
        "def make(width=5):\n    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), "
        "nn.Linear(width, 2))\n"
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_models_for_tests", raising=False)
    try:
        assert main(["apply", str(tmp_path / "second.json"), str(out), "--import",
                     "user_models_for_tests", "--dry-run"]) == 0  # fmt: skip
        assert "DRY RUN" in capsys.readouterr().out
    finally:
        checkpoint.unregister_model_factory("tests_mlp")
    assert main(["apply", str(tmp_path / "second.json"), str(out), "--import", "no_such_mod_x",
                 "--dry-run"]) == 2  # fmt: skip
    assert "--import no_such_mod_x" in capsys.readouterr().err


def test_old_checkpoints_load_when_the_user_supplies_the_factory(tmp_path, registry, capsys):
    """Files written before the registry name ``package.module:callable``: loadable with the
    factory given, or registered under that name; the CLI's --model uses the header's kwargs."""
    old = tmp_path / "old.safetensors"
    write_header(old, "mypkg.models:make_mlp", {"width": 4}, make_model(4).state_dict())
    with pytest.raises(ModelFactoryError, match=r"'mypkg\.models:make_mlp' is not registered"):
        checkpoint.load(old)
    x = torch.randn(3, 3)
    assert torch.equal(checkpoint.load(old, factory=make_model)(x), make_model(4)(x))
    registry("mypkg.models:make_mlp", make_model)
    assert checkpoint.load(old)[0].out_features == 4
    checkpoint.unregister_model_factory("mypkg.models:make_mlp")
    plan = Plan.create([PruneAction(layer="0", local_indices=[3], neuron_ids=[3],
                                    reason="dead")], [("0", 4), ("2", 2)])  # fmt: skip
    plan.save(tmp_path / "plan.json")
    out = tmp_path / "out.safetensors"
    assert main(["apply", str(tmp_path / "plan.json"), str(old), "--model",
                 f"{__name__}:make_model", "-o", str(out)]) == 0  # fmt: skip
    _, header = checkpoint.load_state(out)
    assert header.model.factory == f"{__name__}:make_model"  # the user's choice is recorded
    assert header.model.kwargs == {"width": 4}  # from the old header: no --kwargs needed
    assert checkpoint.load(out, factory=make_model)[0].out_features == 3


def test_factory_errors_name_the_factory(tmp_path, registry):
    registry("tests_not_a_module", lambda: "a string")
    with pytest.raises(
        ConfigurationError, match=r"'tests_not_a_module' returned str, not nn\.Module"
    ):
        checkpoint.ModelSpec(factory="tests_not_a_module").build()
    registry("tests_mlp", make_model)
    with pytest.raises(ConfigurationError, match=r"'tests_mlp' with \{'depth': 3\}"):
        checkpoint.ModelSpec(factory="tests_mlp", kwargs={"depth": 3}).build()
    with pytest.raises(ConfigurationError, match="'no_colon_unregistered' is not registered"):
        resolve_factory("no_colon_unregistered")
    with pytest.raises(ConfigurationError, match="'no_such_pkg_x:f'"):
        resolve_factory("no_such_pkg_x:f")
    with pytest.raises(ConfigurationError, match="invalid model factory name"):
        resolve_factory("os.system('id')")
    torch.save(make_model().state_dict(), tmp_path / "model.pt")
    with pytest.raises(ConfigurationError, match="a plain state dict names no model"):
        checkpoint.apply_to_checkpoint(prune_plan(), tmp_path / "model.pt", None, None)
    out = tmp_path / "o.safetensors"
    checkpoint.apply_to_checkpoint(prune_plan(), tmp_path / "model.pt", None, out,
                                   factory=make_model)  # fmt: skip
    assert checkpoint.load_state(out)[1].model.factory == "tests_mlp"  # its registered name
    checkpoint.unregister_model_factory("tests_mlp")
    checkpoint.apply_to_checkpoint(prune_plan(), tmp_path / "model.pt", None, out,
                                   factory=make_model)  # fmt: skip
    assert checkpoint.load_state(out)[1].model.factory == f"{__name__}:make_model"
