"""One weight snapshot: a model's tensors at one moment, with its index entry.

A snapshot is either in memory (just captured) or backed by a safetensors file, read lazily:
``tensor(name)`` reads one tensor, ``load()`` reads them all, so a run of hundreds of snapshots
never has to sit in RAM. Nothing is unpickled.

>>> import torch.nn as nn
>>> snap = capture_weights(nn.Linear(3, 2), name="init", epoch=0)
>>> snap.names, snap.tensor("weight").shape, snap.entry.parameters
(['weight', 'bias'], torch.Size([2, 3]), ['weight', 'bias'])
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from torch import nn

from engine.weights.errors import TensorNotFoundError, WeightSnapshotError
from engine.weights.jsonable import to_jsonable
from engine.weights.schema import SnapshotEntry, Trigger, UnitAxis, encode_id_runs


@dataclass(eq=False)
class WeightSnapshot:
    """A model's ``state_dict`` tensors at one moment (see the module docstring)."""

    entry: SnapshotEntry
    path: Path | None = None
    _tensors: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _ids: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # --- metadata -------------------------------------------------------------------------
    seq = property(lambda self: self.entry.seq)
    name = property(lambda self: self.entry.name)
    epoch = property(lambda self: self.entry.epoch)
    step = property(lambda self: self.entry.step)
    time = property(lambda self: self.entry.time)
    loss = property(lambda self: self.entry.loss)
    metadata = property(lambda self: self.entry.metadata)

    @property
    def names(self) -> list[str]:
        return list(self.entry.shapes)

    def ids(self, layer: str) -> np.ndarray:
        """Neuron IDs of tracked layer ``layer`` at this snapshot (int64, read-only)."""
        if layer not in self._ids:
            ids = self.entry.ids(layer)
            ids.flags.writeable = False
            self._ids[layer] = ids
        return self._ids[layer]

    @property
    def neuron_ids(self) -> dict[str, list[int]]:
        return {layer: self.entry.ids(layer).tolist() for layer in self.entry.neuron_ids}

    # --- tensors --------------------------------------------------------------------------
    def _check(self, name: str) -> None:
        if name not in self.entry.shapes:
            shown = ", ".join(list(self.entry.shapes)[:12])
            raise TensorNotFoundError(
                f"snapshot {self.entry.name!r} (#{self.entry.seq}) has no tensor {name!r}; "
                f"it holds: {shown}"
            )

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor (read from disk on demand unless the snapshot is in memory)."""
        self._check(name)
        if self._tensors is not None:
            return self._tensors[name]
        try:
            with safe_open(str(self._file()), framework="pt") as fh:
                return fh.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise WeightSnapshotError(f"{self.path}: cannot read tensor {name!r} ({exc})") from None

    def load(self) -> dict[str, torch.Tensor]:
        """Every tensor, by name (one read of the whole file)."""
        if self._tensors is not None:
            return dict(self._tensors)
        path = self._file()
        try:
            tensors = st_load(path.read_bytes())
        except (SafetensorError, OSError) as exc:
            raise WeightSnapshotError(f"{path}: not a readable safetensors file ({exc})") from None
        missing = [n for n in self.entry.shapes if n not in tensors]
        if missing:
            raise WeightSnapshotError(
                f"{path}: tensors {missing[:6]} listed in the index are missing"
            )
        return tensors

    def cached(self) -> WeightSnapshot:
        """This snapshot with all its tensors held in memory (reads the file once)."""
        if self._tensors is not None:
            return self
        return WeightSnapshot(self.entry, self.path, self.load(), self._ids)

    def _file(self) -> Path:
        if self.path is None:
            raise WeightSnapshotError(f"snapshot {self.entry.name!r} has neither tensors nor file")
        if not self.path.is_file():
            raise WeightSnapshotError(f"{self.path}: snapshot file is missing")
        return self.path

    def __repr__(self) -> str:
        where = "memory" if self._tensors is not None else str(self.path)
        e = self.entry
        return f"WeightSnapshot(#{e.seq} {e.name!r}, epoch={e.epoch}, step={e.step}, {where})"


def copy_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of ``model.state_dict()``'s tensors; floating tensors are cast to
    ``dtype`` when given (e.g. ``torch.float16`` halves the file size)."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=False).items():
            if not isinstance(t, torch.Tensor):
                continue
            dt = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
            out[name] = t.detach().to(device="cpu", dtype=dt, copy=True).contiguous()
    return out


def capture_weights(
    model: nn.Module,
    *,
    name: str | None = None,
    epoch: int | None = None,
    step: int | None = None,
    loss: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    trigger: Trigger = "manual",
    dtype: torch.dtype | None = None,
    neuron_ids: Mapping[str, Any] | None = None,
    axes: Mapping[str, list[UnitAxis]] | None = None,
    seq: int = 0,
) -> WeightSnapshot:
    """An in-memory snapshot of ``model``'s parameters and buffers.

    ``neuron_ids`` (tracked layer → IDs) and ``axes`` (tensor name → its unit axes) let
    comparisons align units across surgery; without them only equal shapes compare.
    """
    tensors = copy_state(model, dtype)
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
    loss_value = to_jsonable(loss)
    entry = SnapshotEntry(
        seq=seq,
        name=name or _default_name(epoch, step, seq),
        file="pending.safetensors",
        time=time.time(),
        epoch=None if epoch is None else int(epoch),
        step=None if step is None else int(step),
        loss=loss_value if isinstance(loss_value, (int, float)) else None,
        trigger=trigger,
        metadata=to_jsonable(dict(metadata or {})),
        dtype=str(floating[0]).removeprefix("torch.") if floating else "none",
        parameters=[n for n in tensors if n in params],
        shapes={n: list(t.shape) for n, t in tensors.items()},
        neuron_ids={k: encode_id_runs(v) for k, v in (neuron_ids or {}).items()},
        axes={k: list(v) for k, v in (axes or {}).items() if k in tensors},
    )
    return WeightSnapshot(entry, None, tensors)


def _default_name(epoch: int | None, step: int | None, seq: int) -> str:
    parts = [
        f"epoch{epoch}" if epoch is not None else "",
        f"step{step}" if step is not None else "",
    ]
    return "-".join(p for p in parts if p) or f"snapshot{seq}"
