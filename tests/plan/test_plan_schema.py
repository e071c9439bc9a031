"""The shipped JSON Schema of plans is current, and saved plans validate against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.plan import ExpandAction, FoldAction, MergeAction, Plan, PruneAction
from engine.plan.schema_gen import SCHEMA_PATH, main, schema_text

REGENERATE = "python -m engine.plan.schema_gen"


def _plan() -> Plan:
    return Plan.create(
        [
            PruneAction(layer="a", local_indices=[0, 2], neuron_ids=[0, 2], reason="dead",
                        constant_values=[0.0, 0.0], evidence={"firing_rate": [0.0, 0.0]}),
            MergeAction(layer="b", keep=0, remove=1, keep_id=4, remove_id=5, alpha=1.0,
                        beta=0.0, correlation=1.0, reason="redundant"),
            FoldAction(layer="a", keep=[1], remove=[3], keep_ids=[1], remove_ids=[3],
                       coefficients=[[2.0]], mean_keep=[0.5], mean_remove=[1.0], ridge=0.0,
                       reason="redundant"),
            ExpandAction(layer="b", count=1, source_indices=[0], source_ids=[4], reason="grow"),
            ExpandAction(layer="b", count=3, init="zero_outgoing", reason="grow"),
        ],
        [("a", 4), ("b", 2)],
        policies=["manual"],
        samples_seen={"a": 10, "b": 10},
    )  # fmt: skip


def test_shipped_schema_is_current() -> None:
    assert SCHEMA_PATH.name == "plan.schema.json"
    assert SCHEMA_PATH.is_file(), f"{SCHEMA_PATH} is missing; generate it with: {REGENERATE}"
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        f"{SCHEMA_PATH} is stale (the plan or action models changed); regenerate it with: "
        f"{REGENERATE}"
    )
    assert json.loads(schema_text()) == Plan.model_json_schema()


def test_schema_gen_check_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_saved_plan_validates_against_the_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (it is not a project dependency)"
    )
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    saved = json.loads(_plan().save(tmp_path / "plan.json").read_text())
    jsonschema.validate(saved, schema, cls=jsonschema.Draft202012Validator)
    saved["prune"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(saved, schema, cls=jsonschema.Draft202012Validator)
