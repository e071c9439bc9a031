"""The ResNet-18 propose benchmark runs in ``--fast`` mode (width 8) and reports consistent
numbers: both budget plans and Torch-Pruning reach the 30 % target, uniform allocation changes
every convolution (residual groups included), and the JSON holds every variant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch_pruning")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import resnet_propose  # noqa: E402


def test_fast_run_writes_consistent_numbers(tmp_path, capsys):
    out = tmp_path / "resnet_propose.json"
    threads = torch.get_num_threads()
    try:
        assert resnet_propose.main(["--fast", "--repeats", "2", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark runs on one thread
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert set(rows) == {"tp", "budget", "budget_uniform", "tp_full", "engine_full"}
    assert result["convs"] == 20
    for name in ("budget", "budget_uniform", "tp"):
        assert rows[name]["params_after"] <= result["target_params"], name
        assert rows[name]["median"] > 0
    assert rows["budget_uniform"]["convs_changed"] == 20  # coupled convs too
    assert rows["tp"]["convs_changed"] == 20 and rows["tp"]["ratio_to_tp"] == 1.0
    coupled = {"conv1", "layer1.0.conv2", "layer4.0.downsample.0"}
    assert coupled <= set(result["changed"]["budget_uniform"])
    printed = capsys.readouterr().out
    assert "budget_uniform" in printed
    assert f"Torch-Pruning {result['versions']['torch_pruning']}" in printed
