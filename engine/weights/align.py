"""Match the entries of one tensor in two snapshots by neuron ID.

Along an axis that carries a tracked layer's units in both snapshots, the units alive in both
are selected (in the first snapshot's order); removed and new units drop out. Along any other
axis the shapes must agree, or :class:`WeightShapeMismatchError` names the tensor and axis.

>>> import numpy as np
>>> common, ia, ib = match_ids(np.array([4, 5, 6, 7]), np.array([7, 4, 9]))
>>> common.tolist(), ia.tolist(), ib.tolist()
([4, 7], [0, 3], [1, 0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.weights.errors import WeightShapeMismatchError
from engine.weights.weight_snapshot import WeightSnapshot


def match_ids(ids_a: np.ndarray, ids_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(common, index_in_a, index_in_b)`` for IDs present in both, in ``ids_a``'s order."""
    common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
    order = np.argsort(ia, kind="stable")
    return common[order], ia[order], ib[order]


def unit_columns(unit_index: np.ndarray, columns_per_unit: int) -> np.ndarray:
    """Entry indices along an axis where each unit owns ``columns_per_unit`` consecutive ones."""
    if columns_per_unit == 1:
        return unit_index
    cols = unit_index[:, None] * columns_per_unit + np.arange(columns_per_unit)
    return cols.reshape(-1)


@dataclass
class AlignedPair:
    """The matched entries of one tensor; ``row_ids`` are the neuron IDs along axis 0 when it
    carries units (both sides), else None. ``by_ids`` is True when an axis was re-indexed."""

    a: torch.Tensor
    b: torch.Tensor
    row_ids: np.ndarray | None
    by_ids: bool


def align_tensor(name: str, snap_a: WeightSnapshot, snap_b: WeightSnapshot) -> AlignedPair:
    """Tensor ``name`` of both snapshots, matched by neuron ID along every unit axis."""
    a, b = snap_a.tensor(name), snap_b.tensor(name)
    return align_loaded(name, a, b, snap_a, snap_b)


def _mismatch(name: str, a: torch.Tensor, b: torch.Tensor, dim: int | None, why: str):
    where = "" if dim is None else f" along axis {dim}"
    return WeightShapeMismatchError(
        f"tensor {name!r}: shape {list(a.shape)} vs {list(b.shape)}{where} {why}"
    )


def align_loaded(
    name: str, a: torch.Tensor, b: torch.Tensor, snap_a: WeightSnapshot, snap_b: WeightSnapshot
) -> AlignedPair:
    """:func:`align_tensor` for tensors already read from the two snapshots."""
    if a.dim() != b.dim():
        raise _mismatch(name, a, b, None, "(different number of axes)")
    axes_a = {x.dim: x for x in snap_a.entry.axes.get(name, ())}
    axes_b = {x.dim: x for x in snap_b.entry.axes.get(name, ())}
    row_ids, by_ids = None, False
    for dim in range(a.dim()):
        xa, xb = axes_a.get(dim), axes_b.get(dim)
        known = (
            xa is not None
            and xb is not None
            and xa.layer in snap_a.entry.neuron_ids
            and xb.layer in snap_b.entry.neuron_ids
        )
        if not known:
            if a.shape[dim] != b.shape[dim]:
                raise _mismatch(
                    name, a, b, dim, "and no neuron IDs to match its units (take snapshots "
                    "through a WeightTracker built on the NeuronEngine to record them)"
                )  # fmt: skip
            continue
        if xa.columns_per_unit != xb.columns_per_unit:
            raise _mismatch(name, a, b, dim, "(units own different numbers of columns)")
        ids_a, ids_b = snap_a.ids(xa.layer), snap_b.ids(xb.layer)
        if ids_a.shape == ids_b.shape and bool((ids_a == ids_b).all()):
            row_ids = ids_a if dim == 0 else row_ids
            continue
        common, ia, ib = match_ids(ids_a, ids_b)
        cpu = xa.columns_per_unit
        a = a.index_select(dim, torch.from_numpy(unit_columns(ia, cpu)))
        b = b.index_select(dim, torch.from_numpy(unit_columns(ib, cpu)))
        row_ids = common if dim == 0 else row_ids
        by_ids = True
    if a.shape != b.shape:  # only reachable with inconsistent axis records
        raise _mismatch(name, a, b, None, "after matching units by ID")
    return AlignedPair(a, b, row_ids, by_ids)
