"""Every rank's statistics as one float64 vector, and back.

A ``LayerSnapshot`` holds its statistics in dataclasses (``Moments``, ``CoMoments``,
``GradientCross``) and possibly tensors of its own; :func:`pack` walks their fields
generically, so a field added to one of them (a new per-unit counter) travels without a
change here. Per field:

* a tensor is flattened into the vector (float64; counts are exact up to 2⁵³);
* an ``int`` or ``float`` takes one slot (``int`` fields come back rounded);
* anything else (``None``, a name) is not sent: it goes into the *structure* text, which every
  rank must share (``engine.distributed.merge`` compares its digest before the gather).

:func:`unpack` rebuilds a snapshot of the local one's structure from a vector, so merging
another rank's statistics is the stats package's own exact merge (``LayerSnapshot.merge``).

>>> import torch
>>> from engine.stats import Moments
>>> from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
>>> snap = StatsSnapshot({"fc": LayerSnapshot("fc", "Linear", [0, 1],
...                                           Moments.from_samples(torch.rand(5, 2)))})
>>> flat, structure = pack(snap)
>>> back = unpack(snap, flat)
>>> back.layers["fc"].count, torch.equal(back.layers["fc"].mean, snap.layers["fc"].mean)
(5, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch

from engine.errors import LayoutMismatchError
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot

__all__ = ["pack", "structure_of", "unpack"]


def _states(layer: LayerSnapshot) -> Iterator[tuple[str, Any]]:
    """The layer's statistics: every field holding a dataclass state, a tensor, or None."""
    for f in fields(layer):
        value = getattr(layer, f.name)
        state = is_dataclass(value) and not isinstance(value, type)
        if value is None or state or isinstance(value, torch.Tensor):
            yield f.name, value


def _walk(snapshot: StatsSnapshot) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of every field of every statistics state, in a fixed order."""
    for name, layer in snapshot.layers.items():
        for state_name, state in _states(layer):
            if state is None or isinstance(state, torch.Tensor):
                yield f"{name}.{state_name}", state
                continue
            for f in fields(state):
                yield f"{name}.{state_name}.{f.name}", getattr(state, f.name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def structure_of(snapshot: StatsSnapshot) -> str:
    """What every rank must share for a merge: layers, states, field shapes and the fields
    that are not sent (names, absent states)."""
    lines = []
    for key, value in _walk(snapshot):
        if isinstance(value, torch.Tensor):
            lines.append(f"{key} tensor{tuple(value.shape)}")
        elif _is_number(value):
            lines.append(f"{key} {type(value).__name__}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines)


def pack(snapshot: StatsSnapshot) -> tuple[torch.Tensor, str]:
    """``(vector, structure)``: every number of the snapshot's statistics as one float64 CPU
    vector, and :func:`structure_of` the snapshot."""
    parts = []
    for _, value in _walk(snapshot):
        if isinstance(value, torch.Tensor):
            parts.append(value.detach().to("cpu", torch.float64).reshape(-1))
        elif _is_number(value):
            parts.append(torch.tensor([float(value)], dtype=torch.float64))
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return flat, structure_of(snapshot)


def unpack(template: StatsSnapshot, flat: torch.Tensor) -> StatsSnapshot:
    """A snapshot shaped like ``template`` holding the statistics of ``flat`` (another rank's
    :func:`pack` vector of the same structure)."""
    flat = flat.to("cpu", torch.float64)
    need = sum(
        v.numel() if isinstance(v, torch.Tensor) else int(_is_number(v)) for _, v in _walk(template)
    )
    if need != flat.numel():
        raise LayoutMismatchError(
            f"a rank sent {flat.numel()} statistics values; this rank's layout holds {need}"
        )
    at = 0

    def take(value: Any) -> Any:
        nonlocal at
        if isinstance(value, torch.Tensor):
            n = value.numel()
            out = flat[at : at + n].reshape(value.shape).to(value.dtype)
            at += n
            return out
        if _is_number(value):
            out = flat[at].item()
            at += 1
            return round(out) if isinstance(value, int) else float(out)
        return value

    layers = {}
    for name, layer in template.layers.items():
        changes = {}
        for state_name, state in _states(layer):
            if isinstance(state, torch.Tensor):
                changes[state_name] = take(state)
            elif state is not None:
                changes[state_name] = replace(
                    state, **{f.name: take(getattr(state, f.name)) for f in fields(state)}
                )
        layers[name] = replace(layer, **changes)
    return replace(template, layers=layers)
