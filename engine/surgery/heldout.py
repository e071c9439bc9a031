"""Held-out loss: the judge of a trial surgery.

``held_out_loss(data, loss_fn)`` returns ``evaluate(model) -> float``: the mean of ``loss_fn``
over ``data`` (one ``(inputs, targets)`` batch, or an iterable of them, weighted by batch size),
computed in eval mode without gradients, with every module's mode restored afterwards, also
when the forward raises. Any other callable ``evaluate(model) -> float`` works as a judge.

``recovery_steps(x, y, loss_fn, steps)`` returns ``recover(model, optimizer)``: a few training
steps on mini-batches drawn from ``(x, y)`` with torch's global generator, which a trial captures
and restores, so the unmodified baseline (``baseline="recovered"``) and the modified model see
the same batches.

>>> import torch, torch.nn as nn
>>> model = nn.Linear(2, 1)
>>> with torch.no_grad():
...     _ = model.weight.zero_(), model.bias.zero_()
>>> x, y = torch.zeros(4, 2), torch.ones(4, 1)
>>> held_out_loss((x, y), nn.MSELoss())(model)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError

__all__ = ["Evaluate", "Recover", "held_out_loss", "recovery_steps"]

Evaluate = Callable[[nn.Module], float]
Recover = Callable[[nn.Module, Any], None]


def _batches(data: Any) -> list[tuple[Any, Any]]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    if isinstance(data, Iterable):
        batches = list(data)
        if batches and all(isinstance(b, tuple | list) and len(b) == 2 for b in batches):
            return [tuple(b) for b in batches]
    raise ConfigurationError(
        "held-out data must be an (inputs, targets) batch or an iterable of such batches, got "
        f"{type(data).__name__}"
    )


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _size(inputs: Any) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    first = first[0] if isinstance(first, tuple | list) else first
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 1


def held_out_loss(
    data: Any, loss_fn: Callable[[Any, Any], torch.Tensor], *, per_sample: bool = False
) -> Evaluate:
    """``evaluate(model)``: the size-weighted mean held-out loss (see the module docstring).
    The batches are read once, here, so an iterator is not exhausted by the first trial.

    With ``per_sample=True`` it returns the loss of every held-out sample (a float64 CPU
    vector; ``loss_fn`` is called on one sample's output and target at a time), which a trial
    with ``significance`` pairs before and after surgery.

    >>> model = nn.Linear(2, 1)
    >>> x, y = torch.zeros(3, 2), torch.ones(3, 1)
    >>> held_out_loss((x, y), nn.MSELoss(), per_sample=True)(model).shape
    torch.Size([3])
    """
    batches = _batches(data)
    if not batches:
        raise ConfigurationError("held-out data is empty")

    def losses(model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        out = _call(model, inputs)
        if not per_sample:
            return loss_fn(out, targets).detach().double().cpu() * _size(inputs)
        if not isinstance(out, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise ConfigurationError(
                "per_sample held-out losses need a model output and targets that are tensors"
            )
        rows = [loss_fn(out[i : i + 1], targets[i : i + 1]) for i in range(len(out))]
        return torch.stack(rows).detach().double().cpu().flatten()

    def evaluate(model: nn.Module) -> Any:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                parts = [losses(model, inputs, targets) for inputs, targets in batches]
            if per_sample:
                return torch.cat(parts)
            return float(sum(parts) / sum(_size(inputs) for inputs, _ in batches))
        finally:
            for m, mode in modes:
                m.training = mode

    return evaluate


def recovery_steps(
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    steps: int,
    batch_size: int = 64,
) -> Recover:
    """``recover(model, optimizer)``: ``steps`` training steps (train mode, the model's mode
    restored) on random mini-batches of ``(x, y)``; with ``optimizer=None`` nothing trains.

    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> model = nn.Linear(2, 1)
    >>> x, y = torch.randn(32, 2), torch.randn(32, 1)
    >>> before = held_out_loss((x, y), nn.MSELoss())(model)
    >>> recovery_steps(x, y, nn.MSELoss(), 20)(model, torch.optim.SGD(model.parameters(), 0.1))
    >>> held_out_loss((x, y), nn.MSELoss())(model) < before
    True
    """
    if steps < 0 or batch_size < 1:
        raise ConfigurationError(f"steps must be ≥ 0 and batch_size ≥ 1, got {steps}, {batch_size}")
    if len(x) != len(y) or len(x) == 0:
        raise ConfigurationError(f"recovery data: {len(x)} inputs and {len(y)} targets")

    def recover(model: nn.Module, optimizer: Any) -> None:
        if optimizer is None or steps == 0:
            return
        was_training = model.training
        model.train()
        try:
            for _ in range(steps):
                idx = torch.randint(len(x), (min(batch_size, len(x)),), device=x.device)
                loss = loss_fn(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            model.train(was_training)

    return recover
