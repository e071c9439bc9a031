"""Forward hooks that feed accumulators, and the one object that owns their handles.

>>> import torch, torch.nn as nn
>>> lin = nn.Linear(2, 2)
>>> hooks = HookSet()
>>> hooks.add(lin.register_forward_hook(lambda m, a, o: None))
>>> len(lin._forward_hooks), len(hooks)
(1, 1)
>>> hooks.remove(); len(lin._forward_hooks)
0
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from engine.errors import TrackingStateError
from engine.layers import LayerKind
from engine.observe.placement import Observation
from engine.stats import NeuronAccumulator


class HookSet:
    """Owns hook handles; ``remove()`` is idempotent and removes every one of them."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __len__(self) -> int:
        return len(self._handles)


def to_samples(x: torch.Tensor, kind: LayerKind) -> torch.Tensor:
    """Fold every axis but the unit axis: ``(B, T, N)`` or ``(B, C, H, W)`` → ``(S, N)``."""
    axis = kind.unit_axis(x)
    if axis != x.dim() - 1:
        x = x.movedim(axis, -1)
    return x.reshape(-1, x.shape[-1])


def unit_view(x: torch.Tensor, kind: LayerKind) -> torch.Tensor:
    """A view for the accumulator: ``(S, N)`` when units are last, ``(B, N, L)`` for a
    contiguous map with units in the middle (conv ``(B, C, H, W)`` → ``(B, C, H·W)``, no copy)."""
    axis = kind.unit_axis(x)
    if axis == x.dim() - 1:
        return x.reshape(-1, x.shape[-1])
    if x.is_contiguous() and x.numel() > 0:
        lead = 1
        for size in x.shape[:axis]:
            lead *= size
        return x.view(lead, x.shape[axis], -1)
    return x.movedim(axis, -1).reshape(-1, x.shape[axis])  # free for channels_last


def _detach_from(module: nn.Module, hook: Callable[..., None]) -> None:
    for key, value in list(module._forward_hooks.items()):
        if value is hook:
            del module._forward_hooks[key]


def make_observer(
    kind: LayerKind,
    observation: Observation,
    accumulator: NeuronAccumulator,
    target: nn.Module | None = None,
) -> Callable[[nn.Module, Any, Any], None]:
    """A forward hook: select the tensor, replay trailing activations, update statistics.

    Tensor ops only: no host sync, no Python loop over units. With ``target``, the hook does
    nothing when it fires on another module (``copy.deepcopy`` of a tracked model copies its
    hooks; the copy must not feed the original's statistics).

    The same arguments (and layer width) give the same function object again: a compiled
    model whose hooks go on and off (``tracking()`` blocks, sampling windows) then meets the
    hooks its graph was traced with, instead of recompiling for every new closure.
    """
    # ids, not objects, in the key: a deep copy of the accumulator (which copies this cache)
    # then misses, instead of reusing a closure that feeds the original
    key = (id(kind), id(observation), id(target), id(accumulator), accumulator.num_units)
    cache = accumulator.__dict__.setdefault("_observers", {})
    hit = cache.get(key)
    if hit is not None and hit[1]() is target:
        return hit[2]
    observe = _observer(kind, observation, accumulator, target)
    ref = (lambda: None) if target is None else weakref.ref(target)
    cache[key] = ((kind, observation), ref, observe)  # held: their ids stay theirs
    return observe


def _observer(
    kind: LayerKind,
    observation: Observation,
    accumulator: NeuronAccumulator,
    target: nn.Module | None,
) -> Callable[[nn.Module, Any, Any], None]:
    select = kind.select if observation.at_layer_output else (lambda out: out)
    replay = tuple(step.replay for step in observation.replay)
    owner = weakref.ref(target) if target is not None else None
    units = accumulator.num_units

    def observe(module: nn.Module, args: Any, output: Any) -> None:
        if owner is not None and owner() is not module:
            _detach_from(module, observe)  # a deep copy of the tracked module: leave it clean
            return
        if units == 0:  # a 0-unit layer has nothing to observe (and no unit axis to fold into)
            return
        x = select(output).detach()
        for fn in replay:
            x = fn(x)
        samples = unit_view(x, kind)
        seen = samples.shape[1]
        if seen != units:  # shape metadata only: no device sync
            raise TrackingStateError(
                f"layer {observation.layer!r}: observed {seen} units at "
                f"{observation.hook_module!r}, expected {units}; was the model changed "
                f"without the engine (surgery must go through engine.apply)?"
            )
        accumulator.update(samples)

    return observe
