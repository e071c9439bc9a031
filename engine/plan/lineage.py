"""Which state of a model a plan was made for: plan digests and neuron IDs across plans.

A plan names units by local index *and* by neuron ID. Widths alone (the layout fingerprint)
cannot tell a plan made before an earlier surgery from one made after it when that surgery
kept the widths (prune one unit, grow one): the neuron IDs can. This module gives what a
holder of a model without a live ``NeuronEngine`` (a checkpoint) needs to check that:

* :func:`plan_digest`: a plan's identity (SHA-256 of its canonical JSON), to refuse applying
  one plan twice;
* :class:`NeuronState`: the current neuron IDs per layer and the next free ID (bounded by the
  model's width: no lineage, no history), and :func:`registry_for` that turns it into the
  :class:`~engine.neurons.NeuronRegistry` a plan is applied with;
* :func:`stale_problems`: every neuron ID of a plan that disagrees with the state.

>>> from engine.plan import Plan, PruneAction
>>> plan = Plan.create([PruneAction(layer="fc", local_indices=[1], neuron_ids=[1],
...                                 reason="dead")], [("fc", 3)])
>>> state = NeuronState(layers={"fc": [0, 2, 5]}, next_id=6)
>>> stale_problems(plan, registry_for(plan, state))
["prune[0] (layer 'fc'): neuron_ids[0] = 1, but local index 1 is neuron 2"]
>>> stale_problems(plan, registry_for(plan, None))  # nothing known: the plan's own IDs
[]
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt

from engine.errors import StalePlanError
from engine.neurons import NeuronRegistry
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.plan.plan import Plan

__all__ = [
    "NeuronState",
    "check_not_applied",
    "check_not_stale",
    "id_pairs",
    "plan_digest",
    "registry_for",
    "stale_problems",
]


class NeuronState(BaseModel):
    """Current neuron IDs per layer (local-index order) and the next ID to hand out."""

    model_config = ConfigDict(extra="forbid")

    layers: dict[str, list[int]]
    next_id: NonNegativeInt

    @classmethod
    def of(cls, registry_state: dict[str, Any]) -> NeuronState:
        """From ``NeuronRegistry.state_dict()`` (the lineage is left out: it only grows)."""
        return cls(layers=registry_state["layers"], next_id=registry_state["next_id"])


def plan_digest(plan: Plan) -> str:
    """SHA-256 of the plan's canonical JSON (sorted keys): equal plans, equal digests.

    >>> from engine.plan import Plan
    >>> a = Plan.create([], [("fc", 2)], created="2025-01-01T00:00:00+00:00")
    >>> plan_digest(a) == plan_digest(Plan.loads(a.dumps())), len(plan_digest(a))
    (True, 64)
    """
    text = json.dumps(plan.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def id_pairs(action: Any) -> list[tuple[str, int, int]]:
    """``(field, local index, neuron ID)`` for every unit an action names by ID.

    >>> id_pairs(PruneAction(layer="fc", local_indices=[2], neuron_ids=[7], reason="dead"))
    [('neuron_ids[0]', 2, 7)]
    """
    fields: list[tuple[str, list[int], list[int] | None]] = []
    if isinstance(action, PruneAction):
        fields = [("neuron_ids", action.local_indices, action.neuron_ids)]
    elif isinstance(action, MergeAction):
        fields = [("keep_id", [action.keep], [action.keep_id]),
                  ("remove_id", [action.remove], [action.remove_id])]  # fmt: skip
    elif isinstance(action, FoldAction):
        fields = [("keep_ids", action.keep, action.keep_ids),
                  ("remove_ids", action.remove, action.remove_ids)]  # fmt: skip
    elif isinstance(action, ExpandAction):
        fields = [("source_ids", action.source_indices or [], action.source_ids)]
    out = []
    for field, local, given in fields:
        for k, (i, nid) in enumerate(zip(local, given or ())):
            out.append((field if field.endswith("_id") else f"{field}[{k}]", i, nid))
    return out


def _own_ids(plan: Plan) -> dict[str, list[int]]:
    """IDs numbered in layout order, overridden by the plan's own IDs (what a plan for a model
    with no recorded IDs is checked against: itself)."""
    ids, start = {}, 0
    for name, units in plan.layout:
        ids[name] = list(range(start, start + units))
        start += units
    for action in plan.actions():
        layer = ids.get(action.layer)
        for _, i, nid in id_pairs(action) if layer is not None else ():
            if 0 <= i < len(layer):
                layer[i] = int(nid)
    return ids


def registry_for(plan: Plan, state: NeuronState | None) -> NeuronRegistry:
    """The registry to apply ``plan`` with: for each layer of its layout, the state's IDs
    when the state knows the layer at the plan's width, else the plan's own IDs."""
    own = _own_ids(plan)
    known = state.layers if state is not None else {}
    layers = {
        name: list(known[name]) if len(known.get(name, ())) == units else own[name]
        for name, units in plan.layout
    }
    top = max((max(ids) + 1 for ids in [*layers.values(), *known.values()] if ids), default=0)
    next_id = max(top, state.next_id if state is not None else 0)
    return NeuronRegistry.from_state_dict({"layers": layers, "next_id": next_id})


def stale_problems(plan: Plan, registry: NeuronRegistry) -> list[str]:
    """``label (layer): field = given, but local index i is neuron N`` for each neuron ID of
    ``plan`` that disagrees with ``registry`` (indices out of range are left to validation)."""
    problems = []
    for section in ("prune", "merge", "expand"):
        for index, action in enumerate(getattr(plan, section)):
            if action.layer not in registry.layer_names:
                continue
            ids = registry.ids(action.layer)
            for field, i, nid in id_pairs(action):
                if 0 <= i < len(ids) and ids[i] != nid:
                    problems.append(
                        f"{section}[{index}] (layer {action.layer!r}): {field} = {nid}, but "
                        f"local index {i} is neuron {ids[i]}"
                    )
    return problems


def plan_name(plan: Plan) -> str:
    """``plan <digest prefix> (created <time>)``: how errors name a plan."""
    return f"plan {plan_digest(plan)[:12]} (created {plan.metadata.created})"


def check_not_applied(plan: Plan, earlier: list[Plan], where: Any) -> None:
    """Raise ``StalePlanError`` when ``plan`` equals one of the plans applied to ``where``.

    >>> from engine.plan import Plan
    >>> p = Plan.create([], [("fc", 2)])
    >>> check_not_applied(p, [p], "model.safetensors")
    Traceback (most recent call last):
    ...
    engine.errors.StalePlanError: plan ... was already applied to model.safetensors (plan 1 of 1 ...
    """
    digest = plan_digest(plan)
    for k, done in enumerate(earlier):
        if plan_digest(done) == digest:
            raise StalePlanError(
                f"{plan_name(plan)} was already applied to {where} (plan {k + 1} of "
                f"{len(earlier)} in its header); a plan applies once: make a new one for its "
                f"current state"
            )


def check_not_stale(plan: Plan, registry: NeuronRegistry, where: Any, *, applied: int) -> None:
    """Raise ``StalePlanError`` naming the plan, the first IDs that disagree and the state
    (``applied`` plans so far) when ``plan`` was made for other neuron IDs than ``registry``'s.
    """
    stale = stale_problems(plan, registry)
    if stale:
        more = f"; … and {len(stale) - 3} more" if len(stale) > 3 else ""
        raise StalePlanError(
            f"{plan_name(plan)} was made for another state of {where} ({applied} plan(s) "
            f"applied to it already): {'; '.join(stale[:3])}{more}; make the plan "
            f"from its current neuron IDs (engine.checkpoint.load_neurons)"
        )
