"""Import of the older SelfModifyingSLM recommendations JSON (``prune`` / ``merge`` / ``expand``).

The old file lists one entry per unit to prune, one per pair to merge and one per layer to grow,
with the layer sizes under ``metadata.model_info.layer_details``. The conversion is faithful:
every entry becomes (part of) an action, also entries that look wrong. Refusing harmful actions
(removing a logit, pruning busy units) is the job of plan validation and policies; the converter
only adds a ``metadata.notes`` line for each suspicious group.

Importing this module registers the format ``"selfmodifying-slm"`` with
``engine.plan.formats.register_plan_format``, so that ``Plan.load`` / ``Plan.loads`` detect
and convert such files (``engine.plan`` imports it).

How entries map:

* prune entries of one layer and reason → one ``PruneAction`` with sorted local indices; the
  evidence keeps ``firing_frequency`` / ``mean_activation`` (and any other per-unit key) as
  lists aligned with the indices.
* a merge entry ``neuron_pair [a, b]``, ``local_indices [i, j]`` → ``MergeAction(keep=i,
  remove=j, alpha=1.0, beta=0.0)``: the old format carries no fit, which is exact only for
  identical units; the evidence says so (``"fit": "not in source; recompute from statistics"``).
* an expand entry → ``ExpandAction(count=suggested_expansion, init="zero_outgoing")``: the old
  format names no source units to copy, so new units start with zero outgoing weights (the
  function is unchanged until training moves them).

>>> plan = convert_selfmodifying_slm({
...     "metadata": {"model_info": {"layer_details": {"fc1": 4, "fc2": 2}}},
...     "prune": [{"neuron_id": 2, "layer_name": "fc1", "local_index": 2, "reason": "dead",
...                "firing_frequency": 0.0, "mean_activation": 0.0}],
...     "merge": [], "expand": []})
>>> plan.metadata.source, plan.prune[0].local_indices, plan.statistics.widths["fc1"]
('selfmodifying-slm', [2], {'before': 4, 'after': 3})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import PlanError
from engine.plan.actions import Action, ExpandAction, MergeAction, PruneAction
from engine.plan.formats import register_plan_format
from engine.plan.plan import Plan

SOURCE = "selfmodifying-slm"
NO_FIT = "not in source; recompute from statistics"
_MARKERS = {"prune": "neuron_id", "merge": "neuron_pair", "expand": "current_size"}
_TOP_KEYS = {"metadata", "prune", "merge", "expand", "statistics"}
_BUSY = 0.5  # a "dead"/"low_activity" unit firing more often than this is suspicious
_CORRELATION_SLACK = 1e-6  # float error above |r| = 1 that is clipped rather than refused


def looks_like_selfmodifying_slm(data: Any) -> bool:
    """True for a dict shaped like a SelfModifyingSLM recommendations file.

    >>> looks_like_selfmodifying_slm({"metadata": {}, "prune": [{"neuron_id": 1}]})
    True
    >>> looks_like_selfmodifying_slm({"format": "neuron-engine.plan", "prune": []})
    False
    """
    if not isinstance(data, Mapping) or "format" in data or not set(data) <= _TOP_KEYS:
        return False
    meta = data.get("metadata")
    if not isinstance(meta, Mapping) or "fingerprint" in meta:
        return False
    lists = {k: data.get(k) for k in _MARKERS}
    if not any(isinstance(v, list) for v in lists.values()):
        return False
    marked = any(
        isinstance(entry, Mapping) and _MARKERS[key] in entry
        for key, entries in lists.items()
        if isinstance(entries, list)
        for entry in entries
    )
    return marked or "model_info" in meta


class _Reader:
    """Typed access to one legacy entry; errors name the entry (``prune[3]: …``)."""

    def __init__(self, source: str, where: str, entry: Any) -> None:
        self.source, self.where = source, where
        if not isinstance(entry, Mapping):
            self.fail(f"expected an object, got {type(entry).__name__}")
        self.entry: Mapping[str, Any] = entry

    def fail(self, message: str) -> None:
        raise PlanError(f"{self.source}: {self.where}: {message}")

    def get(self, key: str) -> Any:
        if key not in self.entry:
            self.fail(f"missing {key!r}")
        return self.entry[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            self.fail(f"{key!r} must be a non-empty string, got {value!r}")
        return value

    def index(self, key: str, value: Any = None) -> int:
        value = self.get(key) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(f"{key!r} must be a non-negative integer, got {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{key!r} must be a number, got {value!r}")
        return float(value)

    def pair(self, key: str) -> tuple[int, int]:
        value = self.get(key)
        if not isinstance(value, list) or len(value) != 2:
            self.fail(f"{key!r} must be a list of two integers, got {value!r}")
        return self.index(key, value[0]), self.index(key, value[1])

    def extras(self, known: set[str]) -> dict[str, Any]:
        return {k: v for k, v in self.entry.items() if k not in known}


def _layout(meta: Mapping[str, Any], source: str) -> list[tuple[str, int]]:
    info = meta.get("model_info")
    details = info.get("layer_details") if isinstance(info, Mapping) else None
    if not isinstance(details, Mapping):
        raise PlanError(
            f"{source}: metadata.model_info.layer_details: missing (the layer sizes are needed "
            f"for the plan's layout and fingerprint)"
        )
    layout = []
    for name, size in details.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PlanError(
                f"{source}: metadata.model_info.layer_details.{name}: must be a non-negative "
                f"integer, got {size!r}"
            )
        layout.append((str(name), size))
    return layout


def _entries(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    entries = data.get(key, [])
    if not isinstance(entries, list):
        raise PlanError(f"{source}: {key}: expected a list, got {type(entries).__name__}")
    return entries


def _check_layer(
    r: _Reader, layer: str, sizes: dict[str, int], notes: list[str], index: int | None = None
) -> bool:
    """Note an unknown layer or an index out of range; False when the entry must be skipped
    (an index beyond the layer's size cannot be part of a plan for that layout)."""
    if layer not in sizes:
        notes.append(f"{r.where}: layer {layer!r} is not in metadata.model_info.layer_details")
    elif index is not None and index >= sizes[layer]:
        notes.append(
            f"{r.where}: local index {index} is out of range for layer {layer!r} "
            f"({sizes[layer]} units); skipped"
        )
        return False
    return True


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if f"{lo:.3f}" == f"{hi:.3f}" else f"{lo:.3f}–{hi:.3f}"


def _convert_prune(
    entries: list[Any], sizes: dict[str, int], last: str | None, source: str, notes: list[str]
) -> list[PruneAction]:
    known = {"neuron_id", "layer_name", "local_index", "reason"}
    groups: dict[tuple[str, str], dict[int, tuple[int, dict[str, Any]]]] = {}
    for i, entry in enumerate(entries):
        r = _Reader(source, f"prune[{i}]", entry)
        neuron_id = r.index("neuron_id")
        layer, local, reason = r.text("layer_name"), r.index("local_index"), r.text("reason")
        for key in ("firing_frequency", "mean_activation"):
            if key in r.entry:
                r.number(key)
        if not _check_layer(r, layer, sizes, notes, local):
            continue
        group = groups.setdefault((layer, reason), {})
        if local in group:
            notes.append(
                f"{r.where}: unit {local} of layer {layer!r} is listed twice for {reason!r}; "
                f"kept once"
            )
            continue
        group[local] = (neuron_id, r.extras(known))
    order = {name: k for k, name in enumerate(sizes)}
    actions = []
    for layer, reason in sorted(groups, key=lambda g: (order.get(g[0], len(order)), g[0], g[1])):
        units = sorted(groups[(layer, reason)].items())
        keys: list[str] = []
        for _, (_, extra) in units:
            keys += [k for k in extra if k not in keys]
        evidence = {k: [extra.get(k) for _, (_, extra) in units] for k in keys}
        actions.append(
            PruneAction(
                layer=layer,
                reason=reason,
                policy=SOURCE,
                local_indices=[local for local, _ in units],
                neuron_ids=[nid for _, (nid, _) in units],
                evidence=evidence,
            )
        )
        freq = [f for f in evidence.get("firing_frequency", []) if isinstance(f, (int, float))]
        busy = [f for f in freq if f > _BUSY]
        if reason in ("dead", "low_activity") and busy:
            notes.append(
                f"prune: {len(busy)} {reason!r} unit(s) of layer {layer!r} fire in more than "
                f"{_BUSY:.0%} of samples (firing_frequency {_span(busy)}); "
                f"the old tracker judged them by mean activation — review before applying"
            )
        if layer == last:
            notes.append(
                f"prune: layer {layer!r} is the last tracked layer (probably the model's "
                f"output, e.g. logits); removing {len(units)} of its units changes the output "
                f"width"
            )
    return actions


def _convert_merge(
    entries: list[Any], sizes: dict[str, int], source: str, notes: list[str]
) -> list[MergeAction]:
    known = {"neuron_pair", "layer_name", "local_indices", "correlation"}
    actions = []
    for i, entry in enumerate(entries):
        r = _Reader(source, f"merge[{i}]", entry)
        id_keep, id_remove = r.pair("neuron_pair")
        keep, remove = r.pair("local_indices")
        layer, corr = r.text("layer_name"), r.number("correlation")
        if keep == remove:
            r.fail(f"'local_indices' name the same unit twice ({keep})")
        if abs(corr) > 1.0 + _CORRELATION_SLACK or corr != corr:
            r.fail(f"'correlation' must be in [-1, 1], got {corr!r}")
        if not _check_layer(r, layer, sizes, notes, max(keep, remove)):
            continue
        reason = entry.get("reason", "redundant")
        if not isinstance(reason, str) or not reason:
            r.fail(f"'reason' must be a non-empty string, got {reason!r}")
        evidence = {**r.extras(known | {"reason"}), "fit": NO_FIT}
        actions.append(
            MergeAction(
                layer=layer,
                reason=reason,
                policy=SOURCE,
                keep=keep,
                remove=remove,
                keep_id=id_keep,
                remove_id=id_remove,
                alpha=1.0,
                beta=0.0,
                correlation=max(-1.0, min(1.0, corr)),
                evidence=evidence,
            )
        )
    return actions


def _convert_expand(
    entries: list[Any], sizes: dict[str, int], source: str, notes: list[str]
) -> list[ExpandAction]:
    known = {"layer_name", "suggested_expansion", "reason"}
    actions = []
    for i, entry in enumerate(entries):
        r = _Reader(source, f"expand[{i}]", entry)
        layer, count = r.text("layer_name"), r.index("suggested_expansion")
        current = r.index("current_size")
        reason = r.text("reason")
        _check_layer(r, layer, sizes, notes)
        if layer in sizes and sizes[layer] != current:
            notes.append(
                f"{r.where}: current_size {current} differs from layer_details ({sizes[layer]}) "
                f"for layer {layer!r}"
            )
        if count == 0:
            notes.append(f"{r.where}: suggested_expansion is 0 for layer {layer!r}; skipped")
            continue
        actions.append(
            ExpandAction(
                layer=layer,
                reason=reason,
                policy=SOURCE,
                count=count,
                init="zero_outgoing",
                evidence=r.extras(known),
            )
        )
    return actions


def _check_totals(stats: Any, actions: list[Action], notes: list[str]) -> None:
    """Note where the old file's own totals disagree with its entries."""
    if not isinstance(stats, Mapping):
        return
    counted = {
        "total_prunable_neurons": sum(
            len(a.local_indices) for a in actions if isinstance(a, PruneAction)
        ),
        "total_mergeable_pairs": sum(isinstance(a, MergeAction) for a in actions),
        "layers_needing_expansion": len({a.layer for a in actions if isinstance(a, ExpandAction)}),
    }
    for key, count in counted.items():
        if key in stats and stats[key] != count:
            notes.append(f"statistics.{key} = {stats[key]!r}, but the entries give {count}")


def convert_selfmodifying_slm(data: Mapping[str, Any], *, source: str = SOURCE) -> Plan:
    """A ``Plan`` from a SelfModifyingSLM recommendations dict (see the module docstring).

    ``source`` (usually the file name) prefixes error messages. Malformed entries raise
    ``PlanError`` naming the entry, e.g. ``prune[3]: missing 'local_index'``.
    """
    if not isinstance(data, Mapping):
        raise PlanError(f"{source}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise PlanError(f"{source}: unknown top-level keys {unknown} for a SelfModifyingSLM file")
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        raise PlanError(f"{source}: metadata: missing or not an object")
    layout = _layout(meta, source)
    sizes = dict(layout)
    last = layout[-1][0] if layout else None
    stamp = meta.get("timestamp")
    notes = [
        "converted from a SelfModifyingSLM recommendations file"
        + (f" written {stamp}" if isinstance(stamp, str) else "")
    ]
    actions: list[Action] = []
    actions += _convert_prune(_entries(data, "prune", source), sizes, last, source, notes)
    actions += _convert_merge(_entries(data, "merge", source), sizes, source, notes)
    actions += _convert_expand(_entries(data, "expand", source), sizes, source, notes)
    if any(isinstance(a, MergeAction) for a in actions):
        notes.append(
            "merge: the old format has no fit; alpha=1, beta=0 is exact only for identical "
            "units — recompute the coefficients from statistics before applying"
        )
    _check_totals(data.get("statistics"), actions, notes)
    settings = meta.get("analysis_parameters", {})
    if not isinstance(settings, Mapping):
        raise PlanError(f"{source}: metadata.analysis_parameters: expected an object")
    try:
        return Plan.create(
            actions,
            layout,
            policies=[{"name": SOURCE, "settings": dict(settings)}],
            samples_seen={},
            notes=notes,
            source=SOURCE,
            created=stamp if isinstance(stamp, str) and stamp else None,
        )
    except PlanError as exc:
        lines = [line.removeprefix("plan: ") for line in str(exc).splitlines()]
        raise PlanError("\n".join(f"{source}: {line}" for line in lines)) from None


register_plan_format(
    SOURCE,
    looks_like_selfmodifying_slm,
    convert_selfmodifying_slm,
    description="a SelfModifyingSLM recommendations file with 'prune'/'merge'/'expand' lists",
)
