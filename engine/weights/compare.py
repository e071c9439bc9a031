"""Compare two weight snapshots: per tensor, per module, per neuron and in total.

Tensors are matched by name; units by neuron ID (see :mod:`engine.weights.align`), so after
surgery survivors are compared with themselves, and removed, merged and new units are listed
per tracked layer. Integer tensors (BatchNorm's ``num_batches_tracked``) are skipped; buffers
too unless ``include_buffers=True``. Totals cover every compared tensor.

>>> import torch, torch.nn as nn
>>> from engine.weights.weight_snapshot import capture_weights
>>> model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
>>> first = capture_weights(model, step=0)
>>> with torch.no_grad():
...     _ = model[0].weight.add_(1.0)
>>> cmp = compare_snapshots(first, capture_weights(model, step=1))
>>> round(cmp.tensors["0.weight"].l1, 5), round(cmp.total.l1, 5), sorted(cmp.skipped)[0]
(6.0, 6.0, '1.num_batches_tracked')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine.weights.align import align_loaded
from engine.weights.errors import WeightShapeMismatchError
from engine.weights.metrics import ChangeSums, RowSums, change_sums
from engine.weights.schema import SnapshotEntry
from engine.weights.weight_snapshot import WeightSnapshot

Lineage = Mapping[int, Mapping[str, Any]]


@dataclass
class TensorChange:
    """Change of one parameter (or buffer) tensor; metrics are those of :class:`ChangeSums`."""

    name: str
    shape_a: list[int]
    shape_b: list[int]
    is_parameter: bool
    by_ids: bool
    sums: ChangeSums

    module = property(lambda self: self.name.rpartition(".")[0])
    l1 = property(lambda self: self.sums.l1)
    l2 = property(lambda self: self.sums.l2)
    relative = property(lambda self: self.sums.relative)
    cosine_distance = property(lambda self: self.sums.cosine_distance)


@dataclass
class NeuronChange:
    """Per-unit change of one tracked layer over its own rows (weight row or conv filter, bias,
    following norm), for the units alive in both snapshots."""

    layer: str
    ids: np.ndarray
    rows: RowSums
    tensors: list[str]

    l1 = property(lambda self: self.rows.l1)
    l2 = property(lambda self: self.rows.l2)
    relative = property(lambda self: self.rows.relative)
    cosine_distance = property(lambda self: self.rows.cosine_distance)

    def of(self, neuron_id: int) -> dict[str, float]:
        """Metrics of one unit by neuron ID."""
        hit = np.flatnonzero(self.ids == int(neuron_id))
        if hit.size == 0:
            raise KeyError(f"neuron {neuron_id} is not alive in both snapshots of {self.layer!r}")
        i = int(hit[0])
        return {
            "l1": float(self.l1[i]),
            "l2": float(self.l2[i]),
            "relative": float(self.relative[i]),
            "cosine_distance": float(self.cosine_distance[i]),
        }


@dataclass
class UnitChanges:
    """Which units of one tracked layer survived, were removed, merged or added."""

    layer: str
    kept: int
    removed: list[int] = field(default_factory=list)
    merged: dict[int, list[int]] = field(default_factory=dict)
    added: list[int] = field(default_factory=list)
    grown_from: dict[int, int | None] = field(default_factory=dict)

    @property
    def width_a(self) -> int:
        return self.kept + len(self.removed) + sum(len(v) for v in self.merged.values())

    @property
    def width_b(self) -> int:
        return self.kept + len(self.added)


@dataclass
class WeightComparison:
    """Everything :func:`compare_snapshots` found between snapshots ``a`` and ``b``."""

    a: SnapshotEntry
    b: SnapshotEntry
    tensors: dict[str, TensorChange]
    neurons: dict[str, NeuronChange]
    units: dict[str, UnitChanges]
    skipped: dict[str, str]

    @property
    def total(self) -> ChangeSums:
        return sum((t.sums for t in self.tensors.values()), ChangeSums())

    def by_module(self) -> dict[str, ChangeSums]:
        """Sums per module (``fc1.weight`` and ``fc1.bias`` → ``fc1``)."""
        out: dict[str, ChangeSums] = {}
        for t in self.tensors.values():
            out[t.module] = out.get(t.module, ChangeSums()) + t.sums
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON summary (per-neuron vectors left out; NaN/inf as None)."""

        def side(e: SnapshotEntry) -> dict[str, Any]:
            return {"seq": e.seq, "name": e.name, "epoch": e.epoch, "step": e.step}

        return {
            "a": side(self.a),
            "b": side(self.b),
            "total": self.total.to_json(),
            "tensors": {
                n: {"shape_a": t.shape_a, "shape_b": t.shape_b, "by_ids": t.by_ids}
                | t.sums.to_json()
                for n, t in self.tensors.items()
            },
            "units": {
                k: {"kept": u.kept, "removed": u.removed, "added": u.added}
                | {"merged": {str(i): v for i, v in u.merged.items()}}
                for k, u in self.units.items()
            },
            "skipped": dict(self.skipped),
        }


