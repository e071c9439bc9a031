"""Tracking overhead of ``NeuronEngine``: training-step time with tracking on vs off, as ratios.

Every case times blocks of ``--steps`` full training steps (forward, cross-entropy loss,
backward, optimiser step, zero_grad) on the same model, interleaved within each repeat:

* ``off``: no hooks attached;
* ``on``: inside ``with engine.tracking():`` (hooks attached once per block, not per step);
  ``engine.snapshot()`` runs *after* the timer stops, so pending batches are still flushed but
  the deferred float64 merge is not counted;
* ``on+snap``: the same with ``engine.snapshot()`` called once inside the timed region, so the
  deferred merge (and the copy of the statistics to plain CPU data) is counted;
* ``1/10``: a sampling window (``engine.SamplingWindow(engine, track=1, every=10)``) around every
  step: hooks attached for one step in ten, none between; the block is rounded up to whole
  periods and its time scaled back to K steps. Target ≤ 1.01× (amortised).

The order of the three blocks rotates from one repeat to the next, and each repeat gives one
ratio per variant (``on/off``, ``on+snap/off``) from blocks timed back to back, so slow drifts
of the machine (thermal, other processes) mostly cancel. The headline is the median of those ratios
with their inter-quartile range; absolute median times per step are printed only as context.

Cases (targets are issue #20's, for the ``on`` ratio):

* ``mlp``: MLP 784-256-128-10 (ReLU), batch 256, target ≤ 1.05×;
* ``mlp_corr``: the same with ``NeuronEngine(model, correlation=True)``, target ≤ 1.2×;
* ``resnet``: a small ResNet-like CNN on 3×32×32 inputs (stem 16 ch, BasicBlocks 16→32→64 with
  stride 2, BN, residual adds, global average pool, Linear 10), batch 64, target ≤ 1.3×.

``--clock cpu`` times with the thread's CPU time instead of the wall clock (CPU runs with
``--threads 1`` only): time spent descheduled by other processes is then not counted, which
steadies the ratios on a shared machine.

Run from the repository root::

    python benchmarks/tracking_overhead.py                 # default settings (1-2 minutes)
    python benchmarks/tracking_overhead.py --quick         # smoke run (~10 s on a quiet box)
    python benchmarks/tracking_overhead.py --json out.json --threads 1 --cases mlp resnet

The exit status is 0 whatever the ratios (this is a measurement, not a test); use ``--strict``
to exit with status 1 when a median ``on`` ratio misses its target.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from overhead_models import BasicBlock, SmallResNet, make_mlp
from timing import interleave, ratios, spread, summarize, synchronize

from engine import NeuronEngine, SamplingWindow

__all__ = ["BasicBlock", "SmallResNet", "make_mlp", "run_case"]

WINDOW_TARGET = 1.01  # amortised, track 1 of every 10 steps
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def timed(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds ``fn()`` takes on ``clock``, garbage collector off, device synchronised."""
    now = CLOCKS[clock]
    gc.collect()
    gc.disable()
    try:
        synchronize(device)
        t0 = now()
        fn()
        synchronize(device)
        return now() - t0
    finally:
        gc.enable()


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    target: float
    make_model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    batch: int
    steps: int  # default training steps per timed block
    repeats: int  # default interleaved repeats
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("mlp", "MLP 784-256-128-10 ReLU, batch 256", 1.05, make_mlp, (784,), 256, 20, 21),
        Case(
            "mlp_corr",
            "same MLP, correlation=True",
            1.2,
            make_mlp,
            (784,),
            256,
            20,
            21,
            {"correlation": True},
        ),
        Case(
            "resnet",
            "small ResNet 16-32-64, 3x32x32, batch 64",
            1.3,
            SmallResNet,
            (3, 32, 32),
            64,
            4,
            15,
        ),
    )
}


