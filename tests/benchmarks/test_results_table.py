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
import results_training as rt  # noqa: E402


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
        tp = seed_rows[f"mlp_tp_{keep}"]
        assert tp["widths"] == widths and tp["params"] < seed_rows["mlp_baseline"]["params"]
        for key in (f"mlp_engine_{keep}", f"mlp_engine_layerwise_{keep}",
                    f"mlp_engine_{keep}_kept_opt"):  # fmt: skip
            assert seed_rows[key]["widths"] == widths, key
            assert seed_rows[key]["params"] == tp["params"], key
            assert seed_rows[key]["acc_bn"] is None  # no BatchNorm in the MLP
    cnn_tp = seed_rows["cnn_tp_50"]
    assert cnn_tp["widths"] == [8, 16, 32]
    assert cnn_tp["params"] < seed_rows["cnn_baseline"]["params"]
    for key in ("cnn_engine_50", "cnn_engine_layerwise_50", "cnn_engine_50_kept_opt", "cnn_tp_50"):
        row = seed_rows[key]
        assert row["widths"] == [8, 16, 32] and row["params"] == cnn_tp["params"], key
        assert 0.0 <= row["acc_bn"] <= 100.0 and row["loss_final"] > 0.0, key


def test_growth_rows_only_grow_within_the_cap(fast_run) -> None:
    _, record, text = fast_run
    seed_rows = record["per_seed"]["0"]
    assert seed_rows["mlp_small"]["widths"] == list(rr.SMALL)
    assert set(record["settings"]["growth_settings"]) == set(rt.GROWTH_INITS)
    assert "zero_outgoing" in rt.GROWTH_INITS and "zero_outgoing init" in text
    for init in rt.GROWTH_INITS:
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


def test_layerwise_engine_prune_on_the_cnn() -> None:
    torch.manual_seed(0)
    model = rr.demo_utils.small_cnn(rr.CNN_CHANNELS, rr.CNN_HIDDEN)
    x = torch.rand(200, 1, 8, 8)
    model(x)  # running statistics that are not the defaults
    targets = dict(zip(rr.CNN_LAYERS, rr.kept_widths((16, 32, 64), 0.5)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tp_model = copy.deepcopy(model)
    rr.engine_prune_layerwise(model, x, targets, opt)
    rr.tp_prune(tp_model, x[:2], targets)
    assert rr.widths_of(model, rr.CNN_LAYERS) == [8, 16, 32]
    assert rr.demo_utils.count_parameters(model) == rr.demo_utils.count_parameters(tp_model)
    assert model.training  # calibration and recalibration restore the mode
    assert model.bn1.momentum == model.bn2.momentum == 0.1
    in_optimizer = {id(p) for group in opt.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters()}  # the optimizer was remapped


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
        "cnn_engine_layerwise_50": {"acc_final": _stat(98.5), "loss_final": _stat(0.061234)},
        "cnn_tp_50": {"acc_final": _stat(98.4), "loss_final": _stat(0.08)},
    }
    per_seed = {
        0: {"mlp_engine_50": {"acc_final": 97.0}, "mlp_tp_50": {"acc_final": 97.5},
            "cnn_engine_layerwise_50": {"acc_final": 98.5}, "cnn_tp_50": {"acc_final": 98.4}}
    }  # fmt: skip
    targets = results_report.check_targets(summary, per_seed, keep=(0.5,), cnn_keep=0.5)
    by_start = {t["target"]: t for t in targets}

    def find(*parts: str) -> dict:
        (hit,) = [t for name, t in by_start.items() if all(p in name for p in parts)]
        return hit

    assert len(by_start) == len(targets)
    assert find("MLP right after", "50 %", "one plan")["met"] is True  # 0.5 points below
    assert find("MLP right after", "50 %", "layer by layer")["met"] is None  # not run
    one_plan = find("MLP after fine-tune", "50 %", "one plan")
    assert one_plan["met"] is False and one_plan["seeds_engine_ge_tp"] == "0/1"  # 97.0 < 97.5
    assert one_plan["engine_minus_tp"] == "-0.50 ± 0.00 se"
    assert find("growth (random)")["met"] is True
    assert find("growth (net2net)")["met"] is None  # not run
    assert find("growth (zero_outgoing)")["met"] is None
    assert find("the small network")["met"] is False  # 1 point below is not "well below"
    cnn = find("CNN after fine-tune", "layer by layer")
    assert cnn["met"] is True and cnn["seeds_engine_ge_tp"] == "1/1"
    assert cnn["engine_test_loss"] == 0.0612  # losses keep 4 decimals
    assert find("CNN after fine-tune", "one plan")["met"] is None
