"""The command-line interface: ``inspect`` and ``report`` on saved snapshots, and bad input."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.cli import main


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(encoder=nn.Linear(4, 8), act=nn.ReLU(), head=nn.Linear(8, 3)))
    with torch.no_grad():  # a planted duplicate unit in the encoder
        model.encoder.weight[5] = model.encoder.weight[0]
        model.encoder.bias[5] = model.encoder.bias[0]
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        model(torch.randn(128, 4))
    return engine.snapshot().save(tmp_path_factory.mktemp("cli") / "stats")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _assert_one_line_error(capsys, path: Path) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert str(path) in err
    assert "Traceback" not in err


def test_help_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "inspect" in done.stdout
    assert "report" in done.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_inspect_prints_the_layer_summary(snapshot_dir, capsys):
    assert main(["inspect", str(snapshot_dir)]) == 0
    out = capsys.readouterr().out
    assert "DATASET-LEVEL NEURON ANALYSIS REPORT" in out
    assert "encoder" in out
    assert "head" in out
    assert "Samples processed: 128" in out


def test_report_prints_the_full_report(snapshot_dir, capsys):
    assert main(["report", str(snapshot_dir), "--top", "3", "--threshold", "0.99"]) == 0
    out = capsys.readouterr().out
    assert "TOP 3 MOST ACTIVE NEURONS" in out
    assert "NEURON CORRELATION ANALYSIS REPORT" in out
    assert "(0, 5)" in out  # the planted duplicate
    assert "encoder" in out


def test_report_writes_a_file(snapshot_dir, tmp_path, capsys):
    target = tmp_path / "out" / "report.txt"
    assert main(["report", str(snapshot_dir), "-o", str(target), "--limit", "2"]) == 0
    assert str(target) in capsys.readouterr().out
    text = target.read_text()
    assert "COMPREHENSIVE NEURON ACTIVITY REPORT" in text
    assert "more neurons not shown (limit=2)" in text


def test_missing_folder_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 2
    _assert_one_line_error(capsys, missing)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"format": "something else"}', bytes(range(256))],
    ids=["invalid-json", "wrong-format", "binary"],
)
def test_corrupt_summary_exits_2(snapshot_dir, tmp_path, capsys, content):
    bad = _copy(snapshot_dir, tmp_path / "bad")
    (bad / "summary.json").write_bytes(content)
    assert main(["inspect", str(bad)]) == 2
    _assert_one_line_error(capsys, bad / "summary.json")


def test_corrupt_arrays_exit_2(snapshot_dir, tmp_path, capsys):
    bad = _copy(snapshot_dir, tmp_path / "bad")
    (bad / "stats.safetensors").write_bytes(b"\x00garbage")
    assert main(["report", str(bad)]) == 2
    _assert_one_line_error(capsys, bad / "stats.safetensors")


def test_unwritable_output_exits_2(snapshot_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(snapshot_dir), "-o", str(blocker / "report.txt")]) == 2
    _assert_one_line_error(capsys, blocker)


def test_bad_option_values_are_usage_errors(snapshot_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(snapshot_dir), "--threshold", "1.5"])
    assert exc.value.code == 2
    assert "expected a number in [0, 1]" in capsys.readouterr().err


def test_deeply_nested_plan_file_exits_2(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["inspect", str(deep)]) == 2
    _assert_one_line_error(capsys, deep)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("{remove_fraction: 0.5, ridge: .inf}", "ridge = inf: Input should be a finite number"),
        ("{remove_fraction: 0.5, ridge: .nan}", "ridge = nan: Input should be a finite number"),
        ("{remove_fraction: 0.5, ridge: 0}", "ridge = 0: Input should be greater than 0"),
        ("{fractions: {encoder: .nan}}", "fractions.encoder = nan: Input should be a finite"),
    ],
)
def test_non_finite_or_zero_budget_settings_exit_2(snapshot_dir, tmp_path, capsys, settings,
                                                    message):  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policies:\n  - name: budget\n    settings: {settings}\n")
    assert main(["plan", str(snapshot_dir), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("growth_fraction: .inf", "growth_fraction = inf: Input should be a finite number"),
        ("max_growth_factor: .inf", "max_growth_factor = inf: Input should be a finite number"),
        ("growth_fraction: 1.0e+308", "growth_fraction = 1e+308: Input should be less than or"),
        ("max_growth_factor: 1.0e+308", "max_growth_factor = 1e+308: Input should be less than"),
    ],
)
def test_infinite_or_huge_growth_settings_exit_2(snapshot_dir, tmp_path, capsys, settings,
                                                 message):  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policies:\n  - name: saturation\n    settings: {{{settings}}}\n")
    assert main(["plan", str(snapshot_dir), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_largest_growth_settings_plan_fine(snapshot_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "policies:\n  - name: saturation\n"
        "    settings: {unit_firing_rate: 0.0, layer_fraction: 0.0, min_samples: 1,\n"
        "               growth_fraction: 100, max_growth_factor: 1000}\n"
    )
    assert main(["plan", str(snapshot_dir), "--config", str(cfg)]) == 0
    assert '"expand_units": 800' in capsys.readouterr().out  # encoder: 8 units, 100-fold


def _raiser(exc: BaseException):
    def command(args):
        raise exc

    return command


def _validation_error():
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        x: int

    try:
        M(x="nope")
    except ValidationError as exc:
        return exc
    raise AssertionError  # pragma: no cover


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (_validation_error(), "invalid M: x: Input should be a valid integer"),
        (torch.linalg.LinAlgError("singular"), "numerical failure on these statistics (singular)"),
        (OverflowError("cannot convert float infinity to integer"), "OverflowError: cannot"),
        (RecursionError("deep"), "input nested too deeply"),
        (ValueError("bad\nvalue"), "ValueError: bad value"),
    ],
    ids=["validation", "linalg", "overflow", "recursion", "value"],
)
def test_input_errors_raised_by_a_command_exit_2_with_one_line(
    snapshot_dir, capsys, monkeypatch, exc, message
):
    monkeypatch.setattr("engine.cli._cmd_inspect", _raiser(exc))
    assert main(["inspect", str(snapshot_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(snapshot_dir) in err, err


def test_real_bugs_keep_their_traceback(snapshot_dir, monkeypatch):
    monkeypatch.setattr("engine.cli._cmd_inspect", _raiser(KeyError("bug")))
    with pytest.raises(KeyError):
        main(["inspect", str(snapshot_dir)])
