"""Representation dynamics of a fixed probe set, reached through a model or a ``NeuronEngine``.

``RepresentationDynamics`` captures the chosen layers' outputs for the probe inputs at chosen
epochs (forward hooks owned by a ``HookSet``, removed in ``finally``), stores them (one
safetensors file per epoch), records layer similarity (CKA, cross-correlation) to
``layer_similarity.json``, and writes the training fingerprint, neighbour sets and heatmaps.
Layers are resolved again at every capture, so surgery between epochs is followed.

>>> import tempfile, torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> probe = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
>>> dyn = RepresentationDynamics(model, probe, layers=["1", "2"], directory=tempfile.mkdtemp())
>>> for epoch in range(3):
...     _ = dyn.record(epoch)
>>> epochs, overlap = dyn.fingerprint("1", k=3)
>>> epochs, overlap.shape
([1, 2], (2, 12))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.dynamics.capture import Transform, capture_outputs, engine_capture_points
from engine.dynamics.errors import DynamicsConfigError
from engine.dynamics.layer_similarity import LayerSimilarityHistory
from engine.dynamics.neighbours import epoch_similarity, overlap_over_time
from engine.dynamics.representations import RepresentationStore
from engine.dynamics.similarity import feature_correlation, sample_correlation
from engine.io import atomic_write_json


class RepresentationDynamics:
    """Probe-set representations over training.

    Args:
        source: an ``nn.Module`` (then ``layers`` names its modules) or a ``NeuronEngine``
            (default layers: every tracked layer at its observation point).
        probe_inputs: the fixed probe batch (a tensor, or a tuple of positional arguments).
        sample_ids: one ID per probe sample (default ``0..n-1``).
        epochs: record only these epochs (default: every ``every``-th epoch).
        directory: where the store, JSON and figures go (default ``outputs/dynamics``).
        minibatch_size: also record minibatch (unbiased HSIC) CKA over probe minibatches.
    """

    def __init__(
        self,
        source: Any,
        probe_inputs: Any,
        *,
        layers: Sequence[str] | None = None,
        sample_ids: Sequence[int] | None = None,
        epochs: Iterable[int] | None = None,
        every: int = 1,
        directory: str | os.PathLike[str] = "outputs/dynamics",
        batch_size: int | None = None,
        minibatch_size: int | None = None,
    ) -> None:
        self.engine = None if isinstance(source, nn.Module) else source
        self.model: nn.Module = source if self.engine is None else source.model
        if not isinstance(self.model, nn.Module):
            raise DynamicsConfigError(f"source must be an nn.Module or a NeuronEngine: {source!r}")
        self.layers = list(layers) if layers is not None else None
        if self.engine is None and not self.layers:
            raise DynamicsConfigError("with a plain nn.Module, name the layers to capture")
        self.probe_inputs = probe_inputs
        first = probe_inputs[0] if isinstance(probe_inputs, tuple) else probe_inputs
        n = int(first.shape[0])
        ids = list(range(n)) if sample_ids is None else [int(i) for i in sample_ids]
        if len(ids) != n:
            raise DynamicsConfigError(f"{len(ids)} sample_ids for {n} probe samples")
        if every < 1:
            raise DynamicsConfigError(f"every must be ≥ 1, got {every}")
        if minibatch_size is not None and not 4 <= minibatch_size <= n:
            raise DynamicsConfigError(f"minibatch_size must be in [4, {n}], got {minibatch_size}")
        self.epochs = None if epochs is None else {int(e) for e in epochs}
        self.every, self.batch_size, self.minibatch_size = every, batch_size, minibatch_size
        self.directory = Path(directory)
        self.store = RepresentationStore(self.directory / "representations", ids)
        self.similarity = LayerSimilarityHistory()

    def due(self, epoch: int) -> bool:
        return epoch in self.epochs if self.epochs is not None else epoch % self.every == 0

    def _points(self) -> Sequence[str] | dict[str, tuple[str, Transform]]:
        if self.engine is None:
            return self.layers or []
        points = engine_capture_points(self.engine)
        if self.layers is not None:
            return (
                {name: points[name] for name in self.layers}
                if all(name in points for name in self.layers)
                else self.layers
            )
        return points

    def capture(self) -> dict[str, torch.Tensor]:
        """The probe set's representations now: ``{layer: (samples, features)}``."""
        return capture_outputs(
            self.model, self.probe_inputs, self._points(), batch_size=self.batch_size
        )

    def record(self, epoch: int, *, force: bool = False) -> bool:
        """Capture, store and analyse the probe set if ``epoch`` is due (or ``force``)."""
        if not (force or self.due(epoch)):
            return False
        reps = self.capture()
        self.store.record(epoch, reps)
        minibatches = None
        if self.minibatch_size:
            n, size = self.store_size, self.minibatch_size
            minibatches = [
                {k: v[i : i + size] for k, v in reps.items()} for i in range(0, n - size + 1, size)
            ]
        self.similarity.record(epoch, reps, minibatches)
        self.similarity.save(self.directory / "layer_similarity.json")
        return True

    @property
    def store_size(self) -> int:
        return len(self.store.sample_ids)

    def fingerprint(
        self, layer: str, k: int, reference: str = "previous"
    ) -> tuple[list[int], np.ndarray]:
        """``(epochs, (epochs, samples) overlap)``: kNN overlap of each sample over training."""
        return overlap_over_time(self.store.neighbours(layer, k), reference)

    def write_report(self, layer: str, k: int = 10) -> list[Path]:
        """Neighbour sets (JSON) and figures for ``layer``: fingerprint, epoch × epoch overlap,
        distance, feature and sample correlation heatmaps at the last epoch, CKA between
        layers at the last epoch."""
        from engine.dynamics.plots import plot_fingerprint, plot_heatmap  # matplotlib on use

        out, last = self.directory, self.store.epochs[-1]
        sets = self.store.neighbours(layer, k)
        payload = {
            "layer": layer,
            "k": k,
            "sample_ids": self.store.sample_ids,
            "neighbours": {str(e): s.tolist() for e, s in sets.items()},
        }
        paths = [atomic_write_json(out / f"neighbours_{layer}.json", payload)]
        epochs, overlap = overlap_over_time(sets)
        paths.append(plot_fingerprint(epochs, overlap, out / f"fingerprint_{layer}.png"))
        epochs, sim = epoch_similarity(sets)
        paths.append(
            plot_heatmap(
                sim,
                out / f"epoch_overlap_{layer}.png",
                vmin=0,
                vmax=1,
                labels=[str(e) for e in epochs],
                title=f"{layer}: mean kNN overlap between epochs",
            )
        )
        rep = self.store.load(last, layer)
        paths.append(
            plot_heatmap(
                self.store.distances(last, layer),
                out / f"distances_{layer}.png",
                title=f"{layer}: sample distances, epoch {last}",
            )
        )
        for name, fn in (("features", feature_correlation), ("samples", sample_correlation)):
            paths.append(
                plot_heatmap(
                    fn(rep).numpy(),
                    out / f"{name}_correlation_{layer}.png",
                    vmin=-1,
                    vmax=1,
                    cmap="coolwarm",
                    title=f"{layer}: {name} correlation, epoch {last}",
                )
            )
        entry = self.similarity.entries[-1] if self.similarity.entries else None
        if entry is not None:
            cka = np.array([[np.nan if v is None else v for v in r] for r in entry["cka"]])
            paths.append(
                plot_heatmap(
                    cka,
                    out / "cka.png",
                    labels=entry["layers"],
                    vmin=0,
                    vmax=1,
                    title=f"linear CKA, epoch {entry['epoch']}",
                )
            )
        return paths
