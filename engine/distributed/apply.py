"""``engine.apply(plan, optimizer)`` on every rank at once, with identical results.

What ``NeuronEngine.apply`` does under an initialised process group (``engine_surgery`` hands
the call here):

1. **Agree before anything changes.** One ``all_gather`` of a digest row: the plan (JSON
   without its creation time), the engine's layout and neuron IDs, and a float64 checksum of
   the parameters. A rank holding another plan (one made on a stale layout, or loaded from
   another file), another layout (a different model, a rank that joined late or missed a
   surgery) or other parameters (training that was not synchronised, a missing ``rewrap``)
   gets :class:`~engine.errors.RankMismatchError` on every rank, naming it; nothing changes.
2. **Same inputs.** GradMax growth reads the growth signal merged over every rank (one more
   gather, only for plans that grow with ``init="gradmax"``); random initialisations draw from
   a generator seeded with the plan's digest (the caller's RNG state is left as it was).
3. **Apply locally, then agree on the outcome.** Each rank runs the transaction on its own
   copy (``apply_plan``); a ``TrainingState`` taken first (one copy of the parameters and
   optimizer state, held during the surgery, as a trial holds it) lets a rank undo a
   committed plan.
   One ``all_gather`` of "done / refused": when any rank refused (its probe batch broke a
   ``tolerance``, it ran out of memory), every rank that had applied the plan restores its
   model, optimizer and statistics bitwise, and every rank raises: nothing changed anywhere.

The modules and optimizer states are then bitwise equal on every rank (the same plan on the
same parameters, deterministic kernels); call ``engine.distributed.rewrap(ddp)`` next.
Statistics stay per rank (each keeps its own samples; ``snapshot()`` merges them).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from engine.distributed.agree import plan_digest
from engine.distributed.group import RankGroup, check_same, digest_words
from engine.distributed.merge import merge_over
from engine.distributed.wrappers import check_trackable
from engine.errors import RankMismatchError
from engine.plan import Plan
from engine.stats.moments import Moments
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from engine.surgery.records import SurgeryRecord
from engine.surgery.training_state import TrainingState
from engine.surgery.transaction import apply_plan

__all__ = ["apply_on_every_rank", "parameter_checksum"]


def parameter_checksum(model: torch.nn.Module) -> list[int]:
    """Two int64 words (the bits of float64 sums of every parameter and its square): equal
    parameters give equal words, on any device, with one host sync."""
    params = [p.detach() for p in model.parameters()]
    if not params:
        return [0, 0]
    device = params[0].device
    sums = torch.stack(
        [torch.stack([p.double().sum(), p.double().square().sum()]).to(device) for p in params]
    ).sum(0)
    return sums.cpu().view(torch.int64).tolist()


def _agree_before(ranks: RankGroup, engine: Any, plan: Plan) -> None:
    state = {name: engine.neurons.ids(name) for name in engine.layers}
    row = [
        *plan_digest(plan),
        *digest_words(json.dumps([engine.layout, state])),
        *parameter_checksum(engine.model),
    ]
    check_same(ranks.gather(torch.tensor(row, dtype=torch.int64)), [
        ("plan", slice(0, 2), "it was given another plan (one made on a stale layout, or read "
         "from another file); every rank must apply the same plan, so none is applied"),
        ("layout", slice(2, 4), "its tracked layout or neuron IDs are not rank 0's (a "
         "different model, or a rank that joined late or missed a surgery); nothing was "
         "changed"),
        ("parameters", slice(4, 6), "its parameters are not rank 0's (training that is not "
         "synchronised: after a surgery, ddp = engine.distributed.rewrap(ddp)); nothing was "
         "changed"),
    ])  # fmt: skip


def _merged_growth(ranks: RankGroup, engine: Any, plan: Plan) -> dict[str, Any]:
    """``gradients=`` and ``gradmax_openings=`` from the growth signal of every rank."""
    names = sorted({a.layer for a in plan.expand if a.init == "gradmax"})
    states = {}
    for name in names:
        layer = engine.layers.get(name)
        if layer is not None and layer.growth is not None:
            states[name] = layer.growth.state()
    if not states:
        return {}
    empty = Moments.empty(0)
    layers = {n: LayerSnapshot(n, "growth", [], empty, growth=s) for n, s in states.items()}
    merged = merge_over(ranks, StatsSnapshot(layers))
    gradients, openings = {}, {}
    for name, layer in merged.layers.items():
        if layer.growth is not None:
            gradients[name] = layer.growth.mean()
            opening = layer.growth.opening()
            if opening is not None:
                openings[name] = opening
    return {"gradients": gradients, "gradmax_openings": openings}


def apply_on_every_rank(
    ranks: RankGroup,
    engine: Any,
    plan: Plan,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    example_inputs: Any = None,
    step: int | None = None,
    epoch: int | None = None,
    **options: Any,
) -> SurgeryRecord:
    """``engine.apply`` as one decision of every rank (see the module docstring); a
    collective: every rank must call it with the same plan."""
    check_trackable(engine.model)  # a model sharded after the engine was built
    _agree_before(ranks, engine, plan)
    for key, value in _merged_growth(ranks, engine, plan).items():
        options.setdefault(key, value)
    epoch = engine.last_epoch if epoch is None else epoch
    listeners, announce = engine._announcer(plan, step, epoch)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    record, error, saved = None, None, None
    try:  # anything that fails here fails on this rank only: the outcome gather must run
        probe = engine._probe(example_inputs)
        accumulators = engine._accumulators()
        saved = TrainingState.capture(engine.model, optimizer, accumulators)
        with torch.random.fork_rng(devices=devices), engine.paused():
            torch.manual_seed(plan_digest(plan)[0] & (2**63 - 1))
            record = apply_plan(
                engine.model, plan, optimizer, probe, registry=engine.neurons,
                accumulators=accumulators, step=step, epoch=epoch, on_validated=announce,
                **options,
            )  # fmt: skip
    except Exception as exc:  # rolled back here; the other ranks must hear of it
        error = exc
    outcome = ranks.gather(torch.tensor([0 if error is None else 1], dtype=torch.int64))
    refused = [r for r in range(ranks.world) if int(outcome[r, 0])]
    if refused:
        if error is not None:
            raise error
        assert saved is not None  # this rank applied the plan
        saved.restore()  # applied here, refused elsewhere: undo it bitwise
        for listener in listeners:
            rolled_back = getattr(listener, "after_rollback", None)
            if rolled_back is not None:
                rolled_back(engine.model, record)
        who = f"rank{'s' if len(refused) > 1 else ''} {', '.join(str(r) for r in refused)}"
        raise RankMismatchError(
            "outcome", refused,
            f"{who} refused the plan (the error is raised there); it was rolled back on every "
            "rank that had applied it, so nothing changed anywhere",
        )  # fmt: skip
    assert record is not None
    if record.neurons_after is not None:
        engine.neurons.load_state_dict(record.neurons_after)
    engine.surgeries.append(record)
    for listener in listeners:
        listener.after_surgery(engine.model, record)
    return record
