"""The overhead benchmark's sampling-window variant runs and tracks one step in ten (a smoke
test of the measurement, never of its timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import tracking_overhead


def test_a_tiny_run_reports_the_window_variant_with_its_coverage(capsys):
    case = tracking_overhead.CASES["mlp"]
    res = tracking_overhead.run_case(
        case, repeats=2, steps=1, warmup=1, optimizer="sgd", flush_every=None,
        device=torch.device("cpu"), seed=0, verbose=False, every=10, clock="cpu",
    )  # fmt: skip
    summary = res.summary()
    assert set(summary) == {"on", "on+snap", "1/10"}
    assert len(res.ratios_window) == 2 and all(r > 0 for r in res.ratios_window)
    tracking_overhead.print_table([res])
    assert "1/10" in capsys.readouterr().out
