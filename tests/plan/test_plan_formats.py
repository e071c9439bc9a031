"""The schema/reader split: foreign plan formats and the summary formatter register with the
schema (``engine.plan.plan``), which imports none of its readers and printers."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigurationError, PlanError
from engine.plan import Plan, PruneAction, plan_summary
from engine.plan.formats import (
    PlanFormat,
    detect_plan_format,
    plan_formats,
    register_plan_format,
    unregister_plan_format,
)
from engine.plan.legacy import convert_selfmodifying_slm, looks_like_selfmodifying_slm
from engine.plan.plan import register_summary_formatter

PLAN_DIR = Path(__file__).resolve().parents[2] / "engine" / "plan"
NOT_A_PLAN = (
    "toy.json: not a plan: no 'format' key (expected 'format': 'neuron-engine.plan', or a "
    "SelfModifyingSLM recommendations file with 'prune'/'merge'/'expand' lists)"
)
TOY = {"tool": "toy-pruner", "sizes": {"fc": 4}, "dead": [1, 3]}


def _detect_toy(data: Mapping[str, Any]) -> bool:
    return data.get("tool") == "toy-pruner"


def _convert_toy(data: Mapping[str, Any], *, source: str) -> Plan:
    if not isinstance(data.get("dead"), list):
        raise PlanError(f"{source}: dead: expected a list")
    action = PruneAction(
        layer="fc", local_indices=data["dead"], neuron_ids=data["dead"], reason="dead"
    )
    return Plan.create(
        [action], data["sizes"], source="toy-pruner", created="2025-01-01T00:00:00+00:00"
    )


@pytest.fixture
def toy() -> Iterator[PlanFormat]:
    fmt = register_plan_format("toy", _detect_toy, _convert_toy, description="a toy file")
    try:
        yield fmt
    finally:
        if "toy" in [f.name for f in plan_formats()]:
            unregister_plan_format("toy")


def test_the_legacy_format_is_registered_by_importing_engine_plan() -> None:
    (legacy,) = plan_formats()
    assert legacy.name == "selfmodifying-slm"
    assert legacy.detect is looks_like_selfmodifying_slm
    assert legacy.convert is convert_selfmodifying_slm


def test_a_registered_format_is_detected_and_converted(toy: PlanFormat, tmp_path: Path) -> None:
    assert [f.name for f in plan_formats()] == ["selfmodifying-slm", "toy"]
    assert detect_plan_format(TOY) is toy
    plan = Plan.loads(json.dumps(TOY), source="toy.json")
    assert plan.metadata.source == "toy-pruner"
    assert plan.prune[0].local_indices == [1, 3]
    assert plan.statistics.widths["fc"] == {"before": 4, "after": 2}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(TOY), encoding="utf-8")
    assert Plan.load(path) == plan
    assert Plan.loads(TOY) == plan  # parsed data too
    # the converter's errors carry the source
    with pytest.raises(PlanError, match=r"^toy\.json: dead: expected a list$"):
        Plan.loads({**TOY, "dead": 3}, source="toy.json")
    # a native plan is not claimed by any format
    assert detect_plan_format(plan.to_json()) is None
    assert Plan.loads(plan.dumps()) == plan


def test_an_unregistered_format_gives_the_not_a_plan_error(toy: PlanFormat) -> None:
    unregister_plan_format("toy")
    assert detect_plan_format(TOY) is None
    with pytest.raises(PlanError) as caught:
        Plan.loads(TOY, source="toy.json")
    assert str(caught.value) == NOT_A_PLAN
    assert type(caught.value) is PlanError


def test_the_error_lists_each_registered_format(toy: PlanFormat) -> None:
    with pytest.raises(PlanError) as caught:
        Plan.loads({"tool": "other"}, source="toy.json")
    assert str(caught.value) == NOT_A_PLAN[:-1] + ", or a toy file)"


def test_with_no_format_registered_the_error_names_the_native_format() -> None:
    legacy = unregister_plan_format("selfmodifying-slm")
    try:
        assert plan_formats() == ()
        with pytest.raises(PlanError) as caught:
            Plan.loads({"metadata": {"model_info": {}}, "prune": []}, source="old.json")
        assert str(caught.value) == (
            "old.json: not a plan: no 'format' key (expected 'format': 'neuron-engine.plan')"
        )
    finally:
        register_plan_format(legacy.name, legacy.detect, legacy.convert,
                             description=legacy.description)  # fmt: skip
    assert plan_formats() == (legacy,)


def test_registering_again_replaces_in_place(toy: PlanFormat) -> None:
    again = register_plan_format("toy", _detect_toy, _convert_toy)
    assert plan_formats()[1] is again
    assert again.description == "a toy file"  # the default
    assert len(plan_formats()) == 2


def test_a_converter_must_give_a_plan(toy: PlanFormat) -> None:
    register_plan_format("toy", _detect_toy, lambda data, *, source: {"not": "a plan"})
    with pytest.raises(PlanError, match="the 'toy' format converted to dict, not a Plan"):
        Plan.loads(TOY, source="toy.json")


@pytest.mark.parametrize(
    ("name", "detect", "convert", "message"),
    [
        ("", _detect_toy, _convert_toy, "plan format name must be a non-empty string"),
        ("toy", None, _convert_toy, "plan format 'toy': detect must be callable, got NoneType"),
        ("toy", _detect_toy, "convert", "plan format 'toy': convert must be callable, got str"),
    ],
)
def test_bad_registrations_are_refused(name: Any, detect: Any, convert: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        register_plan_format(name, detect, convert)
    assert [f.name for f in plan_formats()] == ["selfmodifying-slm"]


def test_unregistering_an_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no plan format 'toy' is registered"):
        unregister_plan_format("toy")


def test_summary_uses_the_registered_formatter() -> None:
    plan = Plan.create([], [("fc", 4)], created="2025-01-01T00:00:00+00:00")
    assert plan.summary() == plan_summary(plan)
    register_summary_formatter(lambda p: f"{p.fingerprint}\n")
    try:
        assert plan.summary() == f"{plan.fingerprint}\n"
    finally:
        register_summary_formatter(plan_summary)
    assert plan.summary() == plan_summary(plan)
    with pytest.raises(ConfigurationError, match="must be callable"):
        register_summary_formatter("text")  # type: ignore[arg-type]


def test_summary_without_a_formatter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.plan.plan as schema

    monkeypatch.setattr(schema, "_SUMMARY_FORMATTER", [])
    with pytest.raises(ConfigurationError, match="no summary formatter is registered"):
        Plan.create([], [("fc", 4)]).summary()


# --- layering ------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Every module an ``engine.plan`` file imports, anywhere in it (also inside functions
    and ``if TYPE_CHECKING:`` blocks), resolved against the files of ``engine/plan``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {f"engine.plan.{p.stem}" for p in PLAN_DIR.glob("*.py")} | {"engine.plan"}
    return {name for name in found if name in modules}


def test_the_schema_module_imports_no_reader_or_printer() -> None:
    imported = _imports(PLAN_DIR / "plan.py")
    assert imported, "the parse found no imports at all"
    assert not imported & {"engine.plan", "engine.plan.legacy", "engine.plan.summary"}
    assert not _imports(PLAN_DIR / "formats.py")  # the registry knows no part of engine.plan


def test_engine_plan_has_no_import_circle() -> None:
    graph = {
        f"engine.plan.{p.stem}": _imports(p) for p in PLAN_DIR.glob("*.py") if p.stem != "__init__"
    }
    for module, imported in graph.items():
        # the package's __init__ imports every submodule: importing it would close a circle
        assert "engine.plan" not in imported, f"{module} imports engine.plan"
        seen, todo = set(), list(imported)
        while todo:
            name = todo.pop()
            assert name != module, f"{module} imports a module that imports it back"
            if name not in seen:
                seen.add(name)
                todo += graph.get(name, ())
