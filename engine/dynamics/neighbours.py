"""Nearest-neighbour structure of a probe set's representations, and how it moves in training.

The training fingerprint of ReprDynamics: for each epoch, each sample's ``k`` nearest
neighbours (``scipy.spatial.cKDTree``, the sample itself excluded); between two epochs, the
fraction of a sample's neighbours that stayed its neighbours. Each epoch's neighbours come from
that epoch's own representation, so a layer whose width changed (surgery) is handled.

>>> import numpy as np
>>> points = np.array([[0.0], [1.0], [3.0], [10.0]])
>>> knn_sets(points, 1).tolist()
[[1], [0], [1], [2]]
>>> moved = np.array([[0.0], [5.0], [3.0], [10.0]])
>>> knn_sets(moved, 1).tolist(), neighbour_overlap(knn_sets(points, 1), knn_sets(moved, 1)).tolist()
([[2], [2], [1], [1]], [0.0, 0.0, 1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from engine.dynamics.errors import (
    DynamicsConfigError,
    NeighbourCountError,
    RepresentationShapeError,
)


def _points(reps: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    if isinstance(reps, torch.Tensor):
        reps = reps.detach().cpu().double().numpy()
    arr = np.asarray(reps, dtype=np.float64)
    if arr.ndim < 2:
        raise RepresentationShapeError(
            f"{where}: expected (samples, features…), got shape {arr.shape}"
        )
    arr = arr.reshape(arr.shape[0], -1)
    if not np.isfinite(arr).all():
        raise RepresentationShapeError(f"{where}: representations contain NaN or inf")
    return arr


def knn_sets(
    reps: np.ndarray | torch.Tensor, k: int, *, where: str = "representations"
) -> np.ndarray:
    """``(samples, k)`` indices of each sample's ``k`` nearest other samples (Euclidean),
    nearest first; ties broken by index. ``k`` > samples − 1 raises ``NeighbourCountError``."""
    points = _points(reps, where)
    n = points.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DynamicsConfigError(f"{where}: k must be a positive integer, got {k!r}")
    if k > n - 1:
        raise NeighbourCountError(int(k), n, where)
    from scipy.spatial import cKDTree  # imported on use: scipy.spatial is slow to import

    _, idx = cKDTree(points).query(points, k=k + 1)
    idx = np.asarray(idx).reshape(n, k + 1)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)  # duplicates: the sample itself may not be listed first
    is_self[no_self, -1] = True
    return idx[~is_self].reshape(n, k)


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample, the fraction of its neighbours in ``a`` that are also its neighbours in
    ``b`` (both ``(samples, k)``)."""
    if a.shape != b.shape:
        raise RepresentationShapeError(f"neighbour sets differ in shape: {a.shape} and {b.shape}")
    return (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1) / a.shape[1]


def overlap_over_time(
    sets: Mapping[int, np.ndarray], reference: str = "previous"
) -> tuple[list[int], np.ndarray]:
    """Neighbour overlap per sample for each epoch after the first: ``(epochs, samples)``.

    ``reference``: ``"previous"`` (epoch against the one before), ``"first"`` or ``"last"``.
    """
    epochs = sorted(sets)
    if reference not in ("previous", "first", "last"):
        raise RepresentationShapeError(
            f"reference must be 'previous', 'first' or 'last', got {reference!r}"
        )
    rows = []
    for i, epoch in enumerate(epochs[1:], start=1):
        ref = {"previous": epochs[i - 1], "first": epochs[0], "last": epochs[-1]}[reference]
        rows.append(neighbour_overlap(sets[ref], sets[epoch]))
    n = next(iter(sets.values())).shape[0] if sets else 0
    return epochs[1:], np.array(rows).reshape(len(rows), n)


def epoch_similarity(sets: Mapping[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Mean neighbour overlap between every pair of epochs: ``(epochs, epochs)`` (1 on the
    diagonal), the training fingerprint's transition map."""
    epochs = sorted(sets)
    out = np.ones((len(epochs), len(epochs)))
    for i, a in enumerate(epochs):
        for j in range(i + 1, len(epochs)):
            out[i, j] = out[j, i] = neighbour_overlap(sets[a], sets[epochs[j]]).mean()
    return epochs, out


def distance_matrix(reps: np.ndarray | torch.Tensor, metric: str = "euclidean") -> np.ndarray:
    """Sample × sample distances (``scipy.spatial.distance.cdist`` metrics)."""
    points = _points(reps, "representations")
    from scipy.spatial.distance import cdist

    return cdist(points, points, metric=metric)
