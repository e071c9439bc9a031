"""Cost of gradient tracking in a training step: ``GradientTracker`` every step vs none.

Model: MLP 784-256-128-10 (ReLU, ~235k parameters), batch 256, cross-entropy, SGD with
momentum. Each repeat times two blocks of K steps back to back in an order that alternates from
repeat to repeat: ``off`` (plain training) and ``on`` (the same optimizer with the tracker's
step pre-hook: one record per step, ``every=1``). The ratio ``on / off`` is taken per repeat;
the median and IQR over repeats are reported, PASS when the median is at most the target
(1.2×). ``history()`` (the only host sync) runs after the timed blocks.

    .venv/bin/python benchmarks/gradient_tracking.py --threads 1
    .venv/bin/python benchmarks/gradient_tracking.py --quick       # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from engine.dynamics import GradientTracker

TARGET = 1.2


def make_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    *, repeats: int, steps: int, warmup: int, device: torch.device, seed: int, every: int
) -> dict:
    torch.manual_seed(seed)
    model = make_mlp().to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tracker = GradientTracker(model, eps=1e-5, every=every)
    gen = torch.Generator().manual_seed(seed + 1)
    xs = [torch.randn(256, 784, generator=gen).to(device) for _ in range(4)]
    ys = [torch.randint(0, 10, (256,), generator=gen).to(device) for _ in range(4)]
    loss_fn = nn.CrossEntropyLoss()
    cursor = 0

    def train_steps(k: int) -> None:
        nonlocal cursor
        for _ in range(k):
            i = cursor % len(xs)
            cursor += 1
            loss = loss_fn(model(xs[i]), ys[i])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def block(variant: str) -> float:
        gc.collect()
        gc.disable()
        try:
            _sync(device)
            t0 = time.perf_counter()
            if variant == "off":
                train_steps(steps)
            else:
                with tracker.tracking(opt):
                    train_steps(steps)
            _sync(device)
            return time.perf_counter() - t0
        finally:
            gc.enable()

    train_steps(warmup)
    with tracker.tracking(opt):
        train_steps(warmup)
    times: dict[str, list[float]] = {"off": [], "on": []}
    ratios = []
    for r in range(repeats):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        t = {v: block(v) for v in order}
        for v in t:
            times[v].append(t[v])
        ratios.append(t["on"] / t["off"])
    t0 = time.perf_counter()
    hist = tracker.history()
    history_ms = 1e3 * (time.perf_counter() - t0)
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "repeats": repeats,
        "steps": steps,
        "every": every,
        "ratios": ratios,
        "median": statistics.median(ratios),
        "q1": q1,
        "q3": q3,
        "ms_per_step": {v: 1e3 * statistics.median(ts) / steps for v, ts in times.items()},
        "records": len(hist.steps),
        "history_ms": history_ms,
        "pass": statistics.median(ratios) <= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=21, help="interleaved repeats (default 21)")
    p.add_argument("--steps", type=int, default=20, help="training steps per block (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps (default 5)")
    p.add_argument("--every", type=int, default=1, help="record one step in N (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default all)")
    p.add_argument("--quick", action="store_true", help="tiny counts: smoke run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if the median misses")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup = 3, 2, 1
    if args.repeats < 2 or args.steps < 1 or args.warmup < 1:
        p.error("need --repeats >= 2, --steps >= 1 and --warmup >= 1")
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    config = {
        "threads": threads,
        "device": args.device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print("gradient tracking overhead: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    res = run(
        repeats=args.repeats,
        steps=args.steps,
        warmup=args.warmup,
        device=torch.device(args.device),
        seed=args.seed,
        every=args.every,
    )
    ms = res["ms_per_step"]
    verdict = "PASS" if res["pass"] else "FAIL"
    print(
        f"MLP 784-256-128-10, batch 256, {res['parameters']} parameters, every={res['every']}: "
        f"on/off median {res['median']:.3f}x (IQR {res['q1']:.3f}-{res['q3']:.3f}), "
        f"target {TARGET:.2f}x {verdict}\n"
        f"ms/step off {ms['off']:.2f}, on {ms['on']:.2f} "
        f"(+{ms['on'] - ms['off']:.2f} ms); {res['repeats']} repeats x {res['steps']} steps; "
        f"history() of {res['records']} records: {res['history_ms']:.1f} ms"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": config, "result": res}, indent=2))
        print(f"wrote {args.json}")
    return 1 if args.strict and not res["pass"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
