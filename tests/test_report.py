"""Text reports on snapshots with planted dead and duplicate units."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

from engine import ConfigurationError, NeuronEngine, StatsSnapshot
from engine.report import (
    activation_summary,
    activity_ranking,
    full_report,
    layer_summary_report,
    redundancy_report,
    redundant_pairs,
    save_report,
)
from engine.stats import CoMoments, Moments
from engine.stats.snapshot import LayerSnapshot


@pytest.fixture(scope="module")
def engine_snapshot() -> StatsSnapshot:
    """fc1 (IDs 0-5): unit 1 dead (w=0, b=-1), unit 4 a copy of unit 2; correlation on fc1 only.
    fc2 (IDs 6-9): bias +10 so every unit always fires (ties on firing rate)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(5, 6), act1=nn.ReLU(), fc2=nn.Linear(6, 4), act2=nn.ReLU())
    )
    with torch.no_grad():
        model.fc1.weight[1].zero_()
        model.fc1.bias[1] = -1.0
        model.fc1.weight[4] = model.fc1.weight[2]
        model.fc1.bias[4] = model.fc1.bias[2]
        model.fc2.bias.fill_(10.0)
    engine = NeuronEngine(model, correlation=["fc1"])
    with engine.tracking(), torch.no_grad():
        for _ in range(4):
            model(torch.randn(64, 5))
    return engine.snapshot(run="planted")


@pytest.fixture(scope="module")
def exact_snapshot() -> StatsSnapshot:
    """Hand-made activations: u2 = 2·u0 + 1, u3 = −3·u0 + 0.5, u1 ≡ 0 (dead), u4 independent."""
    g = torch.Generator().manual_seed(1)
    u0, u4 = torch.randn(300, generator=g, dtype=torch.float64), torch.randn(300, generator=g)
    x = torch.stack([u0, torch.zeros(300), 2 * u0 + 1, -3 * u0 + 0.5, u4.double()], dim=1)
    obs = {"hook": "act", "chain": ["act:relu"], "replayed": [], "fallback": None}
    layer = LayerSnapshot(
        "enc",
        "Linear",
        [10, 11, 12, 13, 14],
        Moments.from_samples(x),
        CoMoments.from_samples(x),
        obs,
    )
    return StatsSnapshot({"enc": layer})


def _cells(text: str) -> list[list[str]]:
    """Cells of the table rows that start with a number."""
    return [c for c in (line.split() for line in text.splitlines()) if c and c[0].isdigit()]


