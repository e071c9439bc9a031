"""Every rank's statistics merged exactly, once per decision (``NeuronEngine.snapshot``).

1. A header of digests (layout, neuron IDs, settings, structure of the statistics, length)
   is gathered: a rank tracking another model, or one that missed a surgery (its neuron IDs
   differ), raises :class:`~engine.errors.RankMismatchError` on every rank, naming it.
2. One ``all_gather`` of every layer's statistics packed into a single float64 vector
   (``engine.distributed.pack``); no collective per layer and none per training step.
3. Every rank merges the vectors in rank order with the stats package's exact Chan merge
   (``LayerSnapshot.merge``), on the CPU: the result is the same bits on every rank and equals
   one process that saw every rank's samples, up to float64 rounding.

Without a process group (or with ``process_group=False``) the snapshot is returned as it is.

>>> import torch
>>> from engine.stats import Moments
>>> from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
>>> snap = StatsSnapshot({"fc": LayerSnapshot("fc", "Linear", [0],
...                                           Moments.from_samples(torch.rand(3, 1)))})
>>> gather_snapshot(None, snap) is snap  # one process: nothing to merge
True
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import torch

from engine.distributed.group import RankGroup, check_same, digest_words, rank_group
from engine.distributed.pack import pack, unpack
from engine.stats.snapshot import StatsSnapshot

__all__ = ["gather_snapshot", "merge_rows", "snapshot_header"]

_HEADER = [
    ("layout", slice(0, 2), "another tracked layout ({detail}): a different model, or a rank "
     "that missed a surgery; the statistics cannot be merged and nothing was changed"),
    ("neuron_ids", slice(2, 4), "other neuron IDs (a rank that joined late or missed a "
     "surgery); the statistics cannot be merged and nothing was changed"),
    ("settings", slice(4, 6), "other tracking settings (firing threshold, saturation "
     "tolerance, activation bounds or correlation per layer); nothing was changed"),
    ("structure", slice(6, 9), "statistics of another shape (a growth signal or co-moments "
     "present on one rank only); nothing was changed"),
]  # fmt: skip


def snapshot_header(snapshot: StatsSnapshot, structure: str, length: int) -> torch.Tensor:
    """The int64 digest row compared before the statistics are gathered."""
    ids = {name: layer.neuron_ids for name, layer in snapshot.layers.items()}
    settings = {
        "firing_threshold": snapshot.firing_threshold,
        "saturation_tolerance": snapshot.saturation_tolerance,
        "bounds": {n: layer.bounds for n, layer in snapshot.layers.items()},
        "correlation": {n: layer.comoments is not None for n, layer in snapshot.layers.items()},
    }
    words = [
        *digest_words(json.dumps(snapshot.layout)),
        *digest_words(json.dumps(ids)),
        *digest_words(json.dumps(settings, default=repr)),
        *digest_words(structure),
        length,
    ]
    return torch.tensor(words, dtype=torch.int64)


def merge_rows(local: StatsSnapshot, rows: torch.Tensor) -> StatsSnapshot:
    """Rank 0's statistics merged with rank 1's, then rank 2's, …: ``rows`` is the gathered
    ``(world, len)`` matrix of :func:`~engine.distributed.pack.pack` vectors. The result keeps
    ``local``'s metadata and creation time."""
    merged = unpack(local, rows[0])
    layers = dict(merged.layers)
    for r in range(1, rows.shape[0]):
        other = unpack(local, rows[r])
        layers = {name: layer.merge(other.layers[name]) for name, layer in layers.items()}
    metadata = {**local.metadata, "ranks": int(rows.shape[0])}
    return replace(local, layers=layers, metadata=metadata)


def gather_snapshot(setting: Any, snapshot: StatsSnapshot) -> StatsSnapshot:
    """``snapshot`` merged over every rank of the group ``setting`` names (see the module
    docstring); ``snapshot`` itself without a group. A collective: every rank must call it."""
    ranks = rank_group(setting)
    if ranks is None:
        return snapshot
    return merge_over(ranks, snapshot)


def merge_over(ranks: RankGroup, snapshot: StatsSnapshot) -> StatsSnapshot:
    """:func:`gather_snapshot` over ``ranks``: the header check, then the one statistics
    gather and the rank-order merge."""
    flat, structure = pack(snapshot)
    header = ranks.gather(snapshot_header(snapshot, structure, flat.numel()))
    layout = ", ".join(f"{n}: {u}" for n, u in snapshot.layout[:6])
    parts = [
        (w, c, m.format(detail=f"here, on rank {ranks.rank}: {layout}")) for w, c, m in _HEADER
    ]
    check_same(header, parts)
    return merge_rows(snapshot, ranks.gather(flat))
