"""Panel data from a probe set's stored representations: the epoch × epoch neighbour-overlap
heatmap, each sample's nearest neighbours at every epoch, and per-sample confidence.

Neighbour sets are the ``k`` nearest other probe samples (Euclidean) in a layer's output at
each recorded epoch (``engine.dynamics.knn_sets``); the heatmap is their mean overlap between
every two epochs (``epoch_similarity``). Confidence is the softmax entropy of a layer's
outputs (by default the last stored layer, the logits of a classifier): 0 is certain,
``log(classes)`` is a uniform guess. The probe's inputs and labels come from
``probe.safetensors`` (:func:`save_probe`); inputs of shape ``(N, H, W)`` or ``(N, C, H, W)``
are shown as images.

>>> import tempfile, pathlib, torch
>>> from engine.dynamics import RepresentationStore
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> store = RepresentationStore(run / "representations", sample_ids=list(range(6)))
>>> for e in range(3):
...     store.record(e, {"out": torch.randn(6, 3, generator=torch.Generator().manual_seed(e))})
>>> data = representation_panels(store, k=2)
>>> data["layers"], data["k"], len(data["per_layer"]["out"]["overlap"]), data["confidence_layer"]
(['out'], 2, 3, 'out')
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.dashboard.errors import RunFileError
from engine.dashboard.training import clean
from engine.dynamics.neighbours import epoch_similarity, knn_sets, overlap_over_time
from engine.dynamics.representations import RepresentationStore

PROBE_FILE = "probe.safetensors"
MAX_IMAGE_PIXELS = 64 * 64  # larger images are not embedded


def save_probe(
    directory: str | os.PathLike[str], inputs: torch.Tensor, labels: torch.Tensor | None = None
) -> Path:
    """Write the probe inputs (and labels) beside a ``RepresentationDynamics`` store, so the
    dashboard can show each sample (as an image when inputs are ``(N, H, W)`` or
    ``(N, C, H, W)``) and its class. ``directory`` is the store's ``directory``.

    Example::

        dyn = RepresentationDynamics(engine, x_probe, directory=run / "dynamics")
        save_probe(run / "dynamics", x_probe, y_probe)
    """
    from safetensors.torch import save

    from engine.io import atomic_write_bytes

    tensors = {"inputs": inputs.detach().to("cpu", torch.float32).contiguous()}
    if labels is not None:
        tensors["labels"] = labels.detach().to("cpu", torch.int64).reshape(-1).contiguous()
    return atomic_write_bytes(Path(directory) / PROBE_FILE, save(tensors))


def _load_probe(path: Path, n: int) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RunFileError(f"{path}: not a readable safetensors file ({exc})") from None
    inputs = tensors.get("inputs")
    if inputs is None or inputs.shape[0] < n:
        shape = None if inputs is None else list(inputs.shape)
        raise RunFileError(f"{path}: expected a tensor 'inputs' of ≥ {n} samples, got {shape}")
    return tensors


def _images(inputs: torch.Tensor) -> dict[str, Any] | None:
    """uint8 images (each scaled to its own range) as base64, or None when not images."""
    x = inputs.to(torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[2] * x.shape[3] > MAX_IMAGE_PIXELS:
        return None
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - lo) / (hi - lo).clamp_min(1e-12) * 255).round().to(torch.uint8)
    channels, height, width = (int(v) for v in x.shape[1:])
    raw = scaled.reshape(len(x), channels, height, width).permute(0, 2, 3, 1).contiguous()
    return {
        "channels": channels, "height": height, "width": width,
        "data": base64.b64encode(raw.numpy().tobytes()).decode("ascii"),
    }  # fmt: skip


def _entropy(logits: torch.Tensor) -> np.ndarray:
    logp = torch.log_softmax(logits.to(torch.float64), dim=1)
    return (-(logp.exp() * logp).sum(1)).numpy()


def representation_panels(
    store: RepresentationStore,
    *,
    k: int = 10,
    max_samples: int = 200,
    confidence_layer: str | None = None,
    probe: Path | None = None,
) -> dict[str, Any]:
    """Per stored layer: epochs, ``neighbours[epoch]`` (samples × k indices into the shown
    samples), the epoch × epoch ``overlap`` and the per-sample ``fingerprint`` (overlap with
    the previous epoch); ``confidence[epoch]`` per sample; sample IDs, labels and images.
    Only the first ``max_samples`` probe samples are shown (neighbours among them)."""
    epochs = store.epochs
    if not epochs:
        raise RunFileError(f"{store.directory}: the representation store holds no epoch")
    ids = store.sample_ids
    n = min(len(ids), max_samples)
    if n < 2:
        raise RunFileError(f"{store.directory}: {n} probe sample(s); neighbours need ≥ 2")
    k = max(1, min(k, n - 1))
    layers = list(dict.fromkeys(n_ for e in reversed(epochs) for n_ in store.layers(e)))
    per_layer = {}
    for layer in layers:
        sets = {
            e: knn_sets(store.load(e, layer)[:n], k, where=f"layer {layer!r}, epoch {e}")
            for e in store.widths(layer)
        }
        shown, overlap = epoch_similarity(sets)
        later, fingerprint = overlap_over_time(sets)
        per_layer[layer] = {
            "epochs": shown,
            "widths": [store.widths(layer)[e] for e in shown],
            "overlap": overlap,
            "fingerprint_epochs": later,
            "fingerprint": fingerprint,
            "neighbours": {str(e): s.astype(np.int64) for e, s in sets.items()},
        }
    conf_layer = confidence_layer or store.layers(epochs[-1])[-1]
    if conf_layer not in layers:
        raise RunFileError(f"{store.directory}: no layer {conf_layer!r}; stored: {layers}")
    confidence = {str(e): _entropy(store.load(e, conf_layer)[:n]) for e in store.widths(conf_layer)}
    classes = store.widths(conf_layer)[epochs[-1] if epochs[-1] in store.widths(conf_layer)
                                       else max(store.widths(conf_layer))]  # fmt: skip
    out: dict[str, Any] = {
        "layers": layers,
        "k": k,
        "sample_ids": ids[:n],
        "samples_total": len(ids),
        "per_layer": per_layer,
        "confidence_layer": conf_layer,
        "confidence": confidence,
        "max_entropy": math.log(classes) if classes > 1 else None,
        "labels": None,
        "images": None,
    }
    if probe is not None:
        tensors = _load_probe(probe, n)
        out["images"] = _images(tensors["inputs"][:n])
        if "labels" in tensors:
            out["labels"] = tensors["labels"][:n].tolist()
    return clean(out)


def layer_similarity(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per recorded epoch, the layer × layer linear CKA and mean |cross-correlation| matrices
    of ``layer_similarity.json`` (``LayerSimilarityHistory``): the all-pairs grid.

    >>> layer_similarity([{"epoch": 0, "layers": ["a"], "cka": [[1.0]],
    ...                    "mean_abs_correlation": [[0.5]]}])["epochs"]
    [0]
    """
    return clean(
        {
            "epochs": [e["epoch"] for e in entries],
            "layers": [e["layers"] for e in entries],
            "cka": [e["cka"] for e in entries],
            "correlation": [e["mean_abs_correlation"] for e in entries],
        }
    )
