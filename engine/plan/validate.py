"""Check a whole plan against a model layout before anything is touched.

Every problem is collected (not just the first), each naming the action and its layer: unknown
layers, indices out of range, neuron IDs that disagree with the layout, duplicates within an
action, one unit in several actions (actions naming several layers of one coupled group for the
same units get one line saying the layers are one group, not one per unit), net2net sources
that the plan removes, layers that would be emptied (residual-coupled layers count as one
group: they share one unit space), removing or adding units of output layers (logits), action
kinds surgery cannot carry out for a layer (LSTM hidden units, grouped convolutions…), and a
fingerprint that does not match.

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

from collections import Counter, defaultdict

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


def _id_mismatches(action, layer) -> list[str]:
    """``field[i] = given, but local index j is neuron N`` for each ID that disagrees."""
    ids = layer.neuron_ids
    pairs: list[tuple[str, list[int], list[int] | None]] = []
    if isinstance(action, PruneAction):
        pairs.append(("neuron_ids", list(action.local_indices), list(action.neuron_ids)))
    elif isinstance(action, MergeAction):
        pairs.append(("keep_id", [action.keep], [action.keep_id]))
        pairs.append(("remove_id", [action.remove], [action.remove_id]))
    elif isinstance(action, FoldAction):
        pairs.append(("keep_ids", list(action.keep), list(action.keep_ids)))
        pairs.append(("remove_ids", list(action.remove), list(action.remove_ids)))
    elif isinstance(action, ExpandAction) and action.source_indices is not None:
        pairs.append(("source_ids", list(action.source_indices), action.source_ids))
    out = []
    for field, local, given in pairs:
        if given is None or len(ids) != layer.units:
            continue
        for k, (i, nid) in enumerate(zip(local, given, strict=False)):
            if ids[i] != nid:
                where = field if field.endswith("_id") else f"{field}[{k}]"
                out.append(f"{where} = {nid}, but local index {i} is neuron {ids[i]}")
    return out


def _group(layout: ModelLayout, name: str) -> tuple[str, ...]:
    """Canonical id of a layer's residual-coupled group (the layer alone when uncoupled)."""
    return tuple(sorted({name, *layout.layers[name].coupled}))


def _group_text(group: tuple[str, ...]) -> str:
    if len(group) == 1:
        return f"layer {group[0]!r}"
    return f"layers {list(group)} (residual-coupled, one unit space)"


def _one_group(group: tuple[str, ...], named: dict[str, str]) -> str:
    """One line for actions naming several layers of one coupled group for the same units."""
    layers = list(dict.fromkeys(named.values()))
    others = [n for n in group if n not in layers]
    more = f" (with {', '.join(map(repr, others))})" if others else ""
    actions = ", ".join(label.partition(" ")[0] for label in named)
    return (
        f"{actions}: layers {', '.join(map(repr, layers))} are one coupled group{more}: they "
        f"share one unit space, so a unit removed from one is removed from all; name one of "
        f"them (e.g. {layers[0]!r})"
    )


def validation_problems(
    plan: Plan, layout: ModelLayout, *, allow_output_changes: bool = False
) -> list[str]:
    """Every reason ``plan`` cannot be applied to a model with ``layout`` (empty: it can)."""
    problems: list[str] = []
    try:
        plan.check_fingerprint(layout)
    except FingerprintMismatchError as exc:
        problems.append(str(exc))
    # Residual-coupled layers share one unit space: unit i of each is the same channel.
    owner: dict[tuple[tuple[str, ...], int], tuple[str, str]] = {}  # (label, layer)
    across: dict[tuple[str, ...], dict[str, str]] = defaultdict(dict)  # group: label -> layer
    remover: dict[tuple[tuple[str, ...], int], str] = {}
    removed: dict[tuple[str, ...], set[int]] = defaultdict(set)
    expands = []
    for action in plan.actions():
        label = _label(plan, action)
        layer = layout.layers.get(action.layer)
        if layer is None:
            problems.append(f"{label}: no such tracked layer; layers are {list(layout.layers)}")
            continue
        group = _group(layout, action.layer)
        gone, touched = _removed_and_touched(action)
        bad = sorted({i for i in touched if not 0 <= i < layer.units})
        if bad:
            problems.append(f"{label}: local indices {bad} out of range for {layer.units} units")
            continue
        # net2net may split one source twice; elsewhere a repeat is an error (linear check)
        if not isinstance(action, ExpandAction) and len(set(touched)) != len(touched):
            dup = sorted(i for i, n in Counter(touched).items() if n > 1)
            problems.append(f"{label}: units {dup} appear more than once")
        problems += [f"{label}: {m}" for m in _id_mismatches(action, layer)]
        kind = action.kind
        if kind not in layer.supports:
            problems.append(
                f"{label}: surgery does not support {kind!r} on this {layer.module_type} layer"
            )
        if gone and layer.is_output and not allow_output_changes:
            problems.append(
                f"{label}: removes units of an output layer (its units are the model's outputs)"
            )
        if isinstance(action, ExpandAction):
            if layer.is_output and not allow_output_changes:
                problems.append(
                    f"{label}: expands an output layer (changes the model's output width)"
                )
            expands.append((label, group, action))
            continue
        for unit in touched:
            first, first_layer = owner.setdefault((group, unit), (label, action.layer))
            if first != label and first_layer != action.layer:  # one group, named twice
                across[group].update({first: first_layer, label: action.layer})
            elif first != label:
                problems.append(f"{label}: unit {unit} is already used by {first}")
        for unit in gone:
            remover.setdefault((group, unit), label)
        removed[group].update(gone)
    problems += [_one_group(group, named) for group, named in across.items()]
    for label, group, action in expands:  # sources are read: nothing may remove them
        for unit in sorted(set(action.source_indices or ())):
            by = remover.get((group, unit))
            if by is not None:
                problems.append(f"{label}: source unit {unit} is removed by {by}")
    for group, units in removed.items():
        grown = sum(a.count for _, g, a in expands if g == group)
        width = min(layout.layers[n].units for n in group if n in layout.layers)
        if len(units) >= width + grown:
            problems.append(f"{_group_text(group)}: the plan removes all of its units")
    return problems


def validate_plan(plan: Plan, layout: ModelLayout, *, allow_output_changes: bool = False) -> None:
    """Raise ``PlanValidationError`` listing every problem (see ``validation_problems``)."""
    problems = validation_problems(plan, layout, allow_output_changes=allow_output_changes)
    if problems:
        raise PlanValidationError(problems)
