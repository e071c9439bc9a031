"""Hooks that gather a layer's growth signal ``Σ δ_Cᵀ·x_L`` while the model trains.

A forward hook on the layer keeps its input ``x_L``; a forward hook on its consumer registers
a gradient hook on the consumer's output, which receives ``δ_C`` during ``backward`` and adds
``δ_Cᵀ·x_L`` to the layer's ``GradientCrossAccumulator``. Forward passes without gradients
(evaluation, ``torch.no_grad``) add nothing. Tensor ops only: no host sync. The forward hooks
are ``HookSet`` handles, owned and removed by the engine; the gradient hooks live on the
autograd graph of one batch and go with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.observe.hooks import HookSet
from engine.stats.growth import GradientCrossAccumulator

__all__ = ["attach_growth_hooks"]


def attach_growth_hooks(
    model: nn.Module, layer: str, accumulator: GradientCrossAccumulator, hooks: HookSet
) -> None:
    """Register the two forward hooks of ``layer`` and its consumer into ``hooks``."""
    producer = model.get_submodule(layer)
    consumer = model.get_submodule(accumulator.consumer)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor):
            seen["x"] = args[0].detach()

    def watch_output(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        x = seen.pop("x", None)
        if x is None or not isinstance(out, torch.Tensor) or not out.requires_grad:
            return

        def add(grad: torch.Tensor) -> None:
            accumulator.update(grad, x)

        out.register_hook(add)

    hooks.add(producer.register_forward_hook(keep_input))
    hooks.add(consumer.register_forward_hook(watch_output))
