"""Check a whole plan against a model layout before anything is touched.

Every problem is collected (not just the first), each naming the action and its layer: unknown
layers, indices out of range, duplicates within an action, one unit in several actions, layers
that would be emptied, units of output layers (logits), action kinds surgery cannot carry out
for a layer (LSTM hidden units, grouped convolutions…), and a fingerprint that does not match.

>>> from engine.layout import LayerLayout, ModelLayout
>>> from engine.plan import Plan, PruneAction
>>> layout = ModelLayout({"fc": LayerLayout("fc", "Linear", 3, [0, 1, 2]),
...                       "out": LayerLayout("out", "Linear", 2, [3, 4], is_output=True)})
>>> plan = Plan.create([PruneAction(layer="out", local_indices=[0], neuron_ids=[3],
...                                 reason="dead")], layout)
>>> validation_problems(plan, layout)
["prune[0] (layer 'out'): removes units of an output layer (its units are the model's outputs)"]
"""

from __future__ import annotations

from collections import defaultdict

from engine.errors import FingerprintMismatchError, PlanValidationError
from engine.layout import ModelLayout
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.plan.plan import Plan


def _label(plan: Plan, action) -> str:
    for section in ("prune", "merge", "expand"):
        items = getattr(plan, section)
        for i, item in enumerate(items):
            if item is action:
                return f"{section}[{i}] (layer {action.layer!r})"
    return f"{action.kind} (layer {action.layer!r})"  # pragma: no cover


def _removed_and_touched(action) -> tuple[list[int], list[int]]:
    """(units the action removes, every unit it reads or writes), as local indices."""
    if isinstance(action, PruneAction):
        return list(action.local_indices), list(action.local_indices)
    if isinstance(action, MergeAction):
        return [action.remove], [action.keep, action.remove]
    if isinstance(action, FoldAction):
        return list(action.remove), [*action.keep, *action.remove]
    if isinstance(action, ExpandAction):
        return [], list(action.source_indices or [])
    return [], []  # pragma: no cover


def validation_problems(
    plan: Plan, layout: ModelLayout, *, allow_output_changes: bool = False
) -> list[str]:
    """Every reason ``plan`` cannot be applied to a model with ``layout`` (empty: it can)."""
    problems: list[str] = []
    try:
        plan.check_fingerprint(layout)
    except FingerprintMismatchError as exc:
        problems.append(str(exc))
    owner: dict[tuple[str, int], str] = {}
    removed: dict[str, set[int]] = defaultdict(set)
    for action in plan.actions():
        label = _label(plan, action)
        layer = layout.layers.get(action.layer)
        if layer is None:
            problems.append(f"{label}: no such tracked layer; layers are {list(layout.layers)}")
            continue
        gone, touched = _removed_and_touched(action)
        bad = sorted({i for i in touched if not 0 <= i < layer.units})
        if bad:
            problems.append(f"{label}: local indices {bad} out of range for {layer.units} units")
            continue
        if len(set(touched)) != len(touched):
            dup = sorted({i for i in touched if touched.count(i) > 1})
            if not isinstance(action, ExpandAction):  # net2net may split one source twice
                problems.append(f"{label}: units {dup} appear more than once")
        kind = action.kind
        if kind not in layer.supports:
            problems.append(
                f"{label}: surgery does not support {kind!r} on this {layer.module_type} layer"
            )
        if gone and layer.is_output and not allow_output_changes:
            problems.append(
                f"{label}: removes units of an output layer (its units are the model's outputs)"
            )
        if not isinstance(action, ExpandAction):
            for unit in touched:
                first = owner.setdefault((action.layer, unit), label)
                if first != label:
                    problems.append(f"{label}: unit {unit} is already used by {first}")
        removed[action.layer].update(gone)
    for name, units in removed.items():
        grown = sum(a.count for a in plan.expand if a.layer == name)
        if len(units) >= layout.layers[name].units + grown:
            problems.append(f"layer {name!r}: the plan removes all of its units")
    return problems


def validate_plan(plan: Plan, layout: ModelLayout, *, allow_output_changes: bool = False) -> None:
    """Raise ``PlanValidationError`` listing every problem (see ``validation_problems``)."""
    problems = validation_problems(plan, layout, allow_output_changes=allow_output_changes)
    if problems:
        raise PlanValidationError(problems)
