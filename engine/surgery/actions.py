"""One plan action carried out on a layer's coupled group: a registry keyed by action type.

Each applier edits the group's tensors through the transaction's ``Workspace`` (new tensors,
old ones saved for rollback), tells the ``UnitBook`` which units went or came, and returns the
notes it made and whether the action is expected to preserve the function up to float error.
New action types register with ``@applies(ActionType)``.

>>> sorted(t.__name__ for t in APPLIERS)
['ExpandAction', 'FoldAction', 'MergeAction', 'PruneAction']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import SurgeryError
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.checks import gradmax_consumer
from engine.surgery.gradmax import gradmax_outgoing, rows_now
from engine.surgery.groups import GroupMember
from engine.surgery.operations import expand_units, fold_units, remove_units
from engine.surgery.units import UnitBook
from engine.surgery.workspace import Workspace

__all__ = ["APPLIERS", "ActionContext", "applies", "apply_action"]


@dataclass(frozen=True)
class ActionContext:
    """What every applier may use besides the action: the transaction's workspace, the
    layer's coupled group, the unit book, and the GradMax inputs."""

    workspace: Workspace
    members: list[GroupMember]
    book: UnitBook
    gradients: Mapping[str, torch.Tensor]
    gradmax_epsilon: float
    gradmax_openings: Mapping[str, torch.Tensor] = field(default_factory=dict)


Applier = Callable[[Any, ActionContext], tuple[list[str], bool]]
APPLIERS: dict[type, Applier] = {}


def applies(action_type: type) -> Callable[[Applier], Applier]:
    """Decorator: register ``fn(action, ctx) -> (notes, exact_expected)`` for a type."""

    def register(fn: Applier) -> Applier:
        APPLIERS[action_type] = fn
        return fn

    return register


def apply_action(action: Any, ctx: ActionContext) -> tuple[list[str], bool]:
    """Carry out one action; returns (notes, whether it is expected to preserve the function)."""
    applier = APPLIERS.get(type(action))
    if applier is None:  # pragma: no cover - the plan schema admits only registered kinds
        raise SurgeryError(f"no surgery for action type {type(action).__name__}")
    return applier(action, ctx)


def _f64(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@applies(PruneAction)
def _prune(action: PruneAction, ctx: ActionContext) -> tuple[list[str], bool]:
    units = list(action.local_indices)
    values = action.constant_values
    offsets = _f64(values) if values else None
    notes = fold_units(ctx.workspace, ctx.members, [], units, None, offsets)
    remove_units(ctx.workspace, ctx.members, units)
    ctx.book.remove(action.layer, units)
    return notes, values is not None and not notes


@applies(MergeAction)
def _merge(action: MergeAction, ctx: ActionContext) -> tuple[list[str], bool]:
    coef, offsets = _f64([[action.alpha]]), _f64([action.beta])
    notes = fold_units(ctx.workspace, ctx.members, [action.keep], [action.remove], coef, offsets)
    remove_units(ctx.workspace, ctx.members, [action.remove])
    ctx.book.remove(action.layer, [action.remove], into=[action.keep])
    return notes, abs(action.correlation) >= 1 - 1e-9 and not notes


@applies(FoldAction)
def _fold(action: FoldAction, ctx: ActionContext) -> tuple[list[str], bool]:
    coef = _f64(action.coefficients)
    offsets = _f64(action.mean_remove) - coef @ _f64(action.mean_keep)
    keep, remove = list(action.keep), list(action.remove)
    notes = fold_units(ctx.workspace, ctx.members, keep, remove, coef, offsets)
    remove_units(ctx.workspace, ctx.members, remove)
    targets = [keep[int(row.abs().argmax())] for row in coef]
    ctx.book.remove(action.layer, remove, into=targets)
    return notes, False


@applies(ExpandAction)
def _expand(action: ExpandAction, ctx: ActionContext) -> tuple[list[str], bool]:
    gradmax = action.init == "gradmax"
    outgoing = None
    if gradmax:
        gradient = ctx.gradients[action.layer]
        opening = ctx.gradmax_openings.get(action.layer)
        consumer = gradmax_consumer(ctx.members)
        if consumer is not None and consumer.name in ctx.book.maps:
            # the consumer's own units may have changed earlier in this plan (e.g. a fold)
            gradient = rows_now(gradient, ctx.book.maps[consumer.name])
            if opening is not None:
                opening = rows_now(opening[:, None], ctx.book.maps[consumer.name])[:, 0]
        outgoing = gradmax_outgoing(
            ctx.workspace, ctx.members, gradient, action.count, opening=opening
        )
    sources = list(action.source_indices or []) or None
    notes = expand_units(
        ctx.workspace, ctx.members, action.count, action.init, sources, action.noise, outgoing,
        ctx.gradmax_epsilon if gradmax else 0.0,
    )  # fmt: skip
    parents = action.source_indices if action.init == "net2net" else None
    ctx.book.grow(action.layer, action.count, parents)
    return notes, action.init in ("net2net", "zero_outgoing") and not action.noise
