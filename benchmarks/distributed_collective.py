"""Cost of the per-decision collective of ``engine.distributed`` against one training step.

    .venv/bin/python benchmarks/distributed_collective.py            # 2 CPU ranks, gloo
    .venv/bin/python benchmarks/distributed_collective.py --quick    # smoke run, ~15 s

Starts ``--ranks`` processes on 127.0.0.1 (or runs as one rank under torchrun). Each trains an
MLP 784-256-128-10 through DDP (batch 256, Adam) with a ``NeuronEngine`` on the inner model
(``--correlation`` adds the co-moment matrices to the payload). Each repeat times, in a
rotating order: ``step`` (K DDP training steps, per step), ``merged`` (``engine.snapshot()``:
header gather, one flattened all_gather, rank-order merge), ``local`` (the same snapshot with
``process_group=False``) and ``agree`` (the plan digest gather of ``propose``). Printed: the
median and IQR over repeats of ``merged / step``, ``(merged − local) / step`` (the collective
and the merge alone) and ``agree / step``, with the payload size. Ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import NeuronEngine
from engine.distributed import agree_on_plan, pack
from engine.plan import Plan


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def rank_main(args: argparse.Namespace) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip
    ddp = DDP(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    engine = NeuronEngine(model, correlation=args.correlation)
    gen = torch.Generator().manual_seed(rank)
    batches = [(torch.randn(256, 784, generator=gen), torch.randint(0, 10, (256,), generator=gen))
               for _ in range(4)]  # fmt: skip
    plan = Plan.create([], engine.layout)

    def step_block() -> float:
        start = time.perf_counter()
        for i in range(args.steps):
            x, y = batches[i % len(batches)]
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
        return (time.perf_counter() - start) / args.steps

    def timed(fn) -> float:
        dist.barrier()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def local() -> None:
        engine.process_group = False
        engine.snapshot()
        engine.process_group = None

    blocks = {
        "step": step_block,
        "merged": lambda: timed(engine.snapshot),
        "local": lambda: timed(local),
        "agree": lambda: timed(lambda: agree_on_plan(plan, None)),
    }
    with engine.tracking():
        step_block()  # warm-up (and statistics to merge)
        for name in ("merged", "local", "agree"):
            blocks[name]()
        times: dict[str, list[float]] = {k: [] for k in blocks}
        order = list(blocks)
        for r in range(args.repeats):
            for name in order[r % 4 :] + order[: r % 4]:
                times[name].append(blocks[name]())
    ratios = {
        "merged/step": [m / s for m, s in zip(times["merged"], times["step"])],
        "(merged-local)/step": [
            (m - lo) / s for m, lo, s in zip(times["merged"], times["local"], times["step"])
        ],
        "agree/step": [a / s for a, s in zip(times["agree"], times["step"])],
    }
    if rank == 0:
        payload = pack(engine.snapshot())[0].numel() * 8
        print(f"ranks {dist.get_world_size()}, correlation {args.correlation}, payload "
              f"{payload / 1024:.1f} KiB, step {statistics.median(times['step']) * 1e3:.2f} ms "
              f"(context only)")  # fmt: skip
        rows = {}
        for name, values in ratios.items():
            q1, med, q3 = quartiles(values)
            rows[name] = {"median": med, "q1": q1, "q3": q3}
            print(f"  {name:22s} median {med:7.3f}   IQR [{q1:.3f}, {q3:.3f}]")
        if args.json:
            Path(args.json).write_text(json.dumps({"payload_bytes": payload, **rows}, indent=1))
    else:
        engine.snapshot()
    dist.barrier()
    dist.destroy_process_group()


def launch(args: argparse.Namespace, argv: list[str]) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": str(args.ranks)}  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, __file__, *argv], env={**env, "RANK": str(r)})
        for r in range(args.ranks)
    ]
    return max(p.wait(timeout=600) for p in procs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--correlation", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 5, 4
    if "RANK" in os.environ:
        rank_main(args)
        return 0
    return launch(args, argv)


if __name__ == "__main__":
    sys.exit(main())
