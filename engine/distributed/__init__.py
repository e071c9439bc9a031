"""Self-modification under ``torch.distributed`` (DDP): one set of statistics, one plan,
identical ranks.

Give the engine the module DDP wraps, on every rank; the core does the rest once a process
group is initialised (or one is given as ``engine.process_group``):

* ``engine.snapshot()`` (and so ``propose``) merges every rank's statistics exactly, with one
  flattened ``all_gather`` per call (``merge``): the same bits on every rank, equal to one
  process that saw every rank's samples up to float64 rounding;
* ``engine.propose(...)`` checks that every rank proposed the same plan (``agree``);
* ``engine.apply(plan, optimizer)`` checks plan, layout and parameters first, applies, and
  agrees on the outcome, so the modules and optimizer states stay bitwise equal (``apply``);
* ``rewrap(ddp)`` builds the new DDP around the changed module with the old options;
* files (plans, snapshots, reports, weight snapshots) are written by rank 0 only
  (``engine.io``); sharded wrappers (FSDP, DeepSpeed) are refused (``wrappers``).

These calls are collectives: every rank must make them, in the same order. ``layer_stats``,
``neuron_stats``, ``dead_neurons`` and ``log_epoch`` stay per rank (no collective).
``engine.trial`` is refused under a process group (a held-out judgement per rank could keep
a plan on one rank and roll it back on another).

>>> import torch.nn as nn
>>> group_setting(nn.Linear(2, 2)) is None  # the default group, once initialised
True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.distributed.agree import agree_on_plan, plan_digest
from engine.distributed.apply import apply_on_every_rank, parameter_checksum
from engine.distributed.group import RankGroup, rank_group
from engine.distributed.merge import gather_snapshot, merge_rows
from engine.distributed.pack import pack, unpack
from engine.distributed.rewrap import ddp_options, rewrap
from engine.distributed.wrappers import check_trackable, sharding_of
from engine.errors import ConfigurationError

__all__ = [
    "RankGroup",
    "agree_on_plan",
    "apply_on_every_rank",
    "check_trackable",
    "ddp_options",
    "engine_ranks",
    "gather_snapshot",
    "group_setting",
    "merge_rows",
    "pack",
    "parameter_checksum",
    "plan_digest",
    "rank_group",
    "refuse_trial",
    "rewrap",
    "sharding_of",
    "unpack",
]


def group_setting(model: nn.Module, process_group: Any = None) -> Any:
    """Check that the engine can watch ``model`` (not a DDP wrapper, not sharded) and return
    its ``process_group`` setting: None (the default group once initialised), False (never
    merge) or a ``ProcessGroup``."""
    check_trackable(model)
    return process_group


def engine_ranks(engine: Any) -> RankGroup | None:
    """The ranks ``engine`` agrees with now (its ``process_group`` setting), or None."""
    return rank_group(getattr(engine, "process_group", None))


def refuse_trial(engine: Any) -> None:
    """``ConfigurationError`` for ``engine.trial`` under a process group (see above)."""
    if engine_ranks(engine) is not None:
        raise ConfigurationError(
            "engine.trial is not supported under torch.distributed yet: each rank would judge "
            "the plan on its own held-out data and could keep it where another rolls it back. "
            "Use engine.apply(plan, optimizer) on every rank (or process_group=False)"
        )
