"""Element-wise activations and norms that sit between a layer and its consumer.

Two tables drive observation placement:

* activations (modules, functions, tensor methods) can be *replayed* out of place on a tensor
  observed earlier in the chain; bounded ones (sigmoid, tanh, relu6, hardtanh…) also give the
  bounds used for the saturation fraction;
* norms (BatchNorm, LayerNorm, GroupNorm, …) are stateful: they are never replayed, only observed
  at their own output with a forward hook.

>>> import torch, torch.nn.functional as F
>>> step = activation_from_function(F.leaky_relu, (None, 0.5), {"inplace": True})
>>> step.replay(torch.tensor([-2.0, 1.0])), step.name
(tensor([-1.,  1.]), 'leaky_relu')
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Replay = Callable[[torch.Tensor], torch.Tensor]

NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

ACTIVATION_MODULE_TYPES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU, nn.Mish, nn.ELU,
    nn.SELU, nn.CELU, nn.Softplus, nn.Softsign, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.Threshold, nn.Identity,
)  # fmt: skip

# Element-wise modules that may carry the forward hook (observed at their own output when
# called once) but are never replayed: nn.RReLU draws random slopes in training mode, so a
# replay would give other values and consume the global RNG stream of the training run.
HOOK_ONLY_MODULE_TYPES: tuple[type, ...] = (nn.RReLU,)

# Activations whose output is exactly zero below a threshold: "never fired" means dead.
RECTIFIERS = frozenset({"relu", "relu6", "threshold"})
INPLACE_FUNCTIONS = frozenset({F.relu_, torch.relu_})

_UNIT = (0.0, 1.0)
_SYMMETRIC = (-1.0, 1.0)

# function → (name, fixed bounds or None)
_FUNCTIONS: dict[Any, tuple[str, tuple[float, float] | None]] = {
    F.relu: ("relu", None), torch.relu: ("relu", None), F.relu_: ("relu", None),
    torch.relu_: ("relu", None), F.relu6: ("relu6", (0.0, 6.0)), F.leaky_relu: ("leaky_relu", None),
    F.gelu: ("gelu", None), F.silu: ("silu", None), F.mish: ("mish", None), F.elu: ("elu", None),
    F.selu: ("selu", None), F.celu: ("celu", None), F.softplus: ("softplus", None),
    F.softsign: ("softsign", _SYMMETRIC), torch.sigmoid: ("sigmoid", _UNIT),
    F.sigmoid: ("sigmoid", _UNIT), torch.tanh: ("tanh", _SYMMETRIC), F.tanh: ("tanh", _SYMMETRIC),
    F.hardtanh: ("hardtanh", None), F.hardswish: ("hardswish", None),
    F.hardsigmoid: ("hardsigmoid", _UNIT), F.logsigmoid: ("logsigmoid", None),
}  # fmt: skip

# Tensor methods (``x.relu()``, ``x.sigmoid_()``) → out-of-place torch function and bounds.
_METHODS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[float, float] | None]] = {
    "relu": (torch.relu, None), "relu_": (torch.relu, None),
    "sigmoid": (torch.sigmoid, _UNIT), "sigmoid_": (torch.sigmoid, _UNIT),
    "tanh": (torch.tanh, _SYMMETRIC), "tanh_": (torch.tanh, _SYMMETRIC),
}  # fmt: skip


@dataclass(frozen=True)
class ActivationStep:
    """One replayable element-wise step: its name, an out-of-place function, its bounds."""

    name: str
    replay: Replay
    bounds: tuple[float, float] | None


def _module_bounds(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.ReLU6):
        return (0.0, 6.0)
    if isinstance(module, nn.Hardtanh):  # (ReLU6 is a Hardtanh subclass, handled above)
        return (float(module.min_val), float(module.max_val))
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return _UNIT
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return _SYMMETRIC
    return None


def activation_from_module(module: nn.Module) -> ActivationStep | None:
    """A replay step for an activation module (an out-of-place shallow copy), else None."""
    if not isinstance(module, ACTIVATION_MODULE_TYPES):
        return None
    clone = copy.copy(module)
    if getattr(clone, "inplace", False):
        clone.inplace = False
    name = type(module).__name__.lower()
    return ActivationStep(name, clone.forward, _module_bounds(module))


def activation_from_function(fn: Any, args: tuple, kwargs: dict[str, Any]) -> ActivationStep | None:
    """A replay step for ``fn(x, *args[1:], **kwargs)`` with constant extra arguments."""
    entry = _FUNCTIONS.get(fn)
    if entry is None:
        return None
    name, bounds = entry
    extra_args, extra_kwargs = tuple(args[1:]), dict(kwargs)
    out_of_place = {F.relu_: F.relu, torch.relu_: torch.relu}.get(fn, fn)
    try:
        bound = inspect.signature(out_of_place).bind(None, *extra_args, **extra_kwargs)
    except (TypeError, ValueError):  # builtins without a signature take no extras here
        if extra_args or extra_kwargs:
            return None
        return ActivationStep(name, out_of_place, bounds)
    params = dict(bound.arguments)
    first = next(iter(params))
    params.pop(first)
    if "inplace" in params:
        params["inplace"] = False
    if name == "hardtanh":
        lo = float(params.get("min_val", -1.0))
        hi = float(params.get("max_val", 1.0))
        bounds = (lo, hi)

    def replay(x: torch.Tensor) -> torch.Tensor:
        return out_of_place(x, **params)

    return ActivationStep(name, replay, bounds)


def activation_from_method(method: str, args: tuple, kwargs: dict) -> ActivationStep | None:
    entry = _METHODS.get(method)
    if entry is None or len(args) != 1 or kwargs:
        return None
    fn, bounds = entry
    return ActivationStep(method.rstrip("_"), fn, bounds)


def activation_from_value(value: Any) -> ActivationStep | None:
    """From whatever a container stores as its activation: a module or a function."""
    if isinstance(value, nn.Module):
        return activation_from_module(value)
    if callable(value):
        return activation_from_function(value, (None,), {})
    return None
