"""Weight tracking cost on a 1.07M-parameter MLP (784-1024-256-10): median milliseconds.

Cases (each repeated ``--repeats`` times after a warm-up; the median and the inter-quartile
range are printed):

* ``snapshot``: ``tracker.snapshot()``: copy of the state dict, safetensors file and JSON index
  written atomically (fsync included), neuron IDs and unit axes recorded;
* ``snapshot_fp16``: the same with ``dtype=torch.float16``;
* ``compare_memory``: ``tracker.compare()`` of the latest two snapshots (held in memory);
* ``compare_disk``: ``compare_snapshots`` of two snapshots read lazily from disk;
* ``capture+compare``: one snapshot then the comparison with the previous one (the unit the
  old Neuro Change Tracker needed 8-13 ms for);
* ``plot_*``: each plot of a three-snapshot run, PNG written.

Run from the repository root::

    python benchmarks/weight_tracking.py            # ~20 s
    python benchmarks/weight_tracking.py --repeats 5 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from engine import NeuronEngine
from engine.weights import WeightTracker, compare_snapshots
from engine.weights.plots import (
    plot_architecture_timeline,
    plot_change_histogram,
    plot_layer_change,
    plot_total_change,
    plot_weight_heatmap,
    plot_weight_trajectories,
)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10)
    )  # fmt: skip


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "q1_ms": q[0], "q3_ms": q[2]}


def nudge(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = make_model()
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(8, 784))
    n_params = sum(p.numel() for p in model.parameters())
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tracker = WeightTracker(engine, Path(tmp) / "fp32")
        tracker.snapshot()
        results["snapshot"] = timed(tracker.snapshot, args.repeats)
        half = WeightTracker(engine, Path(tmp) / "fp16", dtype=torch.float16)
        results["snapshot_fp16"] = timed(half.snapshot, args.repeats)
        results["compare_memory"] = timed(tracker.compare, args.repeats)
        a, b = tracker.store.snapshots()[:2]  # fresh objects: tensors on disk
        results["compare_disk"] = timed(lambda: compare_snapshots(a, b), args.repeats)

        def capture_and_compare() -> None:
            nudge(model)
            tracker.snapshot()
            tracker.compare()

        results["capture+compare"] = timed(capture_and_compare, args.repeats)

        run = WeightTracker(engine, Path(tmp) / "plots")
        for _ in range(3):
            nudge(model)
            run.snapshot()
        snaps, series, out = run.snapshots(), run.compare_consecutive(), Path(tmp) / "png"
        plots = {
            "plot_total_change": lambda: plot_total_change(series, path=out / "t.png"),
            "plot_layer_change": lambda: plot_layer_change(series, path=out / "l.png"),
            "plot_heatmap_784x1024": lambda: plot_weight_heatmap(
                snaps[0], snaps[-1], "0.weight", path=out / "h.png"
            ),
            "plot_histogram": lambda: plot_change_histogram(
                snaps[0], snaps[-1], path=out / "d.png"
            ),
            "plot_trajectories": lambda: plot_weight_trajectories(
                snaps, "0.weight", path=out / "w.png"
            ),
            "plot_architecture": lambda: plot_architecture_timeline(snaps, path=out / "a.png"),
        }
        for name, fn in plots.items():
            results[name] = timed(fn, max(3, args.repeats // 4))
    print(f"MLP 784-1024-256-10: {n_params:,} parameters, torch threads {torch.get_num_threads()}")
    for name, r in results.items():
        print(
            f"  {name:24s} median {r['median_ms']:8.2f} ms  (IQR {r['q1_ms']:.2f}-{r['q3_ms']:.2f})"
        )
    if args.json:
        args.json.write_text(json.dumps({"params": n_params, "results": results}, indent=2))


if __name__ == "__main__":
    main()
