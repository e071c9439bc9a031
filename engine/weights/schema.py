"""The JSON index of a weight-tracking run (pydantic), with compact neuron-ID runs.

Every snapshot has one :class:`SnapshotEntry`: when it was taken (sequence number, epoch, step,
time), why (``trigger``), the training loss and custom metadata, its safetensors file, which
tensors are parameters (the rest are buffers), the neuron IDs of every tracked layer, and, per
tensor, which axes carry units of a tracked layer (:class:`UnitAxis`). IDs are stored as
``[start, length]`` runs: a layer of 1024 untouched units costs one pair.

>>> runs = encode_id_runs([0, 1, 2, 5, 6, 9])
>>> runs, decode_id_runs(runs).tolist()
([[0, 3], [5, 2], [9, 1]], [0, 1, 2, 5, 6, 9])
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, field_validator

FORMAT = "neuron-engine.weights"
VERSION = 1
Trigger = Literal["manual", "step", "epoch", "before_surgery", "after_surgery"]


def encode_id_runs(ids: Any) -> list[list[int]]:
    """``[[start, length], …]`` for a sequence of integer IDs (order kept)."""
    a = np.asarray(ids, dtype=np.int64).reshape(-1)
    if a.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(a) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [a.size])))
    return np.stack([a[starts], lengths], axis=1).tolist()


def decode_id_runs(runs: list[list[int]]) -> np.ndarray:
    """The IDs encoded by :func:`encode_id_runs`, as an int64 array."""
    if not runs:
        return np.zeros(0, dtype=np.int64)
    r = np.asarray(runs, dtype=np.int64)
    lengths = r[:, 1]
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(r[:, 0], lengths) + offsets


class UnitAxis(BaseModel):
    """Axis ``dim`` of a tensor holds the units of tracked layer ``layer``, each owning
    ``columns_per_unit`` consecutive entries (H·W for a Linear after ``flatten``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dim: NonNegativeInt
    layer: str
    columns_per_unit: PositiveInt = 1


class SnapshotEntry(BaseModel):
    """One snapshot in the run index (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    seq: NonNegativeInt = Field(description="capture number in this run, unique, never reused")
    name: str
    file: str = Field(description="safetensors file name inside the run's snapshots folder")
    time: float = Field(description="UNIX time of the capture")
    epoch: int | None = None
    step: int | None = None
    loss: float | None = None
    trigger: Trigger = "manual"
    metadata: dict[str, Any] = Field(default_factory=dict)
    dtype: str = Field(description="storage dtype of floating tensors, e.g. 'float32'")
    parameters: list[str] = Field(description="tensor names that are parameters (rest: buffers)")
    shapes: dict[str, list[int]] = Field(default_factory=dict)
    neuron_ids: dict[str, list[list[int]]] = Field(
        default_factory=dict, description="tracked layer → neuron IDs as [start, length] runs"
    )
    axes: dict[str, list[UnitAxis]] = Field(default_factory=dict)
    pinned: bool = Field(default=False, description="kept by retention (surgery snapshots)")

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.startswith(".") or not v.endswith(".safetensors"):
            raise ValueError(f"expected a plain '*.safetensors' file name, got {v!r}")
        return v

    def ids(self, layer: str) -> np.ndarray:
        return decode_id_runs(self.neuron_ids[layer])

    @property
    def widths(self) -> dict[str, int]:
        return {k: int(sum(n for _, n in runs)) for k, runs in self.neuron_ids.items()}


class RunIndex(BaseModel):
    """``index.json`` of a run folder."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["neuron-engine.weights"] = FORMAT
    version: Literal[1] = VERSION
    snapshots: list[SnapshotEntry] = Field(default_factory=list)
    lineage: dict[int, dict[str, Any]] = Field(
        default_factory=dict, description="neuron ID → its fate (removed, merged, grown)"
    )


def chronological(entries: list[SnapshotEntry]) -> list[SnapshotEntry]:
    """Entries in training order: by epoch, then step, then capture number. A snapshot without
    an epoch (or step) takes the one of the snapshot captured before it, so per-epoch and
    per-step snapshots interleave correctly; file names play no part.

    >>> e = [SnapshotEntry(seq=i, name=n, file="x.safetensors", time=0, dtype="float32",
    ...                    parameters=[], epoch=ep, step=st)
    ...      for i, (n, ep, st) in enumerate([("b", 1, 50), ("a", None, 10), ("c", 0, 90)])]
    >>> [x.name for x in chronological(e)]
    ['c', 'a', 'b']
    """
    keys: dict[int, tuple[int, int, int]] = {}
    epoch = step = -1
    for e in sorted(entries, key=lambda x: x.seq):
        epoch = epoch if e.epoch is None else e.epoch
        step = step if e.step is None else e.step
        keys[e.seq] = (epoch, step, e.seq)
    return sorted(entries, key=lambda x: keys[x.seq])
