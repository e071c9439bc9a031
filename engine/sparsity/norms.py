"""The functional form of sparsity pressure: per-unit group norms and the two penalties.

Each function reads the live parameters when called (no shapes are kept), runs on the
parameters' device and never synchronises with it. Penalties are differentiable scalars.

A unit's **group** is everything that feeds it: its incoming weights (a Linear row, a conv
filter) and its bias, optionally with the column of the one layer that reads it
(``consumer=``). The group-lasso penalty weighs each group by the square root of its size
(Scardapane et al. 2017, "Group sparse regularization for deep neural networks"), so wide
filters and narrow rows are pushed alike:

    Ω = strength · Σ_layers √(group size) · Σ_units ‖w_unit‖₂

>>> import torch, torch.nn as nn
>>> fc = nn.Linear(3, 2)
>>> with torch.no_grad():
...     _ = fc.weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
...     _ = fc.bias.copy_(torch.tensor([4.0, 0.0]))
>>> unit_group_norms(fc)
tensor([5., 0.], grad_fn=<LinalgVectorNormBackward0>)
>>> group_lasso_penalty([fc], strength=0.5).detach().item()   # 0.5 · √4 · (5 + 0)
5.0
>>> bn = nn.BatchNorm1d(3)
>>> round(bn_l1_penalty([bn], strength=0.1).detach().item(), 6)   # 0.1 · (1 + 1 + 1)
0.3
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from engine.errors import ConfigurationError

__all__ = [
    "GROUP_TYPES",
    "bn_l1_penalty",
    "group_lasso_penalty",
    "group_size",
    "incoming_rows",
    "unit_group_norms",
]

# Layers whose output units own rows of their weight: group lasso can act on them.
GROUP_TYPES: tuple[type, ...] = (nn.Linear, nn.Bilinear, _ConvNd)


def incoming_rows(module: nn.Module) -> torch.Tensor:
    """The incoming weights of every output unit of ``module`` as a ``(units, fan_in)`` view
    (a copy only for grouped transposed convolutions).

    Linear ``(out, in)``; Bilinear ``(out, in1·in2)``; Conv ``(out, in/groups·k…)``;
    ConvTranspose, whose weight is ``(in, out/groups, k…)``: ``(out, in/groups·k…)``.

    >>> import torch.nn as nn
    >>> incoming_rows(nn.Conv2d(3, 8, 3)).shape, incoming_rows(nn.ConvTranspose1d(4, 6, 5)).shape
    (torch.Size([8, 27]), torch.Size([6, 20]))
    """
    if not isinstance(module, GROUP_TYPES):
        raise ConfigurationError(
            f"group lasso acts on Linear, Bilinear and Conv/ConvTranspose layers; got "
            f"{type(module).__name__}"
        )
    w = module.weight
    if isinstance(module, _ConvNd) and module.transposed:
        g = module.groups
        in_g, out_g = w.shape[0] // g, w.shape[1]
        w = w.reshape(g, in_g, out_g, -1).transpose(1, 2)  # (g, out/g, in/g, k)
        return w.reshape(g * out_g, -1)
    return w.reshape(w.shape[0], -1)


def _bias(module: nn.Module, bias: bool) -> torch.Tensor | None:
    b = getattr(module, "bias", None) if bias else None
    return b if isinstance(b, torch.Tensor) else None


def _outgoing(module: nn.Module, consumer: nn.Module | None) -> torch.Tensor | None:
    if consumer is None:
        return None
    if not isinstance(consumer, nn.Linear):
        raise ConfigurationError(
            f"consumer= must be the nn.Linear that reads the layer's units; got "
            f"{type(consumer).__name__}"
        )
    units = incoming_rows(module).shape[0]
    if consumer.in_features != units:
        raise ConfigurationError(
            f"consumer reads {consumer.in_features} features but the layer has {units} units: "
            f"it is not the layer's direct consumer"
        )
    return consumer.weight.t()  # (units, consumer outputs)


def group_size(module: nn.Module, *, bias: bool = True, consumer: nn.Module | None = None) -> int:
    """Parameters in one unit's group: fan-in, +1 for the bias, + the consumer's outputs.

    >>> import torch.nn as nn
    >>> group_size(nn.Linear(64, 128)), group_size(nn.Linear(64, 128), consumer=nn.Linear(128, 10))
    (65, 75)
    """
    size = incoming_rows(module).shape[1]
    size += 1 if _bias(module, bias) is not None else 0
    out = _outgoing(module, consumer)
    return size + (out.shape[1] if out is not None else 0)


def unit_group_norms(
    module: nn.Module, *, bias: bool = True, consumer: nn.Module | None = None
) -> torch.Tensor:
    """‖group‖₂ of every output unit of ``module``: incoming row (+ bias) (+ the unit's column
    in ``consumer``, a Linear reading the units directly), differentiable, on the weight's
    device. An all-zero group has norm 0 and gradient 0 (PyTorch's subgradient of the norm).

    >>> import torch, torch.nn as nn
    >>> fc, head = nn.Linear(2, 3, bias=False), nn.Linear(3, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = fc.weight.fill_(1.0); _ = head.weight.fill_(2.0)
    >>> unit_group_norms(fc, consumer=head).detach()   # √(1 + 1 + 4) per unit
    tensor([2.4495, 2.4495, 2.4495])
    """
    parts = [incoming_rows(module)]
    b = _bias(module, bias)
    if b is not None:
        parts.append(b.reshape(-1, 1))
    out = _outgoing(module, consumer)
    if out is not None:
        parts.append(out)
    rows = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return torch.linalg.vector_norm(rows, dim=1)


def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise ConfigurationError(f"strength must be a number ≥ 0, got {strength!r}")
    value = float(strength)
    if not value >= 0.0 or value == float("inf"):  # catches NaN too
        raise ConfigurationError(f"strength must be a finite number ≥ 0, got {strength!r}")
    return value


def _zero_like(modules: list[nn.Module]) -> torch.Tensor:
    for m in modules:
        for p in m.parameters():
            return torch.zeros((), device=p.device, dtype=p.dtype)
    return torch.zeros(())


def group_lasso_penalty(
    modules: Iterable[nn.Module],
    strength: float = 1.0,
    *,
    bias: bool = True,
    consumers: Iterable[nn.Module | None] | None = None,
) -> torch.Tensor:
    """``strength · Σ_layers √(group size) · Σ_units ‖group‖₂`` over ``modules`` (Linear,
    Bilinear, Conv, ConvTranspose); ``consumers`` gives each module's Linear consumer (or
    None) when outgoing columns join the groups. Strength 0 gives an exact zero.

    >>> import torch.nn as nn
    >>> float(group_lasso_penalty([nn.Linear(3, 2)], strength=0.0))
    0.0
    """
    modules = list(modules)
    value = _check_strength(strength)
    readers = [None] * len(modules) if consumers is None else list(consumers)
    if len(readers) != len(modules):
        raise ConfigurationError(
            f"consumers has {len(readers)} entries for {len(modules)} modules (one each, or None)"
        )
    if value == 0.0 or not modules:
        return _zero_like(modules)
    total = None
    for module, consumer in zip(modules, readers):
        norms = unit_group_norms(module, bias=bias, consumer=consumer)
        size = group_size(module, bias=bias, consumer=consumer)
        term = norms.sum() * size**0.5
        total = term if total is None else total + term.to(total.device)
    return total * value


def bn_l1_penalty(modules: Iterable[nn.Module], strength: float = 1.0) -> torch.Tensor:
    """``strength · Σ |γ|`` over affine BatchNorm ``modules`` (network slimming, Liu et al.
    2017): a channel whose γ reaches 0 outputs its constant β and can be removed.

    >>> import torch.nn as nn
    >>> float(bn_l1_penalty([nn.BatchNorm2d(4)], strength=0.0))
    0.0
    """
    modules = list(modules)
    value = _check_strength(strength)
    for m in modules:
        if not isinstance(m, _BatchNorm) or not isinstance(m.weight, torch.Tensor):
            raise ConfigurationError(
                f"bn_l1 needs affine BatchNorm layers (with γ); got {type(m).__name__}"
                + (" with affine=False" if isinstance(m, _BatchNorm) else "")
            )
    if value == 0.0 or not modules:
        return _zero_like(modules)
    total = None
    for m in modules:
        term = m.weight.abs().sum()
        total = term if total is None else total + term.to(total.device)
    return total * value
