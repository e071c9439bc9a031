"""Human-readable text of a plan, in the spirit of SelfModifyingSLM's recommendation printout.

Plain text, deterministic (the same plan always gives the same text): a header (fingerprint,
layout, creation time, source, policies, samples, notes), one section per action kind with one
line per action (layer, units as ``local index→neuron ID``, reason, policy) and its key
evidence, the width of every layer before → after, and totals.

Importing this module registers ``plan_summary`` as the formatter of ``Plan.summary()``
(``engine.plan`` imports it).

>>> from engine.plan.actions import PruneAction
>>> from engine.plan.plan import Plan
>>> plan = Plan.create(
...     [PruneAction(layer="fc1", local_indices=[1, 3], neuron_ids=[11, 13], reason="dead",
...                  policy="dead", evidence={"firing_rate": [0.0, 0.0]})],
...     layout=[("fc1", 8)], created="2025-01-01T00:00:00+00:00")
>>> print(plan_summary(plan).split("PRUNE")[1].split("MERGE")[0].strip())
: 2 units in 1 action
--------------------------------------------------------------------------------
  layer 'fc1': 2 units [1→11, 3→13]  reason dead (policy dead)
      evidence: firing_rate 0 (×2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.plan.plan import Plan, register_summary_formatter

WIDTH = 80
MAX_UNITS = 8
MAX_EVIDENCE = 5


def _num(value: float) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value(value: Any, limit: int = 60) -> str:
    """Short text of one evidence value: numbers to 4 digits, numeric lists as a range."""
    if value is None:
        text = "null"
    elif _is_num(value) or isinstance(value, bool):
        text = _num(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Sequence) and value and all(_is_num(v) for v in value):
        lo, hi = min(value), max(value)
        text = _num(lo) if lo == hi else f"{_num(lo)}–{_num(hi)}"
        if len(value) > 1:
            text += f" (×{len(value)})"
    elif isinstance(value, Sequence):
        text = "[" + ", ".join(_value(v, 12) for v in value[:4])
        text += ", …]" if len(value) > 4 else "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {_value(v, 12)}" for k, v in list(value.items())[:3])
        text += ", …}" if len(value) > 3 else "}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _units(indices: Sequence[int], ids: Sequence[int] | None, cap: int = MAX_UNITS) -> str:
    """``[3→103, 7→107, … +n more]``: local indices with their neuron IDs, capped."""
    shown = [
        f"{i}→{ids[k]}" if ids is not None and k < len(ids) else str(i)
        for k, i in enumerate(indices[:cap])
    ]
    more = f", … +{len(indices) - cap} more" if len(indices) > cap else ""
    return "[" + ", ".join(shown) + more + "]"


def _evidence(evidence: Mapping[str, Any], cap: int = MAX_EVIDENCE) -> list[str]:
    if not evidence:
        return []
    items = [f"{key} {_value(value)}" for key, value in list(evidence.items())[:cap]]
    if len(evidence) > cap:
        items.append(f"+{len(evidence) - cap} more")
    return ["      evidence: " + ", ".join(items)]


def _why(action: Any) -> str:
    return f"reason {action.reason} (policy {action.policy})"


def _prune_lines(a: PruneAction) -> list[str]:
    n = len(a.local_indices)
    line = f"  layer {a.layer!r}: {n} unit{'s' if n != 1 else ''} "
    line += f"{_units(a.local_indices, a.neuron_ids)}  {_why(a)}"
    lines = [line]
    if a.constant_values is not None:
        lines.append(f"      folded into the consumer's bias: constant {_value(a.constant_values)}")
    return lines + _evidence(a.evidence)


def _merge_lines(a: MergeAction | FoldAction) -> list[str]:
    if isinstance(a, MergeAction):
        line = (
            f"  layer {a.layer!r}: merge {a.remove}→{a.remove_id} into {a.keep}→{a.keep_id}  "
            f"alpha {_num(a.alpha)} beta {_num(a.beta)} correlation {a.correlation:.4f}"
        )
    else:
        line = (
            f"  layer {a.layer!r}: fold |R|={len(a.remove)} → |K|={len(a.keep)}  "
            f"remove {_units(a.remove, a.remove_ids)} onto keep {_units(a.keep, a.keep_ids)}  "
            f"ridge {_num(a.ridge)}"
        )
    if a.expected_cost is not None:
        line += f" expected cost {_num(a.expected_cost)}"
    return [f"{line}  {_why(a)}", *_evidence(a.evidence)]


def _expand_lines(a: ExpandAction, sizes: Mapping[str, int]) -> list[str]:
    line = f"  layer {a.layer!r}: +{a.count} unit{'s' if a.count != 1 else ''}"
    if a.layer in sizes:
        line += f" ({sizes[a.layer]} → {sizes[a.layer] + a.count})"
    line += f"  init {a.init}"
    if a.noise:
        line += f" noise {_num(a.noise)}"
    lines = [f"{line}  {_why(a)}"]
    if a.source_indices:
        lines.append(f"      copies of {_units(a.source_indices, a.source_ids)}")
    return lines + _evidence(a.evidence)


def _section(title: str, count_text: str, body: list[str]) -> list[str]:
    if not body:
        return ["", f"{title}: none"]
    return ["", f"{title}: {count_text}", "-" * WIDTH, *body]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def plan_summary(plan: Plan) -> str:
    """The plan as plain text (see the module docstring); ends with a newline."""
    meta, stats = plan.metadata, plan.statistics
    sizes = dict(meta.layout)
    layout = ", ".join(f"{name}={size}" for name, size in meta.layout[:12])
    if len(meta.layout) > 12:
        layout += f", … ({len(meta.layout)} layers)"
    policies = "; ".join(
        p["name"]
        + (" (" + ", ".join(f"{k}={_value(v, 24)}" for k, v in p["settings"].items()) + ")")
        * bool(p["settings"])
        for p in meta.policies
    )
    samples = ", ".join(f"{k}={v}" for k, v in meta.samples_seen.items()) or "unknown"
    lines = [
        "NEURON-ENGINE PLAN",
        "=" * WIDTH,
        f"Fingerprint: {meta.fingerprint} ({_plural(len(meta.layout), 'layer')}: {layout})",
        f"Created:     {meta.created}",
        f"Source:      {meta.source} (library {meta.library_version})",
        f"Policies:    {policies or 'none recorded'}",
        f"Samples:     {samples}",
        "Units are shown as local index→neuron ID, in the layout the plan was made for.",
    ]
    if meta.notes:
        lines += ["Notes:", *(f"  - {note}" for note in meta.notes)]

    body = [line for a in plan.prune for line in _prune_lines(a)]
    count = f"{_plural(stats.prune_units, 'unit')} in {_plural(len(plan.prune), 'action')}"
    lines += _section("PRUNE", count, body)

    body = [line for a in plan.merge for line in _merge_lines(a)]
    count = f"{_plural(stats.merged_units, 'unit')} removed in {_plural(len(plan.merge), 'action')}"
    lines += _section("MERGE", count, body)

    body = [line for a in plan.expand for line in _expand_lines(a, sizes)]
    count = f"{_plural(stats.expand_units, 'unit')} in {_plural(len(plan.expand), 'action')}"
    lines += _section("EXPAND", count, body)

    lines += ["", "WIDTHS", "-" * WIDTH]
    removed: dict[str, int] = {}
    added: dict[str, int] = {}
    for a in plan.actions():
        if isinstance(a, PruneAction):
            removed[a.layer] = removed.get(a.layer, 0) + len(a.local_indices)
        elif isinstance(a, MergeAction):
            removed[a.layer] = removed.get(a.layer, 0) + 1
        elif isinstance(a, FoldAction):
            removed[a.layer] = removed.get(a.layer, 0) + len(a.remove)
        else:
            added[a.layer] = added.get(a.layer, 0) + a.count
    for name, width in stats.widths.items():
        parts = [f"-{removed[name]}" if name in removed else "", f"+{added.get(name, '')}"]
        change = " ".join(p for p in parts if p not in ("", "+")) or "unchanged"
        lines.append(f"  layer {name!r}: {width['before']} → {width['after']}  ({change})")
    unknown = [name for name in stats.layers_changed if name not in stats.widths]
    lines += [f"  layer {name!r}: not in the plan's layout (size unknown)" for name in unknown]

    before = sum(w["before"] for w in stats.widths.values())
    after = sum(w["after"] for w in stats.widths.values())
    lines += [
        "",
        "TOTALS",
        "-" * WIDTH,
        f"  prune {_plural(stats.prune_units, 'unit')}, merge away "
        f"{_plural(stats.merged_units, 'unit')}, expand {_plural(stats.expand_units, 'unit')}",
        f"  {_plural(len(stats.layers_changed), 'layer')} changed"
        + (f" ({', '.join(stats.layers_changed)})" if stats.layers_changed else ""),
        f"  tracked units: {before} → {after}",
    ]
    return "\n".join(lines) + "\n"


register_summary_formatter(plan_summary)
