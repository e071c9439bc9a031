"""One rank of the 2-process distributed tests: ``worker.py RANK WORLD INIT_FILE OUT``.

Runs every scenario in order (each a collective of both ranks) and writes
``OUT/rank{R}.json`` (plain ``json``: engine writes are rank 0's only) and
``OUT/{scenario}-rank{R}.safetensors``; the tests compare them.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shards import make_model, observe, shard

import engine.distributed.apply as dist_apply
from engine import NeuronEngine
from engine.distributed import ddp_options, pack, parameter_checksum, plan_digest, rewrap
from engine.errors import SurgeryError
from engine.plan import Plan

DEAD = {"policies": [{"name": "dead"}]}


def error_of(fn) -> dict:
    try:
        fn()
    except Exception as exc:
        return {
            "type": type(exc).__name__,
            "message": str(exc),
            "what": getattr(exc, "what", None),
            "ranks": getattr(exc, "ranks", None),
        }
    return {"type": None}


def state_tensors(model: nn.Module, opt: torch.optim.Optimizer | None) -> dict:
    out = {f"param.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if opt is not None:
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    out[f"opt.{i}.{k}"] = v.clone().reshape(-1)
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(ddp, opt, batches) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()


def merge(rank: int, out: Path) -> dict:
    model = make_model().double()
    engine = NeuronEngine(model, correlation=True, growth_signal=True)
    observe(engine, model, shard(rank, nan=True, dtype=torch.float64))
    flat, structure = pack(engine.snapshot())
    engine.process_group = False
    local = engine.snapshot()
    save_file({"flat": flat}, str(out / f"merge-rank{rank}.safetensors"))
    return {"structure": structure, "local_count": local.layers["0"].count}


def surgery(rank: int, out: Path) -> dict:
    model = make_model()
    ddp = DDP(model, bucket_cap_mb=1, gradient_as_bucket_view=True, broadcast_buffers=False)
    ddp.register_comm_hook(None, allreduce_hook)  # carried over to the new wrapper
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model)
    with engine.tracking():
        train(ddp, opt, shard(rank))
    plan = engine.propose(DEAD)
    record = engine.apply(plan, opt)
    new = rewrap(ddp)
    options_kept = ddp_options(new) == ddp_options(ddp)
    train(new, opt, shard(rank)[:2])  # different data per rank: DDP must sync the gradients
    save_file(state_tensors(model, opt), str(out / f"surgery-rank{rank}.safetensors"))
    return {"digest": plan_digest(plan), "pruned": len(plan.prune), "options_kept": options_kept,
            "width": model[0].out_features, "actions": len(record.actions),
            "ids": engine.neurons.ids("0"), "hooks": len(new._comm_hooks)}  # fmt: skip


def disagree(rank: int, out: Path) -> dict:
    model = make_model()
    engine = NeuronEngine(model)
    observe(engine, model, shard(rank))
    config = DEAD if rank == 0 else {"policies": [{"name": "dead"}, {"name": "low_activity"}]}
    return error_of(lambda: engine.propose(config))


def stale(rank: int, out: Path) -> dict:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = NeuronEngine(model)
    with engine.tracking():
        train(model, opt, shard(0))  # the same data: the parameters stay equal
    plan = engine.propose(DEAD)
    if rank == 1:  # a plan made on a stale layout (before a surgery, wider layer)
        plan = Plan.create([], [("0", 20), ("2", 8), ("4", 3)])
    before = state_tensors(model, opt)
    err = error_of(lambda: engine.apply(plan, opt))
    return {**err, "unchanged": same(before, state_tensors(model, opt))}


def late(rank: int, out: Path) -> dict:
    width = 16 if rank == 0 else 20  # rank 1 tracks another model
    model = make_model(width=width)
    engine = NeuronEngine(model)
    observe(engine, model, shard(rank))
    other_model = error_of(engine.snapshot)
    model = make_model()
    engine = NeuronEngine(model)
    observe(engine, model, shard(rank))
    if rank == 1:  # joined late: a registry from another run (same widths, other IDs)
        state = engine.neurons.state_dict()
        state["layers"]["0"] = [i + 1000 for i in state["layers"]["0"]]
        state["next_id"] = 2000
        engine.neurons.load_state_dict(state)
    return {"other_model": other_model, "other_ids": error_of(engine.snapshot)}


def outcome(rank: int, out: Path) -> dict:
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model)
    with engine.tracking():
        train(model, opt, shard(0))
    plan = engine.propose(DEAD)
    if rank == 1:  # this rank's transaction refuses the plan (its probe broke a tolerance…)

        def refuse(*args, **kwargs):
            raise SurgeryError("prune[0]: injected refusal on rank 1")

        dist_apply.apply_plan = refuse
    before = state_tensors(model, opt)
    ids, surgeries = engine.neurons.state_dict(), len(engine.surgeries)
    err = error_of(lambda: engine.apply(plan, opt))
    unchanged = same(before, state_tensors(model, opt)) and ids == engine.neurons.state_dict()
    unchanged = unchanged and surgeries == len(engine.surgeries) and model[0].out_features == 16
    trained = [p for group in opt.param_groups for p in group["params"]]
    unchanged = unchanged and all(p is q for p, q in zip(trained, model.parameters()))
    return {**err, "unchanged": unchanged, "checksum": parameter_checksum(model)}


def refused(rank: int, out: Path) -> dict:
    model = make_model()
    result = {"ddp": error_of(lambda: NeuronEngine(DDP(model)))}
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        sharded = make_model()
        fully_shard(sharded, mesh=init_device_mesh("cpu", (2,)))
        result["fsdp"] = error_of(lambda: NeuronEngine(sharded))
    except Exception as exc:  # FSDP without CPU support in this torch: say so
        result["fsdp"] = {"type": "skipped", "message": f"{type(exc).__name__}: {exc}"}
    engine = NeuronEngine(model)
    observe(engine, model, shard(rank))
    result["trial"] = error_of(lambda: engine.trial(engine.propose(DEAD), evaluate=lambda m: 0.0))
    return result


def writes(rank: int, out: Path) -> dict:
    model = make_model()
    engine = NeuronEngine(model)
    observe(engine, model, shard(rank))
    engine.propose(DEAD).save(out / f"plan-rank{rank}.json")
    engine.snapshot(with_layout=True).save(out / f"snapshot-rank{rank}")
    return {}


SCENARIOS = [merge, surgery, disagree, stale, late, outcome, refused, writes]


def main() -> int:
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # fmt: skip
    results = {}
    for scenario in SCENARIOS:
        try:
            results[scenario.__name__] = scenario(rank, out)
        except Exception:
            results[scenario.__name__] = {"crash": traceback.format_exc()}
            print(results[scenario.__name__]["crash"], file=sys.stderr, flush=True)
        (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
        dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
