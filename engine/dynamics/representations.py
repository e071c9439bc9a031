"""A compact on-disk store of a fixed probe set's representations, one file per epoch.

``RepresentationStore(directory)`` writes ``epoch_00003.safetensors`` (one ``(samples,
features)`` float32 tensor per layer, written once per epoch, never per batch) and keeps
``representations.json`` (probe sample IDs, epochs, each layer's width per epoch) up to date;
both are written atomically. A layer may change width between epochs (surgery): each epoch keeps
its own width, and neighbour analyses work on each epoch's own representation.

>>> import tempfile, torch
>>> store = RepresentationStore(tempfile.mkdtemp(), sample_ids=[10, 11, 12])
>>> store.record(0, {"fc1": torch.zeros(3, 4)})
>>> store.record(1, {"fc1": torch.ones(3, 2)})  # narrower after surgery
>>> store.epochs, store.widths("fc1"), store.load(1, "fc1").shape
([0, 1], {0: 4, 1: 2}, torch.Size([3, 2]))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save

from engine.dynamics.errors import (
    DynamicsConfigError,
    RepresentationShapeError,
    RepresentationStoreError,
)
from engine.dynamics.neighbours import distance_matrix, knn_sets
from engine.io import atomic_write_bytes, atomic_write_json, read_json_model

INDEX = "representations.json"


class _Index(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "engine.representations/1"
    sample_ids: list[int]
    epochs: dict[str, dict[str, list[int]]] = {}  # epoch → layer → shape


class RepresentationStore:
    """Representations of the probe samples ``sample_ids`` (in that order), per epoch."""

    def __init__(self, directory: str | os.PathLike[str], sample_ids: list[int] | None = None):
        self.directory = Path(directory)
        index_path = self.directory / INDEX
        if index_path.exists():
            self._index = read_json_model(index_path, _Index, RepresentationStoreError)
            if sample_ids is not None and list(sample_ids) != self._index.sample_ids:
                raise RepresentationStoreError(
                    f"{index_path}: stores sample IDs {self._index.sample_ids[:8]}…, "
                    f"not the given {list(sample_ids)[:8]}…"
                )
        elif sample_ids is None:
            raise RepresentationStoreError(f"{index_path}: no store here and no sample_ids given")
        else:
            ids = [int(i) for i in sample_ids]
            if len(set(ids)) != len(ids):
                raise DynamicsConfigError(f"sample_ids contain duplicates: {ids[:12]}")
            self._index = _Index(sample_ids=ids)

    @property
    def sample_ids(self) -> list[int]:
        return list(self._index.sample_ids)

    @property
    def epochs(self) -> list[int]:
        return sorted(int(e) for e in self._index.epochs)

    def layers(self, epoch: int) -> list[str]:
        return list(self._entry(epoch))

    def widths(self, layer: str) -> dict[int, int]:
        """Feature count of ``layer`` at every recorded epoch that has it."""
        return {
            e: int(np.prod(self._index.epochs[str(e)][layer][1:]))
            for e in self.epochs
            if layer in self._index.epochs[str(e)]
        }

    def _entry(self, epoch: int) -> dict[str, list[int]]:
        try:
            return self._index.epochs[str(int(epoch))]
        except KeyError:
            raise RepresentationStoreError(
                f"{self.directory}: no representations for epoch {epoch}; recorded: {self.epochs}"
            ) from None

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch_{int(epoch):05d}.safetensors"

    def record(self, epoch: int, representations: dict[str, torch.Tensor]) -> None:
        """Write one epoch's ``{layer: (samples, …)}`` representations (replaces that epoch)."""
        n = len(self._index.sample_ids)
        tensors = {}
        for layer, rep in representations.items():
            if not isinstance(rep, torch.Tensor) or rep.dim() < 1 or rep.shape[0] != n:
                shape = tuple(rep.shape) if isinstance(rep, torch.Tensor) else type(rep).__name__
                raise RepresentationShapeError(
                    f"layer {layer!r}, epoch {epoch}: expected {n} probe samples first, got {shape}"
                )
            tensors[layer] = rep.detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(self.path(epoch), save(tensors))
        self._index.epochs[str(int(epoch))] = {k: list(v.shape) for k, v in tensors.items()}
        atomic_write_json(self.directory / INDEX, self._index.model_dump())

    def load(self, epoch: int, layer: str) -> torch.Tensor:
        """``(samples, features)`` representation of ``layer`` at ``epoch``."""
        if layer not in self._entry(epoch):
            raise RepresentationStoreError(
                f"{self.path(epoch)}: no layer {layer!r}; stored: {self.layers(epoch)}"
            )
        try:
            rep = load_file(self.path(epoch))[layer]
        except (OSError, KeyError) as exc:
            raise RepresentationStoreError(f"{self.path(epoch)}: cannot read ({exc})") from None
        return rep.reshape(rep.shape[0], -1)

    def neighbours(self, layer: str, k: int) -> dict[int, np.ndarray]:
        """``{epoch: (samples, k) neighbour indices}`` for every epoch that has ``layer``."""
        return {
            e: knn_sets(self.load(e, layer), k, where=f"layer {layer!r}, epoch {e}")
            for e in self.widths(layer)
        }

    def distances(self, epoch: int, layer: str, metric: str = "euclidean") -> np.ndarray:
        """Sample × sample distance matrix at ``epoch``."""
        return distance_matrix(self.load(epoch, layer), metric)
