"""Rules that tie a plan's parts together, checked whenever a ``Plan`` is built or loaded.

The layout lists each layer once and matches its fingerprint, every local index is in range
for its layer, no layer is left with fewer than one unit, and the statistics are the ones the
actions give (they are derived, never trusted). Problems raise ``ValueError`` (pydantic turns
it into a validation error, which plan loading reports as ``PlanError``).

>>> from engine.layout.model import layout_fingerprint
>>> from engine.plan.actions import PruneAction
>>> from engine.plan.metadata import PlanMetadata
>>> meta = PlanMetadata(fingerprint=layout_fingerprint([("fc", 2)]), layout=[("fc", 2)])
>>> prune = [PruneAction(layer="fc", local_indices=[0], neuron_ids=[0], reason="dead")]
>>> check_consistency(meta, {"prune": prune}, None).widths
{'fc': {'before': 2, 'after': 1}}
>>> check_consistency(meta, {"prune": prune * 2}, None)
Traceback (most recent call last):
...
ValueError: statistics.widths.fc.after = 0: the actions would leave layer 'fc' with fewer ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from engine.layout.model import layout_fingerprint
from engine.plan.actions import Action, FoldAction, MergeAction, PruneAction
from engine.plan.metadata import PlanMetadata
from engine.plan.statistics import PlanStatistics


def index_fields(action: Action) -> list[tuple[str, list[int]]]:
    """``(field name, local indices)`` for every index field of an action.

    >>> index_fields(PruneAction(layer="fc", local_indices=[1, 2], neuron_ids=[1, 2],
    ...                          reason="dead"))
    [('local_indices', [1, 2])]
    """
    if isinstance(action, PruneAction):
        return [("local_indices", list(action.local_indices))]
    if isinstance(action, MergeAction):
        return [("keep", [action.keep]), ("remove", [action.remove])]
    if isinstance(action, FoldAction):
        return [("keep", list(action.keep)), ("remove", list(action.remove))]
    return [("source_indices", list(action.source_indices or ()))]


def check_consistency(
    meta: PlanMetadata,
    sections: Mapping[str, Sequence[Action]],
    statistics: PlanStatistics | None,
) -> PlanStatistics:
    """The statistics of a plan whose ``metadata`` is ``meta`` and whose action lists are
    ``sections`` (``{"prune": […], "merge": […], "expand": […]}``, in that order).

    ``statistics`` is the plan's own (``None`` when omitted: they are computed); ``ValueError``
    lists every problem (see the module docstring).
    """
    names = [name for name, _ in meta.layout]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"metadata.layout: layers {dupes} are listed more than once")
    expected = layout_fingerprint(meta.layout)
    if meta.fingerprint != expected:
        raise ValueError(
            f"metadata.fingerprint = {meta.fingerprint!r} does not match metadata.layout "
            f"(its fingerprint is {expected!r})"
        )
    sizes = dict(meta.layout)
    problems = []
    for section, actions in sections.items():
        for i, action in enumerate(actions):
            if action.layer not in sizes:
                continue
            for field, values in index_fields(action):
                bad = sorted({v for v in values if v >= sizes[action.layer]})
                if bad:
                    problems.append(
                        f"{section}.{i}.{field}: units {bad} out of range for layer "
                        f"{action.layer!r} ({sizes[action.layer]} units in metadata.layout)"
                    )
    if problems:
        raise ValueError("; ".join(problems))
    every = [action for actions in sections.values() for action in actions]
    computed = PlanStatistics.compute(every, meta.layout)
    empty = [
        (n, w["after"])
        for n, w in computed.widths.items()
        if w["after"] < 1 and n in computed.layers_changed
    ]
    if empty:
        raise ValueError(
            "; ".join(
                f"statistics.widths.{n}.after = {after}: the actions would leave layer "
                f"{n!r} with fewer than 1 unit"
                for n, after in empty
            )
        )
    if statistics is None:
        return computed
    if statistics != computed:
        given, want = statistics.model_dump(), computed.model_dump()
        pairs = [(k, given[k], want[k]) for k in want if k != "widths"]
        layers = list(dict.fromkeys([*want["widths"], *given["widths"]]))
        pairs += [(f"widths.{n}", given["widths"].get(n), want["widths"].get(n)) for n in layers]
        diff = "; ".join(
            f"statistics.{k} = {json.dumps(a)}, the actions give {json.dumps(b)}"
            for k, a, b in pairs
            if a != b
        )
        raise ValueError(
            f"{diff} (statistics are derived: delete the 'statistics' key to recompute them)"
        )
    return statistics
