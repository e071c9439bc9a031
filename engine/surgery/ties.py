"""Tied parameters: one ``nn.Parameter`` held by several modules (``head.weight = emb.weight``).

:func:`find_ties` lists them (every owner ``(module, name)`` of one parameter object, found
with ``named_modules(remove_duplicate=False)``; a module reused at two paths is one owner).
Surgery keeps a tie or refuses the plan: :func:`tie_problems` runs before anything changes and
says, per action, why a tied tensor could not stay one tensor:

* the action resizes it at some of its owners only (pruning one of two tied layers);
* it resizes it along different dims, or at different positions, at different owners
  (a tied Linear used twice in sequence: its output axis at one end is its input axis at
  the other);
* a merge or fold rewrites a consumer's columns of it while another owner reads them as
  outputs (an embedding tied to the output head);
* growth gives it new slices that the owners would initialise differently (Net2Net copies an
  embedding's columns but splits the head's); ``zero_outgoing`` is kept: the new slices are
  zero at every owner, which leaves the function unchanged.

When the plan passes, the :class:`~engine.surgery.workspace.Workspace` installs every new
tensor at every owner, resizes it once, and the optimizer gets one change per parameter.

>>> from torch import nn
>>> lm = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
>>> lm["head"].weight = lm["emb"].weight
>>> [tie.names for tie in find_ties(lm)]
[('emb.weight', 'head.weight')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.groups import GroupMember
from engine.surgery.resizers import resizer_for

__all__ = ["Tie", "find_ties", "tie_index", "tie_problems"]


@dataclass(frozen=True, eq=False)
class Tie:
    """One parameter held by several modules: ``owners[i]`` is ``(module, attribute name)``,
    ``names[i]`` its qualified name in the model (the first path it is reached by)."""

    param: nn.Parameter
    owners: tuple[tuple[nn.Module, str], ...]
    names: tuple[str, ...]

    def describe(self) -> str:
        """``'emb.weight and head.weight are one tensor'``."""
        return f"{' and '.join(self.names)} are one tensor"


def find_ties(model: nn.Module) -> list[Tie]:
    """Every parameter object held by two or more ``(module, name)`` owners, in model order."""
    owners: dict[int, list[tuple[nn.Module, str, str]]] = {}
    params: dict[int, nn.Parameter] = {}
    seen: set[tuple[int, str]] = set()
    for path, module in model.named_modules(remove_duplicate=False):
        for name, p in module._parameters.items():
            if p is None or (id(module), name) in seen:
                continue
            seen.add((id(module), name))
            params[id(p)] = p
            owners.setdefault(id(p), []).append((module, name, f"{path}.{name}" if path else name))
    return [
        Tie(params[pid], tuple((m, n) for m, n, _ in found), tuple(q for _, _, q in found))
        for pid, found in owners.items()
        if len(found) > 1
    ]


def tie_index(ties: list[Tie]) -> dict[tuple[int, str], Tie]:
    """``(id(owner module), name) -> Tie`` for every owner of every tie."""
    return {(id(m), n): tie for tie in ties for m, n in tie.owners}


def _owner(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    head, _, name = path.rpartition(".")
    return (module.get_submodule(head) if head else module), name


@dataclass(frozen=True)
class _End:
    """One owner of a tied tensor as an action reaches it: resized along ``dim`` at
    ``positions`` (``None``: its values are edited, not resized)."""

    name: str
    side: str
    dim: int | None
    positions: tuple[tuple[int, ...], ...] | None
    consumer: bool


def _ends(members: list[GroupMember], index: Mapping[tuple[int, str], Tie], action: Any):
    found: dict[int, tuple[Tie, dict[str, _End]]] = {}

    def add(tie: Tie, end: _End) -> None:
        found.setdefault(id(tie), (tie, {}))[1].setdefault(end.name, end)

    folds = isinstance(action, MergeAction | FoldAction) or (
        isinstance(action, PruneAction) and action.constant_values is not None
    )
    for m in members:
        resizer = resizer_for(m.module)
        consumer = m.side == "in" and resizer.consumes
        positions = tuple(tuple(p) for p in m.positions)
        for spec in resizer.axes(m.module, m.side):
            owner, name = _owner(m.module, spec.path)
            tie = index.get((id(owner), name))
            if tie is not None:
                qual = tie.names[[o for o, _ in tie.owners].index(owner)]
                t = getattr(owner, name)
                add(tie, _End(qual, m.side, spec.dim % t.dim(), positions, consumer))
        if consumer and folds:  # a fold writes the consumer's bias too
            owner, name = _owner(m.module, resizer.bias or "bias")
            tie = index.get((id(owner), name))
            if tie is not None:
                qual = tie.names[[o for o, _ in tie.owners].index(owner)]
                add(tie, _End(qual, "in", None, None, True))
    return found.values()


def _one(tie: Tie, action: Any, ends: dict[str, _End]) -> str | None:
    """Why ``action`` cannot keep ``tie`` (None: it can)."""
    what = tie.describe()
    untie = (
        f"untie them first (e.g. `{tie.names[-1]} = nn.Parameter({tie.names[0]}.detach()"
        f".clone())`) or leave this layer out of the plan"
    )
    missing = [n for n in tie.names if n not in ends]
    if missing:
        reached = ", ".join(ends)
        return (
            f"{what}; this action changes it as {reached} but not as {', '.join(missing)}, "
            f"which would untie them: {untie}"
        )
    axes = {(e.dim, e.positions) for e in ends.values()}
    if len(axes) > 1:
        how = ", ".join(f"{n} along dim {e.dim}" for n, e in ends.items())
        return f"{what}; this action would resize it differently at its owners ({how}): {untie}"
    sides = {e.consumer for e in ends.values()}
    if len(sides) > 1 and isinstance(action, MergeAction | FoldAction):
        cons = [n for n, e in ends.items() if e.consumer]
        return (
            f"{what}; a {action.kind} rewrites {', '.join(cons)} as a consumer's columns, "
            f"which the other owners read as their own weights: {untie}"
        )
    if len(sides) > 1 and isinstance(action, ExpandAction) and action.init != "zero_outgoing":
        return (
            f"{what}; {action.init} growth would initialise its new slices one way as a "
            f"producer's and another as a consumer's: use init='zero_outgoing' (zero at every "
            f"owner, the function is unchanged), or {untie}"
        )
    return None


def tie_problems(
    labelled: list[tuple[str, Any]],
    groups: Mapping[str, list[GroupMember]],
    ties: list[Tie],
) -> list[str]:
    """Every reason the plan would untie a tied parameter (empty: every tie is kept)."""
    if not ties:
        return []
    index = tie_index(ties)
    problems = []
    for label, action in labelled:
        for tie, ends in _ends(groups.get(action.layer, []), index, action):
            problem = _one(tie, action, ends)
            if problem is not None:
                problems.append(f"{label} (layer {action.layer!r}): {problem}")
    return problems
