"""Import of SelfModifyingSLM recommendation files (the shared fixture and small variants)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PlanError
from engine.layout import layout_fingerprint
from engine.plan import (
    MergeAction,
    Plan,
    PruneAction,
    convert_selfmodifying_slm,
    looks_like_selfmodifying_slm,
)
from engine.plan.legacy import NO_FIT

FIXTURE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "sms_optimization.json"
)
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_file(), reason=f"shared fixture {FIXTURE} is absent (outside the repository)"
)

# the example of the old format's README (seed 002), without saturation_ratio
SEED_EXAMPLE: dict[str, Any] = {
    "metadata": {
        "timestamp": "2025-09-11T15:23:34.621623",
        "model_info": {
            "total_neurons": 106,
            "total_layers": 3,
            "layer_details": {"fc1": 64, "fc2": 32, "fc3": 10},
        },
    },
    "prune": [
        {"neuron_id": 88, "layer_name": "fc2", "local_index": 24, "reason": "dead",
         "firing_frequency": 0.0, "mean_activation": 0.0008505678561050445},
        {"neuron_id": 70, "layer_name": "fc2", "local_index": 6, "reason": "dead",
         "firing_frequency": 0.0, "mean_activation": 0.0},
        {"neuron_id": 10, "layer_name": "fc1", "local_index": 10, "reason": "low_activity",
         "firing_frequency": 0.2, "mean_activation": 0.001},
    ],
    "merge": [
        {"neuron_pair": [66, 82], "layer_name": "fc2", "local_indices": [2, 18],
         "correlation": 0.9999596132524416, "merge_strategy": "average_weights"},
    ],
    "expand": [
        {"layer_name": "fc1", "current_size": 64, "suggested_expansion": 16,
         "avg_activity": 0.986, "reason": "high_saturation"},
    ],
    "statistics": {
        "total_prunable_neurons": 3, "total_mergeable_pairs": 1, "layers_needing_expansion": 1,
    },
}  # fmt: skip


@pytest.fixture
def seed() -> dict[str, Any]:
    return copy.deepcopy(SEED_EXAMPLE)


@needs_fixture
def test_fixture_loads_and_converts_faithfully() -> None:
    raw = json.loads(FIXTURE.read_text())
    plan = Plan.load(FIXTURE)
    meta = plan.metadata
    assert meta.source == "selfmodifying-slm"
    assert meta.layout == [("0", 256), ("2", 128), ("4", 10)]
    assert meta.fingerprint == layout_fingerprint(meta.layout)
    assert meta.samples_seen == {}
    assert meta.created == raw["metadata"]["timestamp"]
    assert meta.policies == [
        {"name": "selfmodifying-slm", "settings": raw["metadata"]["analysis_parameters"]}
    ]
    # 72 prune units across the layers "0", "2", "4" (the output layer is kept: faithful)
    assert plan.statistics.prune_units == 72
    assert [(a.layer, a.reason, len(a.local_indices)) for a in plan.prune] == [
        ("0", "low_activity", 60),
        ("2", "low_activity", 11),
        ("4", "low_activity", 1),
    ]
    assert plan.merge == [] and plan.statistics.merged_units == 0
    assert [(a.layer, a.count, a.init) for a in plan.expand] == [
        ("0", 64, "zero_outgoing"),
        ("2", 32, "zero_outgoing"),
    ]
    assert plan.statistics.widths == {
        "0": {"before": 256, "after": 260},
        "2": {"before": 128, "after": 149},
        "4": {"before": 10, "after": 9},
    }
    # every entry lands in an action, indices sorted, evidence aligned with the indices
    by_entry = {(e["layer_name"], e["local_index"]): e for e in raw["prune"]}
    for action in plan.prune:
        assert action.local_indices == sorted(action.local_indices)
        assert action.policy == "selfmodifying-slm"
        for k, i in enumerate(action.local_indices):
            entry = by_entry[(action.layer, i)]
            assert action.neuron_ids[k] == entry["neuron_id"]
            assert action.evidence["firing_frequency"][k] == entry["firing_frequency"]
            assert action.evidence["mean_activation"][k] == entry["mean_activation"]
    assert plan.expand[0].evidence == {
        "current_size": 256, "avg_activity": raw["expand"][0]["avg_activity"],
        "saturation_ratio": 1.0,
    }  # fmt: skip


@needs_fixture
def test_fixture_notes_flag_suspicious_entries() -> None:
    notes = Plan.load(FIXTURE).metadata.notes
    assert notes[0] == (
        "converted from a SelfModifyingSLM recommendations file written 2026-11-22T20:38:47.670223"
    )
    busy = [n for n in notes if "fire in more than 50% of samples" in n]
    assert len(busy) == 3
    assert busy[0].startswith("prune: 60 'low_activity' unit(s) of layer '0' fire")
    assert "layer '4' fire in more than 50% of samples (firing_frequency 0.873)" in busy[2]
    assert any(
        n.startswith("prune: layer '4' is the last tracked layer (probably the model's output")
        for n in notes
    )
    assert len(notes) == 5  # no complaint about the file's own totals: they match


@needs_fixture
def test_converted_fixture_round_trips_as_a_native_plan(tmp_path: Path) -> None:
    plan = Plan.load(FIXTURE)
    again = Plan.load(plan.save(tmp_path / "plan.json"))
    assert again == plan and again.metadata.source == "selfmodifying-slm"
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "neuron-engine.plan"


def test_seed_example_converts(seed: dict[str, Any]) -> None:
    assert looks_like_selfmodifying_slm(seed)
    plan = Plan.loads(json.dumps(seed), source="opt.json")
    assert [(a.layer, a.reason, a.local_indices, a.neuron_ids) for a in plan.prune] == [
        ("fc1", "low_activity", [10], [10]),
        ("fc2", "dead", [6, 24], [70, 88]),
    ]
    assert plan.prune[1].evidence["mean_activation"] == [0.0, 0.0008505678561050445]
    (merge,) = plan.merge
    assert isinstance(merge, MergeAction)
    assert (merge.keep, merge.remove, merge.keep_id, merge.remove_id) == (2, 18, 66, 82)
    assert (merge.alpha, merge.beta, merge.reason) == (1.0, 0.0, "redundant")
    assert merge.correlation == pytest.approx(0.99996)
    assert merge.evidence == {"merge_strategy": "average_weights", "fit": NO_FIT}
    assert plan.expand[0].count == 16 and plan.expand[0].init == "zero_outgoing"
    assert plan.expand[0].source_indices is None
    assert plan.statistics.widths["fc1"] == {"before": 64, "after": 79}
    assert plan.statistics.widths["fc2"] == {"before": 32, "after": 29}
    notes = plan.metadata.notes
    assert any(n.startswith("merge: the old format has no fit") for n in notes)
    assert not any("fire in more than" in n for n in notes)  # 0.2 is not busy
    assert not any("last tracked layer" in n for n in notes)
    assert convert_selfmodifying_slm(seed) == plan


def test_duplicates_unknown_layers_ranges_and_totals_are_noted(seed: dict[str, Any]) -> None:
    seed["prune"].append(dict(seed["prune"][0]))
    seed["prune"].append(
        {"neuron_id": 500, "layer_name": "fc9", "local_index": 1, "reason": "dead"}
    )
    seed["prune"].append(
        {"neuron_id": 501, "layer_name": "fc3", "local_index": 12, "reason": "dead"}
    )
    seed["merge"][0]["correlation"] = 1.0000000001
    seed["expand"][0]["current_size"] = 63
    seed["expand"].append(
        {"layer_name": "fc2", "current_size": 32, "suggested_expansion": 0, "reason": "x"}
    )
    plan = convert_selfmodifying_slm(seed, source="opt.json")
    notes = plan.metadata.notes
    assert "prune[3]: unit 24 of layer 'fc2' is listed twice for 'dead'; kept once" in notes
    assert "prune[4]: layer 'fc9' is not in metadata.model_info.layer_details" in notes
    assert "prune[5]: local index 12 is out of range for layer 'fc3' (10 units); skipped" in notes
    assert "expand[0]: current_size 63 differs from layer_details (64) for layer 'fc1'" in notes
    assert "expand[1]: suggested_expansion is 0 for layer 'fc2'; skipped" in notes
    assert "statistics.total_prunable_neurons = 3, but the entries give 4" in notes
    assert plan.merge[0].correlation == 1.0
    assert plan.statistics.layers_changed == ["fc1", "fc2", "fc9"]  # fc3[12] skipped
    assert "fc9" not in plan.statistics.widths
    assert [a.layer for a in plan.prune if isinstance(a, PruneAction)][-1] == "fc9"


def _del(where: str, key: str) -> Any:
    def edit(d: dict[str, Any]) -> None:
        section, index = where.split(".")
        del d[section][int(index)][key]

    return edit


def _put(where: str, key: str, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        section, index = where.split(".")
        d[section][int(index)][key] = value

    return edit


def _extra_prune(d: dict[str, Any]) -> None:
    d["prune"].append({"neuron_id": 1, "layer_name": "fc1", "reason": "dead"})


MALFORMED = [
    ("missing local_index", _extra_prune, "opt.json: prune[3]: missing 'local_index'"),
    ("missing neuron_id", _del("prune.0", "neuron_id"), "opt.json: prune[0]: missing 'neuron_id'"),
    ("negative index", _put("prune.1", "local_index", -2),
     "opt.json: prune[1]: 'local_index' must be a non-negative integer, got -2"),
    ("string index", _put("prune.1", "local_index", "3"),
     "opt.json: prune[1]: 'local_index' must be a non-negative integer, got '3'"),
    ("empty layer", _put("prune.0", "layer_name", ""),
     "opt.json: prune[0]: 'layer_name' must be a non-empty string, got ''"),
    ("bad firing frequency", _put("prune.0", "firing_frequency", "high"),
     "opt.json: prune[0]: 'firing_frequency' must be a number, got 'high'"),
    ("pair of three", _put("merge.0", "neuron_pair", [1, 2, 3]),
     "opt.json: merge[0]: 'neuron_pair' must be a list of two integers, got [1, 2, 3]"),
    ("same unit twice", _put("merge.0", "local_indices", [4, 4]),
     "opt.json: merge[0]: 'local_indices' name the same unit twice (4)"),
    ("correlation above one", _put("merge.0", "correlation", 1.5),
     "opt.json: merge[0]: 'correlation' must be in [-1, 1], got 1.5"),
    ("missing correlation", _del("merge.0", "correlation"),
     "opt.json: merge[0]: missing 'correlation'"),
    ("negative expansion", _put("expand.0", "suggested_expansion", -1),
     "opt.json: expand[0]: 'suggested_expansion' must be a non-negative integer, got -1"),
    ("missing current_size", _del("expand.0", "current_size"),
     "opt.json: expand[0]: missing 'current_size'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_entries_name_the_entry(seed: dict[str, Any], edit: Any, message: str) -> None:
    edit(seed)
    with pytest.raises(PlanError) as info:
        Plan.loads(seed, source="opt.json")
    assert str(info.value) == message


def test_malformed_file_level(seed: dict[str, Any], tmp_path: Path) -> None:
    no_details = copy.deepcopy(seed)
    del no_details["metadata"]["model_info"]["layer_details"]
    with pytest.raises(PlanError, match=r"^x: metadata\.model_info\.layer_details: missing"):
        convert_selfmodifying_slm(no_details, source="x")
    bad_size = copy.deepcopy(seed)
    bad_size["metadata"]["model_info"]["layer_details"]["fc2"] = -3
    with pytest.raises(PlanError, match=r"layer_details\.fc2: must be a non-negative integer"):
        convert_selfmodifying_slm(bad_size, source="x")
    not_object = copy.deepcopy(seed)
    not_object["prune"][1] = 7
    with pytest.raises(PlanError, match=r"^x: prune\[1\]: expected an object, got int$"):
        convert_selfmodifying_slm(not_object, source="x")
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**seed, "expand": {"layer_name": "fc1"}}))
    with pytest.raises(PlanError, match=r"old\.json: expand: expected a list, got dict"):
        Plan.load(path)
    with pytest.raises(PlanError, match=r"unknown top-level keys \['extra'\]"):
        convert_selfmodifying_slm({**seed, "extra": 1})


def test_detection() -> None:
    assert looks_like_selfmodifying_slm({"metadata": {"model_info": {}}, "prune": []})
    assert looks_like_selfmodifying_slm({"metadata": {}, "expand": [{"current_size": 3}]})
    assert not looks_like_selfmodifying_slm({"metadata": {}, "prune": []})
    assert not looks_like_selfmodifying_slm({"metadata": {"fingerprint": "x"}, "prune": []})
    assert not looks_like_selfmodifying_slm({"metadata": {}, "prune": [], "format": "x"})
    assert not looks_like_selfmodifying_slm({"metadata": {}, "prune": [], "other": 1})
    assert not looks_like_selfmodifying_slm([1, 2])
    # a file that looks like neither a plan nor an old file gets the plain "not a plan" error
    with pytest.raises(PlanError, match="not a plan: no 'format' key"):
        Plan.loads({"metadata": {}, "prune": []})
