"""Every bad ``apply`` argument: exit 2 and one line on stderr naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import checkpoint
from engine.cli import main
from engine.plan import Plan, PruneAction

FACTORY = "cli_arguments_test_model"


def make_model(width: int = 10) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))


@pytest.fixture
def base(tmp_path):
    checkpoint.register_model_factory(FACTORY, make_model)
    torch.save(make_model().state_dict(), tmp_path / "m.pt")
    Plan.create(
        [PruneAction(layer="0", local_indices=[1], neuron_ids=[1], reason="dead")],
        [("0", 10), ("2", 3)],
    ).save(tmp_path / "p.json")
    yield ["apply", str(tmp_path / "p.json"), str(tmp_path / "m.pt"), "--model", FACTORY,
           "--dry-run"]  # fmt: skip
    checkpoint.unregister_model_factory(FACTORY)


def _code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return exc.code


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--kwargs", "{width"], "--kwargs is not JSON"),
        (["--kwargs", "[1]"], "--kwargs: expected a JSON object, got list"),
        (["--kwargs", '{"nope": 1}'], "unexpected keyword argument 'nope'"),
        (["--input-shape", "0,6"], "argument --input-shape: expected sizes ≥ 1"),
        (["--input-shape", "-1,6"], "argument --input-shape: expected one argument"),
        (["--input-shape=-2,6"], "argument --input-shape: expected sizes ≥ 1"),
        (["--input-shape", "a,b"], "argument --input-shape: expected sizes ≥ 1"),
        (["--input-shape", ""], "argument --input-shape: expected sizes ≥ 1"),
        (["--input-shape", "2,7"], "--input-shape 2,7: the model cannot run on this probe"),
        (["--input-dtype", "foo"], "argument --input-dtype: expected a torch dtype name"),
        (["--input-dtype", "Tensor"], "argument --input-dtype: expected a torch dtype name"),
        (["--input-dtype", "int64"], "--input-dtype int64: the model cannot run on this probe"),
    ],
)
def test_bad_argument_exits_2_with_one_line(base, capsys, extra, expected):
    assert _code([*base, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("neuron-engine apply: error: ")
    assert expected in lines[0]
    assert "Traceback" not in captured.err and "DRY RUN" not in captured.out


def test_good_arguments_still_apply(base, capsys):
    assert main([*base, "--input-shape", "3,6", "--input-dtype", "float32"]) == 0
    assert "DRY RUN" in capsys.readouterr().out


def test_usage_errors_elsewhere_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "x", "--top", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --top" in err[0]
