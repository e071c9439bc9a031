"""Every issue-#20 speed ratio against its anchor, in one run and one table (``make bench``).

Rows (each a median of interleaved repeats, see ``timing.py``):

* tracking on ÷ off per training step: MLP (≤ 1.05×), MLP with correlation (≤ 1.2×),
  ResNet-like CNN (≤ 1.3×); ``benchmarks/tracking_overhead.py``;
* a sampling window tracking 1 step of every 10 ÷ off (≤ 1.01×, amortised), on the same models;
* a weight snapshot at 1.07M parameters written in the background: ms on the training thread
  (≤ 3 ms); ``benchmarks/snapshot_thread.py``;
* with ``--compile BACKEND`` (e.g. ``aot_eager``; ``inductor`` compiles for about 35 s here):
  the compiled MLP step with tracking ÷ the compiled step without (no anchor in the issue; the
  eager target is 1.05×). Hooks are attached before the first compiled call, as the README's
  ``torch.compile`` rule says, and ``skip_nnmodule_hook_guards`` is off so both states compile.

Run from the repository root::

    .venv/bin/python benchmarks/speed_report.py                  # about 3 minutes
    .venv/bin/python benchmarks/speed_report.py --clock cpu --compile aot_eager --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

import snapshot_thread
from timing import interleave, summarize
from tracking_overhead import CASES, WINDOW_TARGET, make_mlp, run_case, timed

from engine import NeuronEngine

CPU = torch.device("cpu")


def compiled_ratio(backend: str, repeats: int, steps: int, clock: str) -> dict[str, float]:
    """Compiled MLP step with tracking ÷ without (both states compiled once, then cached)."""
    torch._dynamo.config.skip_nnmodule_hook_guards = False  # hooks on/off: guarded, cached
    torch.manual_seed(0)
    model = make_mlp()
    compiled = torch.compile(model, backend=backend)
    engine = NeuronEngine(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
    loss_fn = nn.CrossEntropyLoss()

    def train(k: int) -> None:
        for _ in range(k):
            loss_fn(compiled(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def on() -> float:
        engine.start()
        try:
            return timed(lambda: train(steps), CPU, clock)
        finally:
            engine.stop()
            engine.snapshot()

    engine.start()
    train(3)  # compiles the tracked state first (attach, then compile)
    engine.stop()
    train(3)
    times = interleave({"off": lambda: timed(lambda: train(steps), CPU, clock), "on": on}, repeats)
    ratios = [a / b for a, b in zip(times["on"], times["off"])]
    return {**summarize(ratios), "off_ms": 1e3 * statistics.median(times["off"]) / steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=15, help="interleaved repeats per case")
    p.add_argument("--snapshot-repeats", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--compile", default=None, metavar="BACKEND", help="e.g. aot_eager")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"speed report: threads={args.threads}, clock={args.clock}, torch {torch.__version__}")
    rows: list[tuple[str, str, float, float, float, str]] = []  # what, anchor, median, q1, q3

    window_rows = []
    for name in ("mlp", "mlp_corr", "resnet"):
        case = CASES[name]
        res = run_case(
            case, repeats=args.repeats, steps=case.steps, warmup=5, optimizer="sgd",
            flush_every=None, device=CPU, seed=0, verbose=False, every=10, clock=args.clock,
        )  # fmt: skip
        s = res.summary()
        on, win = s["on"], s["1/10"]
        rows.append((f"tracking on: {name}", f"≤ {case.target:.2f}×", on["median"], on["q1"],
                     on["q3"], "PASS" if on["pass"] else "miss"))  # fmt: skip
        window_rows.append((f"window 1/10: {name}", f"≤ {WINDOW_TARGET:.2f}×", win["median"],
                            win["q1"], win["q3"], "PASS" if win["pass"] else "miss"))  # fmt: skip
        print(f"  {name}: done ({res.repeats}x{res.steps}, off {res.step_ms['off']:.2f} ms/step)")
    rows += window_rows

    snap = snapshot_thread.run(args.snapshot_repeats, 1024)
    bg = snap["rows"]["background"]["median_ms"]
    sync = snap["rows"]["sync"]["median_ms"]
    rows.append(
        ("snapshot, background (ms)", "≤ 3 ms", bg, sync, sync, "PASS" if bg <= 3 else "miss")
    )
    print(f"  snapshot: done ({snap['params']:,} parameters; sync write {sync:.1f} ms)")

    if args.compile:
        c = compiled_ratio(args.compile, args.repeats, 20, args.clock)
        rows.append((f"compiled ({args.compile}): mlp", "—", c["median"], c["q1"], c["q3"], ""))
        print(f"  compiled: done (off {c['off_ms']:.2f} ms/step)")

    print()
    print(f"{'measure':<30} {'anchor':>8} {'median':>8}   {'q1-q3':<13} result")
    print("-" * 72)
    for what, anchor, median, q1, q3, verdict in rows:
        if what.startswith("snapshot"):
            spread = f"sync {q1:.1f} ms"
            print(f"{what:<30} {anchor:>8} {median:>7.2f}    {spread:<13} {verdict}")
        else:
            print(f"{what:<30} {anchor:>8} {median:>7.3f}×   {q1:.3f}-{q3:.3f}  {verdict}")
    print("\nratios: variant ÷ off per interleaved repeat; medians (IQR) over repeats.")
    if args.json:
        keys = ("measure", "anchor", "median", "q1", "q3", "result")
        payload = {
            "threads": args.threads,
            "clock": args.clock,
            "rows": [dict(zip(keys, r)) for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
