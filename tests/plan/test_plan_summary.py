"""plan_summary: the human-readable text of a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan import ExpandAction, FoldAction, MergeAction, Plan, PruneAction, plan_summary

FIXTURE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "sms_optimization.json"
)


@pytest.fixture
def plan() -> Plan:
    return Plan.create(
        [
            PruneAction(layer="fc1", local_indices=list(range(10)),
                        neuron_ids=list(range(100, 110)), reason="dead", policy="dead",
                        constant_values=[0.0] * 10,
                        evidence={"firing_rate": [0.0] * 10, "max": [0.0] * 9 + [0.5]}),
            MergeAction(layer="fc2", keep=2, remove=5, keep_id=22, remove_id=25, alpha=0.5,
                        beta=-0.125, correlation=0.99912, expected_cost=0.001, reason="redundant",
                        policy="redundancy", evidence={"fit": "least squares"}),
            FoldAction(layer="fc2", keep=[0, 1], remove=[3, 4, 6], keep_ids=[20, 21],
                       remove_ids=[23, 24, 26], coefficients=[[1.0, 0.0]] * 3,
                       mean_keep=[0.0, 0.0], mean_remove=[0.0] * 3, ridge=0.001,
                       expected_cost=0.0123, reason="redundant", policy="redundancy"),
            ExpandAction(layer="fc2", count=2, source_indices=[7, 8], source_ids=[27, 28],
                         noise=0.01, reason="saturated", policy="saturation"),
            ExpandAction(layer="out", count=1, init="zero_outgoing", reason="grow"),
        ],
        [("fc1", 16), ("fc2", 9), ("out", 3)],
        policies=[{"name": "dead", "settings": {"threshold": 0.0}}, "redundancy"],
        samples_seen={"fc1": 256, "fc2": 256, "out": 256},
        notes=["made for a test"],
        created="2025-01-01T00:00:00+00:00",
    )  # fmt: skip


def test_summary_lines(plan: Plan) -> None:
    text = plan_summary(plan)
    assert text == plan.summary() == plan_summary(Plan.loads(plan.dumps()))  # deterministic
    lines = text.splitlines()
    expected = [
        "NEURON-ENGINE PLAN",
        f"Fingerprint: {plan.fingerprint} (3 layers: fc1=16, fc2=9, out=3)",
        "Created:     2025-01-01T00:00:00+00:00",
        f"Source:      neuron-engine (library {plan.metadata.library_version})",
        "Policies:    dead (threshold=0); redundancy",
        "Samples:     fc1=256, fc2=256, out=256",
        "  - made for a test",
        "PRUNE: 10 units in 1 action",
        "  layer 'fc1': 10 units [0→100, 1→101, 2→102, 3→103, 4→104, 5→105, 6→106, 7→107, "
        "… +2 more]  reason dead (policy dead)",
        "      folded into the consumer's bias: constant 0 (×10)",
        "      evidence: firing_rate 0 (×10), max 0–0.5 (×10)",
        "MERGE: 4 units removed in 2 actions",
        "  layer 'fc2': merge 5→25 into 2→22  alpha 0.5 beta -0.125 correlation 0.9991 "
        "expected cost 0.001  reason redundant (policy redundancy)",
        "      evidence: fit least squares",
        "  layer 'fc2': fold |R|=3 → |K|=2  remove [3→23, 4→24, 6→26] onto keep [0→20, 1→21]  "
        "ridge 0.001 expected cost 0.0123  reason redundant (policy redundancy)",
        "EXPAND: 3 units in 2 actions",
        "  layer 'fc2': +2 units (9 → 11)  init net2net noise 0.01  reason saturated "
        "(policy saturation)",
        "      copies of [7→27, 8→28]",
        "  layer 'out': +1 unit (3 → 4)  init zero_outgoing  reason grow (policy manual)",
        "WIDTHS",
        "  layer 'fc1': 16 → 6  (-10)",
        "  layer 'fc2': 9 → 7  (-4 +2)",
        "  layer 'out': 3 → 4  (+1)",
        "TOTALS",
        "  prune 10 units, merge away 4 units, expand 3 units",
        "  3 layers changed (fc1, fc2, out)",
        "  tracked units: 28 → 17",
    ]
    missing = [line for line in expected if line not in lines]
    assert not missing, "lines missing from the summary:\n" + "\n".join(missing) + "\n\n" + text
    order = [lines.index(line) for line in expected]
    assert order == sorted(order)
    assert text.endswith("\n") and "\t" not in text


def test_empty_plan_and_unchanged_layers() -> None:
    text = plan_summary(Plan.create([], [("a", 4)], created="2025-01-01T00:00:00+00:00"))
    for line in (
        "PRUNE: none",
        "MERGE: none",
        "EXPAND: none",
        "  layer 'a': 4 → 4  (unchanged)",
        "Policies:    none recorded",
        "Samples:     unknown",
        "  0 layers changed",
    ):
        assert line in text.splitlines(), line
    assert "Notes:" not in text


def test_unknown_layer_and_long_evidence_are_shown() -> None:
    action = ExpandAction(
        layer="ghost", count=1, init="random", reason="grow",
        evidence={f"k{i}": "x" * 100 if i == 0 else [1, "a"] for i in range(7)},
    )  # fmt: skip
    text = plan_summary(Plan.create([action], [("a", 1)]))
    assert "  layer 'ghost': not in the plan's layout (size unknown)" in text
    assert "  layer 'ghost': +1 unit  init random  reason grow (policy manual)" in text
    assert "k0 " + "x" * 59 + "…" in text and "k1 [1, a]" in text and "+2 more" in text


@pytest.mark.skipif(not FIXTURE.is_file(), reason=f"shared fixture {FIXTURE} is absent")
def test_fixture_summary() -> None:
    text = Plan.load(FIXTURE).summary()
    lines = text.splitlines()
    for line in [
        "Source:      selfmodifying-slm (library " + __import__("engine").__version__ + ")",
        "PRUNE: 72 units in 3 actions",
        "  layer '4': 1 unit [1→385]  reason low_activity (policy selfmodifying-slm)",
        "MERGE: none",
        "EXPAND: 96 units in 2 actions",
        "  layer '0': +64 units (256 → 320)  init zero_outgoing  reason high_saturation "
        "(policy selfmodifying-slm)",
        "  layer '0': 256 → 260  (-60 +64)",
        "  layer '4': 10 → 9  (-1)",
        "  tracked units: 394 → 418",
    ]:
        assert line in lines, f"{line!r} not in:\n{text}"
    assert any(line.startswith("  - prune: layer '4' is the last tracked layer") for line in lines)
