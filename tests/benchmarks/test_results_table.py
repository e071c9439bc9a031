"""The results-table script runs in ``--fast`` mode and writes its table and per-seed numbers.

No accuracy is asserted (a fast run's numbers mean nothing); the structural facts are: the
engine's and Torch-Pruning's pruned models have the same widths and parameter counts, the widths
are the ones asked for, growth only grows, and every row of the catalogue is in both outputs.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("torch_pruning")

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import results_report  # noqa: E402
import results_rows as rr  # noqa: E402


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("results_table")
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results_table.py"), "--fast", "--out",
         str(out)],
        cwd=out,  # must not depend on the working directory
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"results_table.py failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return out, record, (out / "results.md").read_text(encoding="utf-8")


def test_writes_markdown_and_json_with_every_row(fast_run) -> None:
    _, record, text = fast_run
    assert record["settings"]["fast"] is True
    rows = record["rows"]
    assert {r["table"] for r in rows} == {"compression", "training"}
    seed_rows = record["per_seed"]["0"]
    for row in rows:
        assert row["label"] in text
        if row["key"] in record["skipped"]:  # only the self-modifying row may be skipped
            assert row["key"] == "mlp_self_modifying"
            continue
        metrics = seed_rows[row["key"]]
        assert row["key"] in record["summary"]
        assert 0.0 <= metrics["acc_final"] <= 100.0
        assert metrics["params"] > 0 and metrics["total_s"] >= 0.0
    assert "| row | hidden widths |" in text and "Targets (issue #7)" in text
    assert {t["met"] for t in record["targets"]} <= {True, False, None, "info"}


def test_engine_and_torch_pruning_rows_have_equal_sizes(fast_run) -> None:
    _, record, _ = fast_run
    seed_rows = record["per_seed"]["0"]
    assert seed_rows["mlp_baseline"]["params"] == 17226  # 64·128+128 + 128·64+64 + 64·10+10
    for keep, widths in ((50, [64, 32]), (30, [38, 19])):
        engine, tp = seed_rows[f"mlp_engine_{keep}"], seed_rows[f"mlp_tp_{keep}"]
        assert engine["widths"] == tp["widths"] == widths
        assert engine["params"] == tp["params"] < seed_rows["mlp_baseline"]["params"]
        assert seed_rows[f"mlp_engine_{keep}_kept_opt"]["params"] == engine["params"]
    cnn_engine, cnn_tp = seed_rows["cnn_engine_50"], seed_rows["cnn_tp_50"]
    assert cnn_engine["widths"] == cnn_tp["widths"] == [8, 16, 32]
    assert cnn_engine["params"] == cnn_tp["params"] < seed_rows["cnn_baseline"]["params"]


def test_growth_rows_only_grow_within_the_cap(fast_run) -> None:
    _, record, _ = fast_run
    seed_rows = record["per_seed"]["0"]
    assert seed_rows["mlp_small"]["widths"] == list(rr.SMALL)
    for init in ("net2net", "random"):
        row = seed_rows[f"mlp_grow_{init}"]
        assert row["start_widths"] == list(rr.SMALL)
        assert all(s <= w <= rr.WIDE[0] for s, w in zip(rr.SMALL, row["widths"]))
        assert row["surgeries"] == len(row["history"])


def test_kept_widths() -> None:
    assert rr.kept_widths(rr.WIDE, 0.5) == (64, 32)
    assert rr.kept_widths(rr.WIDE, 0.3) == (38, 19)  # above min_keep_fraction 0.25
    assert rr.kept_widths((16, 32, 64), 0.5) == (8, 16, 32)


def test_both_prunings_reach_the_same_widths_in_process() -> None:
    torch.manual_seed(0)
    model = rr.demo_utils.mlp(rr.WIDE)
    x = torch.rand(200, 64)
    targets = {"fc1": 38, "fc2": 19}
    engine_model, tp_model = copy.deepcopy(model), copy.deepcopy(model)
    rr.engine_prune(engine_model, x, targets)
    rr.tp_prune(tp_model, x[:2], targets)
    assert rr.widths_of(engine_model, rr.MLP_LAYERS) == rr.widths_of(tp_model, rr.MLP_LAYERS)
    assert rr.demo_utils.count_parameters(engine_model) == rr.demo_utils.count_parameters(tp_model)
    with pytest.raises(RuntimeError, match="expected"):
        rr.check_widths(engine_model, {"fc1": 40}, "test")


def _stat(mean: float) -> dict[str, float]:
    return {"mean": mean, "std": 0.0, "n": 1}


def test_check_targets_judges_means_and_marks_missing_rows() -> None:
    summary = {
        "mlp_baseline": {"acc_surgery": _stat(96.0)},
        "mlp_engine_50": {"acc_surgery": _stat(95.5), "acc_final": _stat(97.0)},
        "mlp_tp_50": {"acc_surgery": _stat(78.0), "acc_final": _stat(97.5)},
        "mlp_wide": {"acc_final": _stat(96.0)},
        "mlp_small": {"acc_final": _stat(95.0)},
        "mlp_grow_random": {"acc_final": _stat(95.2)},
    }
    per_seed = {0: {"mlp_engine_50": {"acc_final": 97.0}, "mlp_tp_50": {"acc_final": 97.5}}}
    targets = results_report.check_targets(summary, per_seed, keep=(0.5,), cnn_keep=0.5)
    met = {t["target"].split(":")[0]: t["met"] for t in targets}
    assert met["MLP right after surgery, 50 % kept"] is True  # 0.5 points below
    assert met["MLP after fine-tune, 50 % kept"] is False  # 97.0 < 97.5
    assert met["growth (random) ends within 1 point of the wide baseline"] is True
    assert met["growth (net2net) ends within 1 point of the wide baseline"] is None  # not run
    small = next(t for t in targets if t["target"].startswith("the small network"))
    assert small["met"] is False  # 1 point below is not "well below"
    fine_tune = next(t for t in targets if t["target"].startswith("MLP after fine-tune"))
    assert fine_tune["seeds_engine_ge_tp"] == "0/1"
