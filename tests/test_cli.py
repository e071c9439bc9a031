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
