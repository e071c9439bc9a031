"""Layer-similarity history (CKA and mean |cross-correlation| per pair of layers, per epoch)
and the augmentation spread of one input's representations.

``LayerSimilarityHistory`` keeps, for each recorded epoch, the full-data linear CKA matrix, the
minibatch (unbiased HSIC) CKA matrix when minibatches are given, and the mean absolute
cross-correlation between the features of every pair of layers (the seed's ``corr_means.json``),
and saves them as strict JSON (NaN as ``null``). Layers may change width between epochs.

>>> import torch
>>> gen = torch.Generator().manual_seed(0)
>>> x = torch.randn(40, 5, generator=gen)
>>> hist = LayerSimilarityHistory()
>>> entry = hist.record(0, {"a": x, "b": 2 * x, "c": torch.randn(40, 3, generator=gen)})
>>> entry["layers"], round(entry["cka"][0][1], 6)
(['a', 'b', 'c'], 1.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from engine.dynamics.errors import DynamicsConfigError, SimilarityHistoryError
from engine.dynamics.similarity import MinibatchCKA, cka_matrix, cross_correlation
from engine.io import atomic_write_json, read_json_model

Matrix = list[list[float | None]]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: int
    layers: list[str]
    widths: list[int]
    samples: int
    cka: Matrix
    minibatch_cka: Matrix | None = None
    mean_abs_correlation: Matrix


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = "engine.layer_similarity/1"
    entries: list[_Entry]


def _clean(m: torch.Tensor) -> Matrix:
    return [[v if math.isfinite(v) else None for v in row] for row in m.tolist()]


def mean_abs_correlation(reps: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(L, L)``: mean |Pearson correlation| over feature pairs of every two layers
    (constant features ignored; NaN if a layer has none that varies)."""
    names = list(reps)
    out = torch.empty(len(names), len(names), dtype=torch.float64)
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            corr = cross_correlation(reps[a], reps[names[j]]).abs()
            out[i, j] = out[j, i] = corr.nanmean()
    return out


class LayerSimilarityHistory:
    """Per-epoch similarity between tracked layers; ``save``/``load`` JSON."""

    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        self.entries: list[dict[str, Any]] = list(entries or [])

    def record(
        self,
        epoch: int,
        representations: dict[str, torch.Tensor],
        minibatches: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, Any]:
        """Compute and append one epoch's entry (also returned)."""
        if len(representations) < 1:
            raise DynamicsConfigError("record() needs at least one layer's representations")
        names = list(representations)
        mb = None
        if minibatches:
            acc = MinibatchCKA(names)
            for batch in minibatches:
                acc.update(batch)
            mb = _clean(acc.compute())
        entry = {
            "epoch": int(epoch),
            "layers": names,
            "widths": [int(r.reshape(r.shape[0], -1).shape[1]) for r in representations.values()],
            "samples": int(next(iter(representations.values())).shape[0]),
            "cka": _clean(cka_matrix(representations)),
            "minibatch_cka": mb,
            "mean_abs_correlation": _clean(mean_abs_correlation(representations)),
        }
        self.entries.append(entry)
        return entry

    def series(self, key: str, a: str, b: str) -> tuple[list[int], list[float]]:
        """``(epochs, values)`` of ``key`` (``"cka"``…) between layers ``a`` and ``b``."""
        epochs, values = [], []
        for e in self.entries:
            if a in e["layers"] and b in e["layers"] and e.get(key) is not None:
                v = e[key][e["layers"].index(a)][e["layers"].index(b)]
                epochs.append(e["epoch"])
                values.append(float("nan") if v is None else v)
        return epochs, values

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(
            path, {"format": "engine.layer_similarity/1", "entries": self.entries}
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LayerSimilarityHistory:
        data = read_json_model(path, _File, SimilarityHistoryError)
        for i, e in enumerate(data.entries):
            size = len(e.layers)
            for key in ("cka", "mean_abs_correlation", "minibatch_cka"):
                m = getattr(e, key)
                if m is not None and (len(m) != size or any(len(r) != size for r in m)):
                    raise SimilarityHistoryError(
                        f"{path}: entries[{i}].{key} must be {size}×{size} (one row per layer)"
                    )
        return cls([e.model_dump() for e in data.entries])


def augmentation_spread(
    capture: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    sample: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor],
    copies: int = 32,
) -> dict[str, dict[str, Any]]:
    """How the representations of ``copies`` augmented versions of one input spread, per layer.

    ``capture`` maps a batch to ``{layer: (batch, features)}`` (e.g. ``functools.partial(
    capture_outputs, model, layers=[...])``); ``augment`` maps one input to one augmented copy.
    Per layer: ``feature_variance`` (per feature, over copies), ``mean_variance``,
    ``relative_spread`` (total variance / mean squared norm: 0 means invariant), and
    ``mean_distance_to_centroid``.

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> cap = lambda b: {"same": b * 0 + 1.0, "noisy": b}
    >>> out = augmentation_spread(cap, torch.zeros(3), lambda x: x + torch.randn(3, generator=gen))
    >>> out["same"]["relative_spread"], out["noisy"]["relative_spread"] > 0.5
    (0.0, True)
    """
    if copies < 2:
        raise DynamicsConfigError(f"copies must be ≥ 2, got {copies}")
    batch = torch.stack([augment(sample) for _ in range(copies)])
    out = {}
    for layer, reps in capture(batch).items():
        reps = reps.reshape(reps.shape[0], -1).double()
        var = reps.var(0, correction=0)
        centred = reps - reps.mean(0)
        power = reps.pow(2).sum(1).mean()
        out[layer] = {
            "feature_variance": var.tolist(),
            "mean_variance": float(var.mean()),
            "relative_spread": float(var.sum() / power) if float(power) > 0 else float("nan"),
            "mean_distance_to_centroid": float(torch.linalg.vector_norm(centred, dim=1).mean()),
            "representations": reps.float(),
        }
    return out