def _row(text: str, first: str) -> list[str]:
    """The cells of the table row that starts with ``first``."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row starting with {first!r} in:\n{text}")


# --- activation summary ------------------------------------------------------------------------
def test_activation_summary_has_every_neuron_and_flags_the_dead_one(engine_snapshot):
    text = activation_summary(engine_snapshot)
    for header in ("Neuron ID", "Layer", "Local idx", "Mean", "Variance", "Std", "Firing rate"):
        assert header in text
    rows = {int(c[0]): c for c in _cells(text)}
    assert sorted(rows) == list(range(10))
    assert rows[1][1:3] == ["fc1", "1"]
    assert "DEAD" in rows[1]
    assert rows[1][-1] == "256"  # samples
    assert all("DEAD" not in rows[i] for i in (0, 2, 3, 4, 5, 6, 7, 8, 9))
    assert rows[7][1:3] == ["fc2", "1"]
    stats = engine_snapshot.neuron(7)
    assert rows[7][3] == f"{stats['mean']:.4f}"
    assert rows[7][9] == "1.0000"  # firing rate


def test_activation_summary_limit_caps_rows(engine_snapshot):
    text = activation_summary(engine_snapshot, limit=3)
    assert "… 7 more neurons not shown (limit=3)" in text
    assert _row(text, "2")[1] == "fc1"
    assert "\n3 " not in text


# --- layer summary -----------------------------------------------------------------------------
def test_layer_summary_counts_dead_units_and_percentages(engine_snapshot):
    text = layer_summary_report(engine_snapshot)
    assert "Samples processed: 256" in text
    assert "Firing threshold: activation > 0" in text
    assert _row(text, "fc1")[2:5] == ["6", "1", "16.7%"]
    fc2 = _row(text, "fc2")
    assert fc2[2:6] == ["4", "0", "0.0%", "1.000"]
    assert _row(text, "TOTAL")[1:4] == ["10", "1", "10.0%"]
    dead = text.split("DEAD NEURONS DETAILS:")[1]
    assert "fc1: 1 dead neuron\n  Local indices: [1]\n  Neuron IDs:    [1]" in dead
    assert "fc2:" not in dead


def test_layer_summary_reports_observation_points(engine_snapshot):
    text = layer_summary_report(engine_snapshot).split("OBSERVATION POINTS:")[1]
    assert _row(text, "fc1")[1:3] == ["act1", "act1:relu"]
    assert _row(text, "fc2")[1:3] == ["act2", "act2:relu"]


def test_layer_summary_shows_fallback_reason():
    x = torch.rand(10, 2)
    obs = {"hook": "fc", "chain": [], "replayed": [], "fallback": "layer is called twice"}
    layer = LayerSnapshot("fc", "Linear", [0, 1], Moments.from_samples(x), None, obs)
    text = layer_summary_report(StatsSnapshot({"fc": layer}))
    assert "fc: fallback to the layer output (layer is called twice)" in text
    assert "No dead neurons." in text


# --- redundancy --------------------------------------------------------------------------------
def test_redundant_pairs_finds_the_planted_copy(engine_snapshot):
    pairs = redundant_pairs(engine_snapshot, threshold=0.999)
    assert list(pairs) == ["fc1"]  # fc2 has no correlation state
    (pair,) = pairs["fc1"]
    assert pair["neuron_ids"] == (2, 4)
    assert pair["local_indices"] == (2, 4)
    assert pair["correlation"] == pytest.approx(1.0)
    assert pair["alpha"] == pytest.approx(1.0)
    assert pair["beta"] == pytest.approx(0.0, abs=1e-6)


def test_redundancy_report_text(engine_snapshot):
    text = redundancy_report(engine_snapshot, threshold=0.999)
    assert _row(text, "fc1")[1:7] == ["(2,", "4)", "(2,", "4)", "1.0000", "1.0000"]
    summary = text.split("REDUNDANCY BY LAYER:")[1]
    assert _row(summary, "fc1")[1:6] == ["6", "256", "1", "2", "33.3%"]
    assert "fc2: correlation not tracked" in summary
    assert "Total redundant pairs: 1" in text


def test_redundant_pairs_exact_fits_signs_and_order(exact_snapshot):
    pairs = redundant_pairs(exact_snapshot, threshold=0.9)["enc"]
    found = {p["local_indices"]: p for p in pairs}
    assert set(found) == {(0, 2), (0, 3), (2, 3)}  # the dead unit (NaN r) is ignored
    expected = {(0, 2): (1.0, 2.0, 1.0), (0, 3): (-1.0, -3.0, 0.5), (2, 3): (-1.0, -1.5, 2.0)}
    for key, (r, alpha, beta) in expected.items():
        assert found[key]["correlation"] == pytest.approx(r)
        assert (found[key]["alpha"], found[key]["beta"]) == pytest.approx((alpha, beta))
    assert found[(0, 2)]["neuron_ids"] == (10, 12)
    strengths = [abs(p["correlation"]) for p in pairs]
    assert strengths == sorted(strengths, reverse=True)


def test_redundancy_report_exact_text(exact_snapshot):
    text = redundancy_report(exact_snapshot, threshold=0.9)
    assert re.search(r"\(10, 12\)\s+\(0, 2\)\s+1\.0000\s+2\.0000\s+1\.0000", text)
    assert re.search(r"\(10, 13\)\s+\(0, 3\)\s+-1\.0000\s+-3\.0000\s+0\.5000", text)
    assert re.search(r"\(12, 13\)\s+\(2, 3\)\s+-1\.0000\s+-1\.5000\s+2\.0000", text)
    summary = text.split("REDUNDANCY BY LAYER:")[1]
    assert _row(summary, "enc")[1:6] == ["5", "300", "3", "3", "60.0%"]


def test_redundancy_limit_and_threshold_validation(exact_snapshot):
    text = redundancy_report(exact_snapshot, threshold=0.9, limit=1)
    assert "… 2 more pairs" in text
    assert "Total redundant pairs: 3" in text
    with pytest.raises(ConfigurationError, match="threshold"):
        redundant_pairs(exact_snapshot, threshold=1.5)


def test_redundancy_report_without_pairs():
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(2))
    layer = LayerSnapshot(
        "fc", "Linear", [0, 1, 2], Moments.from_samples(x), CoMoments.from_samples(x)
    )
    text = redundancy_report(StatsSnapshot({"fc": layer}), threshold=0.9)
    assert "No redundant pairs." in text
    assert _row(text.split("REDUNDANCY BY LAYER:")[1], "fc")[1:6] == ["3", "500", "0", "0", "0.0%"]


# --- activity ranking --------------------------------------------------------------------------
def _ranked_ids(section: str) -> list[int]:
    return [int(c[1]) for c in _cells(section)]


def test_activity_ranking_order(engine_snapshot):
    text = activity_ranking(engine_snapshot, top=10)
    most, least = text.split("LEAST ACTIVE")
    units = [engine_snapshot.neuron(i) for i in range(10)]
    by_activity = sorted(units, key=lambda s: (-s["firing_rate"], -s["mean_abs"]))
    assert _ranked_ids(most) == [s["neuron_id"] for s in by_activity]
    by_inactivity = sorted(units, key=lambda s: (s["firing_rate"], s["mean_abs"]))
    assert _ranked_ids(least) == [s["neuron_id"] for s in by_inactivity]
    assert _ranked_ids(least)[0] == 1  # the dead unit
    assert set(_ranked_ids(most)[:4]) == {6, 7, 8, 9}  # fc2 always fires


def test_activity_ranking_top_caps_and_validates(engine_snapshot):
    full_most, full_least = activity_ranking(engine_snapshot, top=50).split("LEAST ACTIVE")
    text = activity_ranking(engine_snapshot, top=2)
    assert "TOP 2 MOST ACTIVE" in text
    most, least = text.split("LEAST ACTIVE")
    assert _ranked_ids(most) == _ranked_ids(full_most)[:2]
    assert _ranked_ids(least) == _ranked_ids(full_least)[:2]
    assert len(_ranked_ids(full_most)) == 10
    with pytest.raises(ConfigurationError):
        activity_ranking(engine_snapshot, top=-1)


# --- full report, persistence ------------------------------------------------------------------
def test_full_report_has_every_section(engine_snapshot):
    text = full_report(engine_snapshot, top=3, threshold=0.999)
    for title in (
        "COMPREHENSIVE NEURON ACTIVITY REPORT",
        "DATASET-LEVEL NEURON ANALYSIS REPORT",
        "NEURON ACTIVITY RANKING",
        "NEURON CORRELATION ANALYSIS REPORT",
        "ACTIVATION STATISTICS SUMMARY",
    ):
        assert title in text
    assert "run: planted" in text
    assert "Neurons: 10" in text


def test_reports_survive_save_and_load(engine_snapshot, tmp_path):
    loaded = StatsSnapshot.load(engine_snapshot.save(tmp_path / "stats"))
    assert full_report(loaded, top=5, threshold=0.95) == full_report(
        engine_snapshot, top=5, threshold=0.95
    )
    assert redundant_pairs(loaded, 0.999)["fc1"][0]["neuron_ids"] == (2, 4)


def test_save_report_writes_atomically(tmp_path):
    path = save_report(tmp_path / "sub" / "report.txt", "hello")
    assert path.read_text() == "hello\n"
    assert list(path.parent.iterdir()) == [path]


def test_reports_handle_an_empty_snapshot():
    empty = LayerSnapshot("fc", "Linear", [0, 1], Moments.empty(2), CoMoments.empty(2))
    snap = StatsSnapshot({"fc": empty})
    text = full_report(snap)
    assert "Samples processed: 0" in text
    assert _row(text.split("LAYER SUMMARY:")[1], "fc")[2:6] == ["2", "0", "0.0%", "-"]
    assert "No redundant pairs." in text
    assert full_report(StatsSnapshot({}))
