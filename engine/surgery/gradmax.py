"""GradMax growth (Evci et al. 2022): new units whose first gradient step is as large as it can be.

New units get zero incoming weights, so they leave the function unchanged. The gradient of
the loss with respect to their incoming weights is then ``W_outᵀ · M`` with
``M = Σ δ·xᵀ`` (``δ``: the gradient at the consumer's output, ``x``: the layer's input, summed
over the batch), so choosing the outgoing columns ``W_out`` as the top left singular vectors of
``M`` maximises its norm. ``M`` comes from :func:`gradmax_gradient` on a training batch.

With zero incoming weights the new units' pre-activation is exactly 0, where ``F.relu`` has a
zero derivative: they would never move. Surgery therefore gives them a tiny bias
(``gradmax_epsilon``, on their norm's bias when one follows), which changes the function by
at most ``epsilon · ‖W_out‖`` (measured and recorded).

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> m = gradmax_gradient(model, "0", "2", torch.randn(8, 3), torch.randn(8, 2), nn.MSELoss())
>>> tuple(m.shape), model[0].weight.grad is None
((2, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from engine.errors import ConfigurationError, SurgeryError
from engine.surgery.checks import gradmax_consumer
from engine.surgery.groups import GroupMember
from engine.surgery.workspace import Workspace

__all__ = ["gradmax_gradient", "gradmax_outgoing", "rows_now"]


def gradmax_gradient(
    model: nn.Module,
    layer: str,
    consumer: str,
    inputs: Any,
    targets: Any,
    loss_fn: Callable[[Any, Any], Tensor],
) -> Tensor:
    """``M = Σ δ·xᵀ`` for growing ``layer`` (a Linear) in front of ``consumer`` (a Linear):
    ``δ`` is the loss gradient at the consumer's output, ``x`` the layer's input, summed over
    every sample (and sequence position). Parameters' ``.grad`` are not touched.
    """
    lin, cons = model.get_submodule(layer), model.get_submodule(consumer)
    if not isinstance(lin, nn.Linear) or not isinstance(cons, nn.Linear):
        raise ConfigurationError(
            f"gradmax_gradient needs two nn.Linear modules, got {type(lin).__name__} "
            f"{layer!r} and {type(cons).__name__} {consumer!r}"
        )
    seen: dict[str, Tensor] = {}
    handles = [
        lin.register_forward_hook(lambda m, a, out: seen.__setitem__("x", a[0])),
        cons.register_forward_hook(lambda m, a, out: seen.__setitem__("y", out)),
    ]
    try:
        with torch.enable_grad():
            out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
            if "x" not in seen or "y" not in seen:
                raise ConfigurationError(f"{layer!r} or {consumer!r} was not called in forward")
            (delta,) = torch.autograd.grad(loss_fn(out, targets), seen["y"])
    finally:
        for h in handles:
            h.remove()
    x = seen["x"].detach().reshape(-1, lin.in_features).double()
    d = delta.detach().reshape(-1, cons.out_features).double()
    return d.T @ x


def gradmax_outgoing(
    ws: Workspace,
    members: list[GroupMember],
    gradient: Tensor,
    count: int,
    opening: Tensor | None = None,
) -> Tensor:
    """Outgoing columns ``(consumer out, count)``: the top ``count`` left singular vectors of
    ``gradient``, scaled to the median norm of the consumer's existing columns. An SVD leaves
    each column's sign open; with ``opening`` (``v``, see ``GradientCross.opening``) each is
    signed so that ``ωᵀv ≤ 0``: behind a ReLU, the first gradient step then raises the new
    unit's pre-activation instead of closing the unit for good."""
    consumer = gradmax_consumer(members)
    if consumer is None:
        raise SurgeryError("gradmax growth supports a Linear layer with one Linear consumer")
    u, _, _ = torch.linalg.svd(gradient.double(), full_matrices=False)
    if opening is not None:
        flip = (opening.double().to(u.device) @ u) > 0
        u = torch.where(flip[None, :], -u, u)
    weight = ws.get(consumer.module, "weight").detach().double()
    scale = weight.norm(dim=0).median() if weight.numel() else torch.tensor(1.0)
    columns = u[:, :count] * scale
    if columns.shape[1] < count:  # more units than directions (the consumer was cut in this
        # plan, or M has fewer rows than count): the rest start with zero outgoing weights
        columns = torch.cat(
            [columns, columns.new_zeros(columns.shape[0], count - columns.shape[1])], 1
        )
    return columns


def rows_now(gradient: Tensor, units_now: list[int]) -> Tensor:
    """``gradient``'s rows for the consumer's units as they are now, in an earlier action of
    the same plan changed them: ``units_now[k]`` is the original index of the consumer's
    ``k``-th unit, or -1 for a unit grown in this plan (no gradient yet: a zero row).

    >>> rows_now(torch.arange(6.0).reshape(3, 2), [2, 0, -1])
    tensor([[4., 5.],
            [0., 1.],
            [0., 0.]])
    """
    index = torch.tensor(units_now, dtype=torch.long)
    rows = gradient[index.clamp_min(0)]
    return torch.where((index >= 0)[:, None], rows, torch.zeros_like(rows))