def _survivor(nid: int, lineage: Lineage, live: set[int]) -> int | None:
    """The live unit ``nid`` was (transitively) merged into, or None for a plain removal."""
    for _ in range(64):  # merge chains are short; the bound guards against a corrupt lineage
        fate = lineage.get(nid)
        if not fate or fate.get("event") != "merged" or fate.get("into") is None:
            return None
        nid = int(fate["into"])
        if nid in live:
            return nid
    return None


def unit_changes(a: SnapshotEntry, b: SnapshotEntry, lineage: Lineage | None) -> dict:
    """:class:`UnitChanges` per tracked layer between two snapshot entries."""
    lineage = {int(k): v for k, v in (lineage or {}).items()}
    out: dict[str, UnitChanges] = {}
    for layer in dict.fromkeys([*a.neuron_ids, *b.neuron_ids]):
        ids_a = a.ids(layer) if layer in a.neuron_ids else np.zeros(0, np.int64)
        ids_b = b.ids(layer) if layer in b.neuron_ids else np.zeros(0, np.int64)
        gone = np.setdiff1d(ids_a, ids_b, assume_unique=True).tolist()
        new = np.setdiff1d(ids_b, ids_a, assume_unique=True).tolist()
        live = set(ids_b.tolist()) if gone else set()
        change = UnitChanges(layer, kept=len(ids_a) - len(gone), added=new)
        for nid in gone:
            into = _survivor(nid, lineage, live)
            if into is None:
                change.removed.append(nid)
            else:
                change.merged.setdefault(into, []).append(nid)
        change.grown_from = {n: (lineage.get(n) or {}).get("parent") for n in new}
        out[layer] = change
    return out


def compare_snapshots(
    a: WeightSnapshot,
    b: WeightSnapshot,
    *,
    lineage: Lineage | None = None,
    include_buffers: bool = False,
    on_unaligned: Literal["raise", "skip"] = "raise",
) -> WeightComparison:
    """Compare snapshot ``a`` (earlier) with ``b`` (later).

    ``lineage`` (neuron ID → fate, e.g. ``engine.neurons.lineage`` or a run's
    ``store.lineage``) attributes removed units to the survivors they were merged into. A tensor
    whose shape changed along an axis without neuron IDs raises
    :class:`WeightShapeMismatchError`, or is listed in ``skipped`` with ``on_unaligned="skip"``.
    """
    ta, tb = a.load(), b.load()
    params = set(a.entry.parameters)
    tensors: dict[str, TensorChange] = {}
    rows: dict[str, tuple[np.ndarray, RowSums, list[str]]] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys([*a.entry.shapes, *ta, *b.entry.shapes, *tb]):  # model order
        if name not in ta or name not in tb:
            skipped[name] = "only in snapshot " + ("b" if name in tb else "a")
            continue
        x, y = ta[name], tb[name]
        if not (x.is_floating_point() and y.is_floating_point()):
            skipped[name] = f"not floating point ({x.dtype})"
            continue
        if name not in params and not include_buffers:
            skipped[name] = "buffer (include_buffers=False)"
            continue
        try:
            pair = align_loaded(name, x, y, a, b)
        except WeightShapeMismatchError as exc:
            if on_unaligned == "raise":
                raise
            skipped[name] = str(exc)
            continue
        if pair.row_ids is not None and pair.a.dim() > 0:
            per_row = RowSums.of(pair.a, pair.b)
            sums = per_row.total(pair.a.numel())
            layer = next(x.layer for x in a.entry.axes[name] if x.dim == 0)
            if layer in rows and rows[layer][0].shape == pair.row_ids.shape:
                ids, acc, names = rows[layer]
                rows[layer] = (ids, acc + per_row, [*names, name])
            else:
                rows[layer] = (pair.row_ids, per_row, [name])
        else:
            sums = change_sums(pair.a, pair.b)
        tensors[name] = TensorChange(
            name, list(x.shape), list(y.shape), name in params, pair.by_ids, sums
        )
    neurons = {k: NeuronChange(k, ids, r, names) for k, (ids, r, names) in rows.items()}
    units = unit_changes(a.entry, b.entry, lineage)
    return WeightComparison(a.entry, b.entry, tensors, neurons, units, skipped)


def compare_series(snapshots: Sequence[WeightSnapshot], **kwargs: Any) -> list[WeightComparison]:
    """Each snapshot compared with the one before it (each file read once; at most two
    snapshots in memory at a time). ``kwargs`` go to :func:`compare_snapshots`."""
    out: list[WeightComparison] = []
    previous: WeightSnapshot | None = None
    for snap in snapshots:
        current = snap.cached()
        if previous is not None:
            out.append(compare_snapshots(previous, current, **kwargs))
        previous = current
    return out
