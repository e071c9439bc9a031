"""Keep a few samples of a batch: the probe the engine captures from its first tracked forward.

>>> import torch
>>> [t.shape for t in first_samples((torch.zeros(32, 3), torch.zeros(5)), limit=4)]
[torch.Size([4, 3]), torch.Size([5])]
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["first_kwarg_samples", "first_samples"]


def _first(a: Any, limit: int) -> Any:
    if not isinstance(a, torch.Tensor):
        return a
    a = a.detach()
    # A 0-d or 1-d tensor may be one unbatched sample (``model(torch.randn(16))``): slicing it
    # would cut its feature axis. Keep it whole.
    return (a[:limit] if a.dim() >= 2 else a).clone()


def first_samples(args: tuple[Any, ...], limit: int = 8) -> tuple[Any, ...]:
    """Detached copies of the first ``limit`` samples of each batched tensor argument."""
    return tuple(_first(a, limit) for a in args)


def first_kwarg_samples(kwargs: dict[str, Any], limit: int = 8) -> dict[str, Any]:
    """``first_samples`` for keyword arguments (``model(x=batch)``)."""
    return {k: _first(v, limit) for k, v in kwargs.items()}
