"""One plan for all ranks: every rank proposes from the same merged statistics, then checks.

Policies are deterministic functions of the merged snapshot and the layout, so every rank
proposes the same plan without sending it. :func:`agree_on_plan` makes sure of it: one
``all_gather`` of the plan's digest (its JSON without the creation time) raises
:class:`~engine.errors.RankMismatchError` on every rank, naming the ranks whose plan differs
from rank 0's (a policy with a random draw, a loss logged per rank instead of all-reduced, a
different config).

>>> from engine.plan import Plan
>>> a = Plan.create([], {"fc": 4}, created="2025-01-01T00:00:00+00:00")
>>> b = Plan.create([], {"fc": 4}, created="2026-01-01T00:00:00+00:00")
>>> plan_digest(a) == plan_digest(b)  # the creation time is not part of the decision
True
>>> agree_on_plan(a, None) is a  # no process group: nothing to agree with
True
"""

from __future__ import annotations

import json
from typing import Any

import torch

from engine.distributed.group import check_same, digest_words, rank_group
from engine.plan import Plan

__all__ = ["agree_on_plan", "plan_digest"]


def plan_digest(plan: Plan) -> list[int]:
    """Two 64-bit words of the SHA-256 of ``plan``'s JSON, its ``metadata.created`` left out."""
    data = plan.to_json()
    data["metadata"] = {k: v for k, v in data["metadata"].items() if k != "created"}
    return digest_words(json.dumps(data, sort_keys=True, allow_nan=False))


def agree_on_plan(plan: Plan, setting: Any) -> Plan:
    """``plan`` once every rank of the group ``setting`` names holds the same plan (see the
    module docstring); a collective: every rank must call it."""
    ranks = rank_group(setting)
    if ranks is None:
        return plan
    rows = ranks.gather(torch.tensor(plan_digest(plan), dtype=torch.int64))
    check_same(rows, [("plan", slice(0, 2), (
        "its plan is not rank 0's (a policy that is not deterministic, a loss logged per rank "
        "instead of all-reduced, or another config); every rank must apply the same plan, so "
        "none is applied"
    ))])  # fmt: skip
    return plan
