"""Cost of gradient tracking in a training step: ``GradientTracker`` vs none, and per call.

Model: MLP 784-256-128-10 (ReLU, 235k parameters), batch 256, cross-entropy, SGD with
momentum. Each repeat times blocks of K training steps back to back, in an order that rotates
from repeat to repeat: ``off`` (plain training) and one block per ``--every`` value (the same
optimizer with the tracker's step pre-hook, one tracker per value). The ratio ``every=N / off``
is taken per repeat; the median and IQR over repeats are reported, PASS when the every-step
median is at most the target (1.2×). ``history()`` (the only host sync) runs after the timed
blocks.

Per call: ``tracker.update()`` alone, called back to back (gradients in place, every call
recorded, buffers warm: a lower bound), median and IQR of single-call times, on the same MLP and
on MLP 784-154-10 (122k parameters, the size at which the original Keras callback took 34 ms
per call). Inside training the buffers are cold: the ``ms/step`` difference of the interleaved
blocks is the cost per step that counts.

    .venv/bin/python benchmarks/gradient_tracking.py --threads 2
    .venv/bin/python benchmarks/gradient_tracking.py --every 1 --repeats 41
    .venv/bin/python benchmarks/gradient_tracking.py --quick       # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from timing import interleave, ratios, summarize, synchronize, timed

from engine.dynamics import GradientTracker

TARGET = 1.2
KERAS_MS = 34.0
"""The original Keras callback, per call, at 122k parameters."""


def make_mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def variant_name(kernel: str, every: int) -> str:
    """``every=N`` for the default kernel, ``torch every=N`` for the tensor-op one."""
    return f"every={every}" if kernel == "auto" else f"{kernel} every={every}"


def run(
    *,
    repeats: int,
    steps: int,
    warmup: int,
    device: torch.device,
    seed: int,
    every: list[int],
    kernels: list[str],
    make_tracker: Callable[..., GradientTracker] = GradientTracker,
) -> dict:
    """Interleaved blocks: ``off`` and ``every=N`` for each N and kernel; ratios per repeat."""
    torch.manual_seed(seed)
    model = make_mlp(784, 256, 128, 10).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trackers = {
        variant_name(kernel, n): make_tracker(model, eps=1e-5, every=n, kernel=kernel)
        for kernel in kernels
        for n in every
    }
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

    def tracked(tracker: GradientTracker) -> None:
        with tracker.tracking(opt):
            train_steps(steps)

    train_steps(warmup)
    for tracker in trackers.values():
        with tracker.tracking(opt):
            train_steps(warmup)
    blocks = {"off": lambda: timed(lambda: train_steps(steps), device)}
    for name, tracker in trackers.items():
        blocks[name] = lambda t=tracker: timed(lambda: tracked(t), device)
    times = interleave(blocks, repeats)
    out: dict = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "repeats": repeats,
        "steps": steps,
        "ms_per_step": {v: 1e3 * statistics.median(ts) / steps for v, ts in times.items()},
        "variants": {},
    }
    for name, tracker in trackers.items():
        r = ratios(times, name)
        t0 = time.perf_counter()
        hist = tracker.history()
        out["variants"][name] = {
            **summarize(r),
            "kernels": tracker.kernels,
            "ratios": r,
            "records": len(hist.steps),
            "history_ms": 1e3 * (time.perf_counter() - t0),
        }
    return out


def per_call(
    widths: tuple[int, ...],
    *,
    calls: int,
    device: torch.device,
    kernel: str = "auto",
    make_tracker: Callable[..., GradientTracker] = GradientTracker,
) -> dict:
    """Milliseconds per ``update()`` called back to back (every call recorded; buffers warm, so
    a lower bound of the cost inside a training step): median and IQR of single calls."""
    torch.manual_seed(0)
    model = make_mlp(*widths).to(device)
    x = torch.randn(256, widths[0], device=device)
    y = torch.randint(0, widths[-1], (256,), device=device)
    nn.functional.cross_entropy(model(x), y).backward()
    tracker = make_tracker(model, eps=1e-5, kernel=kernel)
    for _ in range(10):
        tracker.update()
    ms = []
    gc.disable()
    try:
        for _ in range(calls):
            synchronize(device)
            t0 = time.perf_counter()
            tracker.update()
            synchronize(device)
            ms.append(1e3 * (time.perf_counter() - t0))
    finally:
        gc.enable()
    s = summarize(ms)
    return {
        "model": "MLP " + "-".join(map(str, widths)),
        "kernel": tracker.kernels,
        "parameters": sum(p.numel() for p in model.parameters()),
        "calls": calls,
        **{f"{k}_ms": v for k, v in s.items()},
        "keras_ms": KERAS_MS,
        "keras_over_ours": KERAS_MS / s["median"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=21, help="interleaved repeats (default 21)")
    p.add_argument("--steps", type=int, default=20, help="training steps per block (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps (default 5)")
    p.add_argument("--every", type=int, nargs="+", default=[1, 4], help="schedules (default 1 4)")
    p.add_argument(
        "--kernels",
        nargs="+",
        default=["auto", "torch"],
        choices=["auto", "torch"],
        help="GradientTracker kernels to compare (default: auto torch)",
    )
    p.add_argument("--calls", type=int, default=300, help="single calls timed per model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default all)")
    p.add_argument("--quick", action="store_true", help="tiny counts: smoke run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if the every=1 median misses")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup, args.calls = 3, 2, 1, 5
    if args.repeats < 2 or args.steps < 1 or args.warmup < 1 or args.calls < 2:
        p.error("need --repeats >= 2, --steps >= 1, --warmup >= 1 and --calls >= 2")
    if min(args.every) < 1:
        p.error("--every values must be >= 1")
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    device = torch.device(args.device)
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
        device=device,
        seed=args.seed,
        every=sorted(set(args.every)),
        kernels=list(dict.fromkeys(args.kernels)),
    )
    ms = res["ms_per_step"]
    print(
        f"MLP 784-256-128-10, batch 256, {res['parameters']} parameters, SGD momentum; "
        f"{res['repeats']} repeats x {res['steps']} steps; ms/step off {ms['off']:.2f} (context)"
    )
    for name, v in res["variants"].items():
        verdict = ""
        if name == "every=1":
            verdict = f", target {TARGET:.2f}x " + ("PASS" if v["median"] <= TARGET else "FAIL")
        used = ", ".join(sorted(set(v["kernels"].values())))
        print(
            f"  {name:<15} ({used}) on/off median {v['median']:.3f}x "
            f"(IQR {v['q1']:.3f}-{v['q3']:.3f})"
            f"{verdict}; ms/step {ms[name]:.2f}; history() of {v['records']} records "
            f"{v['history_ms']:.1f} ms"
        )
    calls = [
        per_call(w, calls=args.calls, device=device, kernel=kernel)
        for kernel in dict.fromkeys(args.kernels)
        for w in ((784, 154, 10), (784, 256, 128, 10))
    ]
    for c in calls:
        used = ", ".join(sorted(set(c["kernel"].values())))
        print(
            f"per call ({used}), back to back, {c['model']} ({c['parameters']} parameters): median "
            f"{c['median_ms']:.3f} ms (IQR {c['q1_ms']:.3f}-{c['q3_ms']:.3f}); the Keras "
            f"callback took {KERAS_MS:.0f} ms at 122k ({c['keras_over_ours']:.0f}x this)"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": config, "result": res, "per_call": calls}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    passed = res["variants"].get("every=1", {"median": 0.0})["median"] <= TARGET
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