# --- timing -------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: str
    description: str
    target: float
    tracked_layers: int
    tracked_units: int
    repeats: int
    steps: int
    ratios_on: list[float]
    ratios_snap: list[float]
    ratios_window: list[float]  # empty without a sampling window
    step_ms: dict[str, float]  # median absolute time per step, context only
    off_spread: float  # q3/q1 of the off blocks' times: how steady the machine was

    def summary(self) -> dict[str, Any]:
        on, snap = summarize(self.ratios_on), summarize(self.ratios_snap)
        out = {
            "on": {**on, "pass": on["median"] <= self.target},
            "on+snap": {**snap, "pass": snap["median"] <= self.target},
        }
        if self.ratios_window:
            win = summarize(self.ratios_window)
            out["1/10"] = {**win, "pass": win["median"] <= WINDOW_TARGET}
        return out


def run_case(
    case: Case,
    *,
    repeats: int,
    steps: int,
    warmup: int,
    optimizer: str,
    flush_every: int | None,
    device: torch.device,
    seed: int,
    verbose: bool,
    every: int = 10,
    clock: str = "wall",
) -> CaseResult:
    torch.manual_seed(seed)
    model = case.make_model().to(device).train()
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    kwargs = dict(case.engine_kwargs)
    if flush_every is not None:
        kwargs["flush_every"] = flush_every
    engine = NeuronEngine(model, **kwargs)
    if verbose:
        for name, desc in engine.observation_points().items():
            print(f"    {case.name}: {name:<22} hook={desc['hook']:<22} replay={desc['replayed']}")

    # Pre-generated synthetic data: a few distinct batches, cycled (no data loading timed).
    gen = torch.Generator().manual_seed(seed + 1)
    n_batches = 4
    xs = [
        torch.randn(case.batch, *case.input_shape, generator=gen).to(device)
        for _ in range(n_batches)
    ]
    ys = [torch.randint(0, 10, (case.batch,), generator=gen).to(device) for _ in range(n_batches)]
    loss_fn = nn.CrossEntropyLoss()
    cursor = 0

    def train_steps(k: int) -> None:
        nonlocal cursor
        for _ in range(k):
            i = cursor % n_batches
            cursor += 1
            loss = loss_fn(model(xs[i]), ys[i])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def tracked() -> None:
        with engine.tracking():
            train_steps(steps)

    def on() -> float:
        elapsed = timed(tracked, device, clock)
        engine.snapshot()  # flush outside the timed region: deferred work cannot pile up
        return elapsed

    def on_snap() -> float:
        return timed(lambda: (tracked(), engine.snapshot()), device, clock)

    window = SamplingWindow(engine, track=1, every=max(every, 1))
    periods = -(-steps // max(every, 1)) * max(every, 1)  # whole periods: fair phase

    def sampled() -> float:
        def block() -> None:
            for _ in range(periods):
                with window.step():
                    train_steps(1)

        elapsed = timed(block, device, clock)
        engine.snapshot()
        return elapsed * steps / periods  # scaled back to K steps, like the other blocks

    # Warm-up: allocator, optimiser state, kernels, and the engine's first flush.
    train_steps(warmup)
    with engine.tracking():
        train_steps(warmup)
    engine.snapshot()

    blocks = {"off": lambda: timed(lambda: train_steps(steps), device, clock), "on": on}
    blocks["on+snap"] = on_snap
    if every:
        blocks["1/10"] = sampled
    times = interleave(blocks, repeats)  # the order rotates every repeat
    engine.snapshot()

    return CaseResult(
        case=case.name,
        description=case.description,
        target=case.target,
        tracked_layers=len(engine.layers),
        tracked_units=sum(layer.num_units for layer in engine.layers.values()),
        repeats=repeats,
        steps=steps,
        ratios_on=ratios(times, "on"),
        ratios_snap=ratios(times, "on+snap"),
        ratios_window=ratios(times, "1/10") if every else [],
        step_ms={v: 1e3 * statistics.median(ts) / steps for v, ts in times.items()},
        off_spread=spread(times["off"]),
    )


# --- report -------------------------------------------------------------------------------


def print_table(results: list[CaseResult]) -> None:
    header = (
        f"{'case':<9} {'variant':<8} {'target':>7} {'median':>8} {'IQR (q1-q3)':>15} "
        f"{'result':>6}   {'ms/step off':>11} {'variant':>8}  {'R x K':>7}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        s = res.summary()
        for variant, v in s.items():
            verdict = "PASS" if v["pass"] else "FAIL"
            ms = res.step_ms
            context = f"{ms['off']:>11.2f} {ms[variant]:>8.2f}  {res.repeats:>3}x{res.steps:<3}"
            target = WINDOW_TARGET if variant == "1/10" else res.target
            print(
                f"{res.case:<9} {variant:<8} {target:>6.2f}x {v['median']:>7.3f}x "
                f"{v['q1']:>7.3f}-{v['q3']:<7.3f} {verdict:>6}   {context}"
            )
    for res in results:
        s = res.summary()
        iqr_rel = max(v["iqr"] / v["median"] for v in s.values())
        if res.off_spread > 1.25 or iqr_rel > 0.25:
            print(
                f"warning: {res.case}: noisy timings (off-block q3/q1 = {res.off_spread:.2f}, "
                f"ratio IQR/median up to {iqr_rel:.2f}); rerun, raise --repeats, or try --threads 1"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repeats", type=int, default=None, help="interleaved repeats (default: per case, 15-21)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per timed block (default: per case)"
    )
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads value (default: all cores, os.cpu_count())",
    )
    p.add_argument("--quick", action="store_true", help="tiny counts: smoke run in < 20 s")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--flush-every", type=int, default=None, help="engine flush_every override")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=10, help="sampling window 1/EVERY (0: none)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="cpu: thread time")
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 if an 'on' median misses")
    p.add_argument("-v", "--verbose", action="store_true", help="print observation points")
    args = p.parse_args(argv)

    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    if (args.repeats is not None and args.repeats < 2) or (
        args.steps is not None and args.steps < 1
    ):
        p.error("need --repeats >= 2 and --steps >= 1")
    if warmup < 1:
        p.error("need --warmup >= 1")

    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    config = {
        "repeats": args.repeats
        if args.repeats is not None
        else ("quick" if args.quick else "case"),
        "steps": args.steps if args.steps is not None else ("quick" if args.quick else "case"),
        "warmup": warmup,
        "threads": threads,
        "optimizer": args.optimizer,
        "flush_every": args.flush_every,
        "device": str(device),
        "seed": args.seed,
        "clock": args.clock,
        "every": args.every,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print("tracking overhead: " + ", ".join(f"{k}={v}" for k, v in config.items() if v is not None))

    results = []
    t_start = time.perf_counter()
    for name in args.cases:
        case = CASES[name]
        repeats = args.repeats or (3 if args.quick else case.repeats)
        steps = args.steps or (1 if args.quick else case.steps)
        t0 = time.perf_counter()
        res = run_case(
            case,
            repeats=repeats,
            steps=steps,
            warmup=warmup,
            optimizer=args.optimizer,
            flush_every=args.flush_every,
            device=device,
            seed=args.seed,
            verbose=args.verbose,
            every=args.every,
            clock=args.clock,
        )
        results.append(res)
        print(
            f"  {name}: {res.tracked_layers} tracked layers, {res.tracked_units} units, "
            f"{repeats} repeats x {steps} steps ({time.perf_counter() - t0:.1f} s)"
        )
    print()
    print_table(results)
    print(
        "\nratio = time(variant)/time(off) per interleaved repeat (R repeats of K steps); "
        "median and IQR over repeats;\nPASS = median <= target; ms/step columns are medians, "
        f"context only. Wall time {time.perf_counter() - t_start:.1f} s."
    )

    if args.json is not None:
        payload = {
            "config": config,
            "results": [{**asdict(r), "summary": r.summary()} for r in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")

    missed = [r.case for r in results if not r.summary()["on"]["pass"]]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
