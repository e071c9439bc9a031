"""Plan: construction, statistics, JSON round trip, strict validation, fingerprint check."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from engine.errors import EngineError, FingerprintMismatchError, PlanError
from engine.layout import layout_fingerprint
from engine.plan import (
    ExpandAction,
    FoldAction,
    MergeAction,
    Plan,
    PlanMetadata,
    PlanStatistics,
    PruneAction,
)
from engine.stats import Moments
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot

LAYOUT = [("fc1", 8), ("fc2", 6), ("out", 3)]


def all_kinds() -> list[Any]:
    return [
        PruneAction(
            layer="fc1", local_indices=[1, 4], neuron_ids=[1, 4], reason="constant",
            policy="dead", constant_values=[0.0, 0.25],
            evidence={"firing_rate": [0.0, 1.0], "variance": [0.0, 0.0]},
        ),
        MergeAction(
            layer="fc2", keep=2, remove=5, keep_id=10, remove_id=13, alpha=0.5, beta=-0.125,
            correlation=0.999, expected_cost=0.001, reason="redundant", policy="redundancy",
            evidence={"samples": 512},
        ),
        FoldAction(
            layer="fc1", keep=[0, 2], remove=[3, 6], keep_ids=[0, 2], remove_ids=[3, 6],
            coefficients=[[1.0, 0.0], [0.5, 0.5]], mean_keep=[0.1, 0.2], mean_remove=[0.1, 0.15],
            ridge=1e-3, expected_cost=0.02, reason="redundant", policy="redundancy",
        ),
        ExpandAction(
            layer="fc2", count=2, init="net2net", source_indices=[0, 0], source_ids=[8, 8],
            noise=0.01, reason="saturated", policy="saturation",
        ),
        ExpandAction(layer="out", count=1, init="zero_outgoing", reason="grow", policy="manual"),
    ]  # fmt: skip


def make_plan(**kwargs: Any) -> Plan:
    defaults: dict[str, Any] = {
        "policies": [{"name": "dead", "settings": {"threshold": 0.0}}, "redundancy"],
        "samples_seen": {"fc1": 512, "fc2": 512, "out": 512},
        "notes": ["test plan"],
        "created": "2025-01-01T00:00:00+00:00",
    }
    return Plan.create(all_kinds(), LAYOUT, **{**defaults, **kwargs})


@pytest.fixture
def plan() -> Plan:
    return make_plan()


@pytest.fixture
def good(plan: Plan) -> dict[str, Any]:
    return plan.to_json()


# --- construction and statistics ----------------------------------------------------------------
def test_create_sorts_actions_and_computes_statistics(plan: Plan) -> None:
    assert [a.kind for a in plan.prune] == ["prune"]
    assert [a.kind for a in plan.merge] == ["merge", "fold"]
    assert [a.init for a in plan.expand] == ["net2net", "zero_outgoing"]
    assert [a.kind for a in plan.actions()] == ["prune", "merge", "fold", "expand", "expand"]
    s = plan.statistics
    assert (s.prune_units, s.merged_units, s.expand_units) == (2, 3, 3)
    assert s.layers_changed == ["fc1", "fc2", "out"]
    assert s.widths == {
        "fc1": {"before": 8, "after": 4},
        "fc2": {"before": 6, "after": 7},
        "out": {"before": 3, "after": 4},
    }
    meta = plan.metadata
    assert meta.fingerprint == layout_fingerprint(LAYOUT) == plan.fingerprint
    assert meta.layout == LAYOUT == plan.layout
    assert meta.policies == [
        {"name": "dead", "settings": {"threshold": 0.0}},
        {"name": "redundancy", "settings": {}},
    ]
    assert meta.source == "neuron-engine"
    assert meta.library_version == __import__("engine").__version__


def test_create_defaults_and_layout_forms() -> None:
    action = PruneAction(layer="b", local_indices=[0], neuron_ids=[5], reason="dead")
    from_map = Plan.create([action], {"a": 2, "b": 3})
    assert from_map.metadata.layout == [("a", 2), ("b", 3)]
    assert from_map.statistics.widths["a"] == {"before": 2, "after": 2}
    assert from_map.statistics.layers_changed == ["b"]
    assert from_map.metadata.created.endswith("+00:00")  # now, in UTC
    assert from_map.metadata.samples_seen == {} and from_map.metadata.notes == []

    class Sized:
        sizes = (("a", 2), ("b", 3))

    created = from_map.metadata.created
    assert Plan.create([action], Sized(), created=created) == from_map
    empty = Plan.create([], [("a", 2)])
    assert list(empty.actions()) == [] and empty.statistics.layers_changed == []


def test_create_from_snapshot_uses_its_layout_and_samples() -> None:
    moments = Moments.from_samples(torch.rand(16, 3, dtype=torch.float64))
    snap = StatsSnapshot({"fc": LayerSnapshot("fc", "Linear", [0, 1, 2], moments)})
    plan = Plan.create([], snap)
    assert plan.metadata.layout == [("fc", 3)]
    assert plan.metadata.fingerprint == snap.fingerprint()
    assert plan.metadata.samples_seen == {"fc": 16}


def test_create_normalises_evidence_and_rejects_non_actions() -> None:
    action = PruneAction(
        layer="a", local_indices=[0], neuron_ids=[0], reason="dead", evidence={"pair": (1, 2)}
    )
    plan = Plan.create([action], [("a", 2)])
    assert plan.prune[0].evidence == {"pair": [1, 2]}
    assert Plan.loads(plan.dumps()) == plan
    with pytest.raises(TypeError, match="not a plan action"):
        Plan.create([{"kind": "prune"}], [("a", 2)])  # type: ignore[list-item]
    bad = PruneAction(
        layer="a", local_indices=[0], neuron_ids=[0], reason="dead", evidence={"x": object()}
    )
    with pytest.raises(PlanError, match="evidence is not JSON data"):
        Plan.create([bad], [("a", 2)])


def test_statistics_unknown_layer_counts_as_changed_without_width() -> None:
    stats = PlanStatistics.compute(
        [ExpandAction(layer="ghost", count=2, init="random", reason="r")], [("a", 1)]
    )
    assert stats.layers_changed == ["ghost"] and stats.expand_units == 2
    assert stats.widths == {"a": {"before": 1, "after": 1}}


# --- round trip --------------------------------------------------------------------------------
def test_round_trip_every_action_kind(plan: Plan, tmp_path: Path) -> None:
    assert Plan.loads(plan.to_json()) == plan
    assert Plan.loads(plan.dumps()) == plan
    assert Plan.loads(plan.dumps(indent=None)) == plan
    path = plan.save(tmp_path / "sub" / "plan.json")
    assert path == tmp_path / "sub" / "plan.json"
    loaded = Plan.load(path)
    assert loaded == plan
    assert loaded.prune[0].constant_values == [0.0, 0.25]
    assert isinstance(loaded.merge[1], FoldAction) and loaded.merge[1].coefficients[1] == [0.5, 0.5]
    raw = json.loads(path.read_text())
    assert (raw["format"], raw["version"]) == ("neuron-engine.plan", 1)
    assert raw["merge"][0]["kind"] == "merge" and raw["merge"][1]["kind"] == "fold"
    assert path.read_text().endswith("}\n")
    assert not list(path.parent.glob("*.tmp"))


def test_statistics_may_be_omitted_and_are_recomputed(good: dict[str, Any], plan: Plan) -> None:
    del good["statistics"]
    assert Plan.loads(good) == plan


def test_metadata_model_defaults() -> None:
    meta = PlanMetadata(fingerprint=layout_fingerprint([("a", 1)]), layout=[("a", 1)])
    assert Plan(metadata=meta).statistics.widths == {"a": {"before": 1, "after": 1}}


# --- bad plans ---------------------------------------------------------------------------------
def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()

BAD_CASES = [
    ("unknown top-level field", _set("surprise", 1),
     "plan.json: field 'surprise' = 1: Extra inputs are not permitted"),
    ("unknown action field", _set("prune.0.surprise", 1),
     "plan.json: field 'prune.0.surprise' = 1: Extra inputs are not permitted"),
    ("unknown metadata field", _set("metadata.owner", "me"),
     "plan.json: field 'metadata.owner' = \"me\": Extra inputs are not permitted"),
    ("wrong type: string index", _set("merge.0.keep", "2"),
     "plan.json: field 'merge.0.keep' = \"2\": Input should be a valid integer"),
    ("wrong type: bool index", _set("prune.0.local_indices.0", True),
     "plan.json: field 'prune.0.local_indices.0' = true: Input should be a valid integer"),
    ("wrong type: list expected", _set("prune.0.neuron_ids", 3),
     "plan.json: field 'prune.0.neuron_ids' = 3: Input should be a valid array"),
    ("negative index", _set("prune.0.local_indices.1", -1),
     "plan.json: field 'prune.0.local_indices.1' = -1: Input should be greater than or equal to 0"),
    ("missing field", _set("merge.0.alpha", _DELETE),
     "plan.json: field 'merge.0.alpha': Field required"),
    ("net2net without sources", _set("expand.0.source_indices", None),
     "plan.json: field 'expand.0': expand with init 'net2net' needs source_indices"),
    ("fold coefficient shape mismatch", _set("merge.1.coefficients", [[1.0], [0.5, 0.5]]),
     "plan.json: field 'merge.1': fold: coefficient rows [0] do not have 2 entries"),
    ("keep == remove", _set("merge.0.remove", 2),
     "plan.json: field 'merge.0': merge: keep and remove are the same unit (2)"),
    ("prune lengths differ", _set("prune.0.neuron_ids", [1]),
     "plan.json: field 'prune.0': prune: lengths differ"),
    ("correlation out of range", _set("merge.0.correlation", 1.5),
     "plan.json: field 'merge.0.correlation' = 1.5: Input should be less than or equal to 1"),
    ("unknown merge kind", _set("merge.0.kind", "prune"),
     "plan.json: field 'merge.0': Input tag 'prune' found using 'kind' does not match any of"),
    ("wrong format", _set("format", "other.plan"),
     "plan.json: field 'format' = \"other.plan\": Input should be 'neuron-engine.plan'"),
    ("wrong version", _set("version", 2),
     "plan.json: field 'version' = 2: Input should be 1"),
    ("missing version", _set("version", _DELETE),
     "plan.json: field 'version': missing (expected 1)"),
    ("missing format", _set("format", _DELETE),
     "plan.json: not a plan: no 'format' key"),
    ("unknown init", _set("expand.1.init", "magic"),
     "plan.json: field 'expand.1.init' = \"magic\": Input should be 'net2net', 'zero_outgoing'"),
    ("bad layout entry", _set("metadata.layout.0", ["fc1", "8"]),
     "plan.json: field 'metadata.layout.0.1' = \"8\": Input should be a valid integer"),
    ("fingerprint does not match layout", _set("metadata.fingerprint", "0000"),
     "plan.json: metadata.fingerprint = '0000' does not match metadata.layout"),
    ("statistics do not match actions", _set("statistics.prune_units", 99),
     "plan.json: statistics.prune_units = 99, the actions give 2 (statistics are derived"),
    ("widths do not match", _set("statistics.widths.fc1.after", 5),
     "plan.json: statistics.widths.fc1 = {\"before\": 8, \"after\": 5}, the actions give "
     "{\"before\": 8, \"after\": 4} (statistics are derived"),
    ("unknown width key", _set("statistics.widths.fc1.extra", 1),
     "plan.json: field 'statistics.widths.fc1.extra' = 1: Extra inputs are not permitted"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_plan_is_refused_with_a_message(
    good: dict[str, Any], tmp_path: Path, edit: Any, message: str
) -> None:
    data = copy.deepcopy(good)
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError) as info:
        Plan.load(path)
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(message)
    with pytest.raises(PlanError, match=r"^plan\.json: "):  # same check without a file
        Plan.loads(data, source="plan.json")


def test_several_errors_are_listed(good: dict[str, Any]) -> None:
    for i in range(7):
        good[f"extra{i}"] = i
    with pytest.raises(PlanError) as info:
        Plan.loads(good)
    lines = str(info.value).splitlines()
    assert lines[0] == "plan: field 'extra0' = 0: Extra inputs are not permitted"
    assert lines[-1] == "plan: … and 2 more errors"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON (line 1, column 2: Expecting property name"),
        ('{"format": NaN}', "not valid JSON (NaN is not allowed (strict JSON))"),
        ('{"a": Infinity}', "not valid JSON (Infinity is not allowed"),
        ('{"format": "x", "format": "y"}', "not valid JSON (duplicate key 'format')"),
        ("[1, 2]", "expected a JSON object at the top level, got list"),
        ("", "not valid JSON (line 1, column 1: Expecting value)"),
    ],
)
def test_non_json_text_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanError) as info:
        Plan.load(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_missing_file_directory_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"nope\.json: no such file"):
        Plan.load(tmp_path / "nope.json")
    with pytest.raises(PlanError, match="not a file"):
        Plan.load(tmp_path)
    binary = tmp_path / "plan.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PlanError, match=r"plan\.bin: not valid JSON \(not UTF-8"):
        Plan.load(binary)


def test_nan_in_parsed_data_is_refused(good: dict[str, Any]) -> None:
    good["prune"][0]["evidence"]["x"] = [1.0, math.nan]
    with pytest.raises(PlanError, match=r"field 'prune\.0\.evidence\.x\.1' = nan"):
        Plan.loads(good)


def test_nan_refused_on_save(plan: Plan, tmp_path: Path) -> None:
    action = plan.prune[0].model_copy(update={"evidence": {"saturation": [math.nan, 0.1]}})
    bad = Plan(metadata=plan.metadata, prune=[action])
    target = tmp_path / "plan.json"
    with pytest.raises(PlanError) as info:
        bad.save(target)
    assert str(info.value) == (
        f"{target}: field 'prune.0.evidence.saturation.0' = nan: not allowed in strict JSON "
        f"(replace non-finite evidence with null or leave it out)"
    )
    assert not target.exists() and not list(tmp_path.iterdir())
    with pytest.raises(PlanError, match="= nan: not allowed in strict JSON"):
        bad.dumps()
    with pytest.raises(PlanError, match=r"field 'prune\.0\.evidence\.saturation\.0' = nan"):
        Plan.create([action], LAYOUT)


def test_non_finite_action_numbers_are_refused_when_built() -> None:
    with pytest.raises(ValidationError, match="alpha\n  Input should be a finite number"):
        MergeAction(
            layer="a", keep=0, remove=1, keep_id=0, remove_id=1, alpha=math.inf, beta=0.0,
            correlation=1.0, reason="r",
        )  # fmt: skip


def test_error_classes() -> None:
    assert issubclass(PlanError, EngineError) and issubclass(PlanError, ValueError)
    assert issubclass(FingerprintMismatchError, PlanError)


# --- fingerprint -------------------------------------------------------------------------------
def test_fingerprint_matches(plan: Plan) -> None:
    plan.check_fingerprint(LAYOUT)
    plan.check_fingerprint(dict(LAYOUT))
    plan.check_fingerprint(layout_fingerprint(LAYOUT))

    class ModelLayoutLike:
        sizes = tuple(LAYOUT)

    plan.check_fingerprint(ModelLayoutLike())


def test_fingerprint_mismatch_names_the_differing_layers(plan: Plan) -> None:
    model = [("fc1", 8), ("fc2", 5), ("head", 3)]
    with pytest.raises(FingerprintMismatchError) as info:
        plan.check_fingerprint(model)
    msg = str(info.value)
    assert msg.startswith(
        f"plan was made for layout {layout_fingerprint(LAYOUT)!r}, the model's layout is "
        f"{layout_fingerprint(model)!r}: "
    )
    assert "layer 'fc2': 6 units in the plan, 5 in the model" in msg
    assert "layer 'out': in the plan, missing from the model" in msg
    assert "layer 'head': in the model, not in the plan" in msg
    assert "fc1" not in msg.split(": ", 2)[2]
    assert info.value.problems == [  # type: ignore[attr-defined]
        "layer 'fc2': 6 units in the plan, 5 in the model",
        "layer 'out': in the plan, missing from the model",
        "layer 'head': in the model, not in the plan",
    ]


def test_fingerprint_mismatch_order_and_string(plan: Plan) -> None:
    with pytest.raises(FingerprintMismatchError, match="same layers in another order"):
        plan.check_fingerprint(list(reversed(LAYOUT)))
    with pytest.raises(FingerprintMismatchError) as info:
        plan.check_fingerprint("abcdef0123456789")
    assert str(info.value) == (
        f"plan was made for layout fingerprint {plan.fingerprint!r}, the model has "
        f"'abcdef0123456789' (plan layout: fc1=8, fc2=6, out=3)"
    )
    with pytest.raises(TypeError, match="expected a layout"):
        plan.check_fingerprint(42)


def test_layout_with_repeated_layer_is_refused() -> None:
    with pytest.raises(PlanError, match=r"^plan: metadata\.layout: layers \['a'\] are listed more"):
        Plan.create([], [("a", 1), ("b", 2), ("a", 3)])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PruneAction(layer="a", local_indices=[0, 0, 5], neuron_ids=[0, 0, 5], reason="x"),
         r"prune: local_indices lists units \[0\] more than once"),
        (lambda: FoldAction(layer="a", keep=[1, 1], remove=[0], keep_ids=[1, 1], remove_ids=[0],
                            coefficients=[[1.0, 1.0]], mean_keep=[0, 0], mean_remove=[0],
                            ridge=0, reason="x"),
         r"fold: keep lists units \[1\] more than once"),
        (lambda: FoldAction(layer="a", keep=[1], remove=[0, 2, 0], keep_ids=[1],
                            remove_ids=[0, 2, 0], coefficients=[[1.0]] * 3, mean_keep=[0],
                            mean_remove=[0, 0, 0], ridge=0, reason="x"),
         r"fold: remove lists units \[0\] more than once"),
    ],
)  # fmt: skip
def test_duplicate_local_indices_inside_one_action_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ([PruneAction(layer="a", local_indices=[0, 5, 9], neuron_ids=[0, 5, 9], reason="x")],
         r"prune\.0\.local_indices: units \[5, 9\] out of range for layer 'a' \(2 units in "
         r"metadata\.layout\)"),
        ([MergeAction(layer="a", keep=0, remove=3, keep_id=0, remove_id=3, alpha=1, beta=0,
                      correlation=1, reason="x")],
         r"merge\.0\.remove: units \[3\] out of range"),
        ([ExpandAction(layer="a", count=1, source_indices=[2], source_ids=[2], reason="x")],
         r"expand\.0\.source_indices: units \[2\] out of range"),
        ([PruneAction(layer="a", local_indices=[0, 1], neuron_ids=[0, 1], reason="x")],
         r"statistics\.widths\.a\.after = 0: the actions would leave layer 'a' with fewer than 1 "
         r"unit"),
    ],
)  # fmt: skip
def test_plans_that_cannot_fit_their_own_layout_are_refused(actions, message):
    with pytest.raises(PlanError, match=message):
        Plan.create(actions, [("a", 2), ("b", 3)])
    good = Plan.create([], [("a", 2), ("b", 3)]).to_json()
    section = actions[0].kind if actions[0].kind != "fold" else "merge"
    good[section] = [actions[0].model_dump(mode="json")]
    with pytest.raises(PlanError, match=message):
        Plan.loads(good, source="p.json")
