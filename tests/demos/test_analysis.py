"""demos/analysis.py --fast: the dataset-level findings agree with the saved statistics, the
report and every heatmap are written, and a rerun with the same seed gives the same findings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from demo_loading import load_demo, run

from engine.stats.snapshot import StatsSnapshot

LAYERS = {"fc1": 128, "fc2": 64, "fc_out": 10}
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path, str]:
    with pytest.MonkeyPatch.context() as mp:
        module = load_demo("analysis", mp)
        out = tmp_path_factory.mktemp("analysis") / "out"
        return module, out, run(module, "--out", str(out))


def test_findings_agree_with_the_saved_statistics(demo) -> None:
    _, out, _ = demo
    found = json.loads((out / "analysis.json").read_text())
    snapshot = StatsSnapshot.load(out / "stats")
    assert {name: f["units"] for name, f in found["layers"].items()} == LAYERS
    for name, layer in snapshot.layers.items():
        f = found["layers"][name]
        assert layer.count == f["samples"] == found["samples"]  # one pass over the train set
        dead = [i for i, d in zip(layer.neuron_ids, layer.dead.tolist()) if d]
        assert f["dead"] == dead
        assert not set(map(int, f["dormant"])) & set(dead)
        assert all(score <= 0.1 for score in f["dormant"].values())
        for pair in f["redundant_pairs"]:
            assert abs(pair["correlation"]) >= found["threshold"]
    assert snapshot.model_layout is not None  # the CLI can plan from it


def test_cka_matrix_is_a_similarity(demo) -> None:
    _, out, _ = demo
    cka = json.loads((out / "analysis.json").read_text())["cka"]
    assert cka["layers"] == ["input", *LAYERS]
    m = cka["matrix"]
    for i, row in enumerate(m):
        assert math.isclose(row[i], 1.0, abs_tol=1e-9)
        for j, v in enumerate(row):
            assert -1e-9 <= v <= 1.0 + 1e-9 and math.isclose(v, m[j][i], abs_tol=1e-12)


def test_report_and_heatmaps(demo) -> None:
    _, out, printed = demo
    report = (out / "report.txt").read_text()
    for section in ("LAYER SUMMARY", "REDUNDANT NEURON PAIRS", "DEAD AND DORMANT UNITS",
                    "LINEAR CKA BETWEEN LAYERS"):  # fmt: skip
        assert section in report
    names = [f"{kind}_{layer}.png" for kind in ("activity", "class_means", "correlation")
             for layer in LAYERS] + ["cka.png"]  # fmt: skip
    for name in names:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert str(out / "report.txt") in printed


def test_same_seed_same_findings(demo, tmp_path: Path) -> None:
    module, out, _ = demo
    run(module, "--out", str(tmp_path))
    first, again = (json.loads((d / "analysis.json").read_text()) for d in (out, tmp_path))
    assert first == again


def test_threshold_is_checked(demo, capsys: pytest.CaptureFixture[str]) -> None:
    module, _, _ = demo
    with pytest.raises(SystemExit):
        module.main(["--threshold", "1.5"])
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err
