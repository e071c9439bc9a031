"""Training-thread cost of a weight snapshot at 1.07M parameters, written in the background.

Variants, timed side by side (median of interleaved repeats, ratios per repeat):

* ``step``: one training step of the MLP 784-1024-256-10 (batch 256, Adam): the yardstick;
* ``sync``: ``WeightTracker(background=False).snapshot()``: copy, serialise, write, fsync,
  rename, index; all on the training thread (what the issue measured at 31 ms);
* ``background``: ``WeightTracker().snapshot()``: the training thread copies the tensors and
  queues the write; the writer is drained between repeats, outside the timed region (the steady
  state when the disk keeps up: one snapshot per many steps);
* ``background_busy``: the same without draining, so a snapshot may wait for the one before
  (back-pressure when snapshots come faster than the disk takes them).

The issue's anchor is ≤ 3 ms on the training thread (the earlier Neuro Change Tracker: 8–13 ms);
milliseconds are printed as context next to the ratios. Run from the repository root::

    .venv/bin/python benchmarks/snapshot_thread.py --threads 1
    .venv/bin/python benchmarks/snapshot_thread.py --fast        # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from timing import interleave, summarize, timed

from engine.weights import WeightTracker

CPU = torch.device("cpu")


def make_model(hidden: int = 1024) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 256), nn.ReLU(), nn.Linear(256, 10)
    )  # fmt: skip


def run(repeats: int, hidden: int) -> dict:
    model = make_model(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    with tempfile.TemporaryDirectory() as tmp:
        keep = {"keep_last": 3}
        sync = WeightTracker(model, Path(tmp) / "sync", background=False, **keep)
        background = WeightTracker(model, Path(tmp) / "bg", **keep)
        busy = WeightTracker(model, Path(tmp) / "busy", **keep)
        for tracker in (sync, background, busy):
            tracker.snapshot()  # warm-up: folders, layouts, first file
        background.flush()

        def drained() -> float:
            seconds = timed(background.snapshot, CPU)
            background.flush()  # outside the timed region
            return seconds

        blocks = {
            "step": lambda: timed(step, CPU),
            "sync": lambda: timed(sync.snapshot, CPU),
            "background": drained,
            "background_busy": lambda: timed(busy.snapshot, CPU),
        }
        times = interleave(blocks, repeats)
        for tracker in (sync, background, busy):
            tracker.close()
    params = sum(p.numel() for p in model.parameters())

    def per(values: list[float], base: str) -> float:
        return round(summarize([v / b for v, b in zip(values, times[base])])["median"], 3)

    rows = {}
    for name, values in times.items():
        rows[name] = {
            "median_ms": round(summarize(values)["median"] * 1000, 3),
            "per_step": per(values, "step"),
            "per_sync": per(values, "sync"),
        }
    return {"params": params, "repeats": repeats, "threads": torch.get_num_threads(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fast", action="store_true", help="a small model, 5 repeats")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(5 if args.fast else args.repeats, 64 if args.fast else 1024)
    print(f"MLP 784-{1024 if not args.fast else 64}-256-10: {result['params']:,} parameters, "
          f"{result['threads']} thread(s), {result['repeats']} interleaved repeats")  # fmt: skip
    print(f"{'variant':<18}{'× step':>9}{'× sync':>9}{'median ms':>11}")
    for name, row in result["rows"].items():
        print(f"{name:<18}{row['per_step']:>9.3f}{row['per_sync']:>9.3f}{row['median_ms']:>11.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
