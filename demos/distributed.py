"""Self-modifying training under DistributedDataParallel: one plan for every rank.

    torchrun --nproc-per-node 2 demos/distributed.py            # CPU, gloo
    torchrun --nproc-per-node 2 demos/distributed.py --fast     # a few seconds

Every rank trains the same MLP through DDP on its own shard of a synthetic classification
task (a fixed random teacher). ``NeuronEngine(ddp.module)`` watches the inner model; every
``--every`` epochs ``SurgerySchedule`` proposes a plan from the statistics of *every* rank
(merged exactly, one collective), checks that every rank proposed the same plan, applies it on
every rank and the DDP wrapper is rebuilt (``engine.distributed.rewrap``). At the end the
ranks compare a checksum of their parameters: they are bitwise equal.

Rank 0 alone writes ``--out`` (default ``outputs/distributed``): ``plans/`` (one plan per
surgery), ``snapshot/`` (the merged statistics), ``report.txt`` and ``summary.json``.
Without torchrun the script runs as a single process (world size 1).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from demo_utils import demo_arguments, mlp, parse_demo_arguments
from torch.nn.parallel import DistributedDataParallel as DDP

from engine import NeuronEngine
from engine.distributed import parameter_checksum, rewrap
from engine.report import full_report, save_report
from engine.schedule import SurgerySchedule

POLICIES = {"policies": [{"name": "dead"}, {"name": "redundancy"}]}


def teacher_data(seed: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same task on every rank: 32 inputs, 10 classes from a random 2-layer teacher."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 32, generator=gen)
    hidden = torch.relu(x @ torch.randn(32, 24, generator=gen))
    return x, (hidden @ torch.randn(24, 10, generator=gen)).argmax(1)


def init_ranks() -> tuple[int, int]:
    """Join torchrun's process group (gloo on CPU, nccl on GPUs); (rank, world)."""
    if "RANK" not in os.environ:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=timedelta(seconds=120))
    return dist.get_rank(), dist.get_world_size()


def mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The loss every rank logs: the same number everywhere (plans must agree)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments("distributed", __doc__.splitlines()[0], "few samples and epochs")
    parser.add_argument("--every", type=int, default=3, help="epochs between surgeries")
    args = parse_demo_arguments(parser, argv)
    rank, world = init_ranks()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.is_initialized() and (
        dist.get_backend() == "nccl") else torch.device("cpu")  # fmt: skip
    epochs, samples = (6, 1536) if args.fast else (15, 8192)
    x, y = teacher_data(args.seed, samples)
    x, y = x[rank::world].to(device), y[rank::world].to(device)  # this rank's shard

    torch.manual_seed(args.seed)  # the same initial model on every rank (DDP checks it)
    model = mlp((96, 64), inputs=32).to(device)
    with torch.no_grad():  # planted: 12 units of fc1 never fire, 4 of fc2 copy their neighbours
        model.fc1.bias[:12] = -100.0
        model.fc2.weight[1::16] = model.fc2.weight[0::16]
        model.fc2.bias[1::16] = model.fc2.bias[0::16]
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 \
        else model  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    engine = NeuronEngine(model, correlation=True)
    out = args.out  # files are replaced atomically, by rank 0
    schedule = SurgerySchedule(engine, optimizer, POLICIES, every=args.every,
                               plans_dir=out / "plans", stop=epochs - 1)  # fmt: skip
    log = []
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        with engine.tracking():
            for batch in perm.split(64):
                optimizer.zero_grad()
                loss = F.cross_entropy(ddp(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
        loss = mean_over_ranks(total / x.shape[0], world, device)
        engine.log_epoch(epoch, loss=loss)
        record = schedule.epoch_end(epoch)  # propose, agree, apply on every rank (collectives)
        if record is not None and world > 1:
            ddp = rewrap(ddp)  # DDP forbids new parameters: a new wrapper, the same options
        widths = [model.fc1.out_features, model.fc2.out_features]
        log.append({"epoch": epoch, "loss": loss, "widths": widths})
        if rank == 0:
            print(f"epoch {epoch:2d}  loss {loss:.4f}  widths {widths}", flush=True)

    snapshot = engine.snapshot(with_layout=True)  # a collective: every rank calls it
    checksums = [parameter_checksum(model)]
    if world > 1:
        checksums = [None] * world
        dist.all_gather_object(checksums, parameter_checksum(model))
    identical = all(c == checksums[0] for c in checksums)
    if rank == 0:  # every file below is rank 0's (engine.io writes on rank 0 only anyway)
        snapshot.save(out / "snapshot")
        save_report(out / "report.txt", full_report(snapshot, top=5))
        summary = {
            "ranks": world,
            "epochs": log,
            "surgeries": len(schedule.records),
            "samples_merged": snapshot.layers["fc1"].count,
            "ranks_identical": identical,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"{len(schedule.records)} surgeries; ranks bitwise identical: {identical}; "
              f"wrote {out}")  # fmt: skip
    if dist.is_initialized():
        dist.barrier()  # rank 0 has written its files: leave together (gloo aborts otherwise)
        dist.destroy_process_group()
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
