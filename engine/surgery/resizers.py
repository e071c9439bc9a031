"""How each module type's tensors follow a change of width: a registry keyed by module type.

Torch-Pruning's dependency graph says *which* modules hold a layer's units and at which
positions of which axis ("out": the module's outputs, "in": its inputs). A :class:`Resizer`
says, for one module type, which tensors lie along that axis (``weight`` dim 0, ``bias``,
``running_mean``…), which size attributes to update (``out_features``…), how a consumer's
weights read one input position (for folds), and how fresh slices are initialised.

>>> import torch.nn as nn
>>> r = resizer_for(nn.Linear(4, 3))
>>> [(s.path, s.dim) for s in r.axes(nn.Linear(4, 3), "out")], r.consumes
([('weight', 0), ('bias', 0)], True)

Register another type with :func:`register_resizer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.errors import SurgeryError

__all__ = ["AxisSpec", "Resizer", "register_resizer", "resizer_for"]


@dataclass(frozen=True)
class AxisSpec:
    """Tensor ``path`` (relative to the module; ``out_proj.weight``) has the axis on ``dim``;
    ``blocks`` > 1: the dim holds that many consecutive copies of the axis (q, k, v)."""

    path: str
    dim: int
    blocks: int = 1


@dataclass(frozen=True)
class Resizer:
    """What surgery needs to know about one module type (see the module docstring).

    ``out``/``inp``: module → tensors along its output / input axis; ``set_out``/``set_in``:
    update the size attributes; ``consumes``: the module multiplies its inputs by a weight
    (``consumer_weight`` gives ``(path, dim)`` of that weight, whose other dims start with the
    output axis, and ``bias`` the path of the bias that folds land in); ``grows``: growth is
    supported; ``fresh_out``/``fresh_in``: initial values of new slices for non-Net2Net growth.
    """

    out: Callable[[nn.Module], list[AxisSpec]]
    inp: Callable[[nn.Module], list[AxisSpec]]
    set_out: Callable[[nn.Module, int], None]
    set_in: Callable[[nn.Module, int], None]
    consumes: bool = False
    consumer_weight: tuple[str, int] | None = None
    bias: str | None = None
    grows: bool = True
    norm_defaults: dict[str, float] = field(default_factory=dict)

    def axes(self, module: nn.Module, side: str) -> list[AxisSpec]:
        specs = self.out(module) if side == "out" else self.inp(module)
        return [s for s in specs if _get(module, s.path) is not None]


def _get(module: nn.Module, path: str) -> torch.Tensor | None:
    owner, _, name = path.rpartition(".")
    mod = module.get_submodule(owner) if owner else module
    return getattr(mod, name, None)


_REGISTRY: dict[type, Resizer] = {}


def register_resizer(module_type: type, resizer: Resizer) -> None:
    """Teach surgery a module type (the most specific registered base class is used)."""
    _REGISTRY[module_type] = resizer


def resizer_for(module: nn.Module) -> Resizer:
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    raise SurgeryError(
        f"surgery cannot resize a {type(module).__name__}: no resizer is registered for it "
        f"(engine.surgery.register_resizer)"
    )


def fan_in_bound(module: nn.Module) -> float:
    """PyTorch's default init bound for Linear/Conv weights: 1/sqrt(fan_in)."""
    w = module.weight
    kinds = [_REGISTRY[c] for c in type(module).__mro__ if c in _REGISTRY]
    spec = kinds[0].consumer_weight if kinds else None
    if spec == ("weight", 0) and w.dim() == 2:  # an (in, out) weight (Hugging Face's Conv1D)
        return 1.0 / math.sqrt(max(1, w.shape[0]))
    fan_in = w.shape[1] * math.prod(w.shape[2:]) if w.dim() > 1 else w.shape[0]
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        fan_in = w.shape[0] * math.prod(w.shape[2:]) // max(1, module.groups)
    return 1.0 / math.sqrt(max(1, fan_in))


# --- Linear --------------------------------------------------------------------------------
def _linear_out(m: nn.Module) -> list[AxisSpec]:
    return [AxisSpec("weight", 0), AxisSpec("bias", 0)]


def _set_attr(name: str) -> Callable[[nn.Module, int], None]:
    def setter(m: nn.Module, n: int) -> None:
        setattr(m, name, n)

    return setter


register_resizer(
    nn.Linear,
    Resizer(
        out=_linear_out,
        inp=lambda m: [AxisSpec("weight", 1)],
        set_out=_set_attr("out_features"),
        set_in=_set_attr("in_features"),
        consumes=True,
        consumer_weight=("weight", 1),
        bias="bias",
    ),
)


# --- Convolutions --------------------------------------------------------------------------
def _conv_set_out(m: nn.Module, n: int) -> None:
    if m.groups > 1:  # depthwise: in, out and groups move together
        m.in_channels = m.groups = n
    m.out_channels = n


def _conv_set_in(m: nn.Module, n: int) -> None:
    if m.groups > 1:
        m.out_channels = m.groups = n
    m.in_channels = n


def _conv_out(m: nn.Module) -> list[AxisSpec]:
    return [AxisSpec("weight", 1 if m.transposed else 0), AxisSpec("bias", 0)]


def _conv_in(m: nn.Module) -> list[AxisSpec]:
    if m.groups > 1:  # depthwise: one filter per channel, pruned once on the out axis
        return _conv_out(m)
    return [AxisSpec("weight", 0 if m.transposed else 1)]


register_resizer(
    nn.modules.conv._ConvNd,
    Resizer(
        out=_conv_out,
        inp=_conv_in,
        set_out=_conv_set_out,
        set_in=_conv_set_in,
        consumes=True,
        consumer_weight=("weight", 1),  # transposed convs: see consumer_weight_spec
        bias="bias",
    ),
)


def consumer_weight_spec(module: nn.Module) -> tuple[str, int]:
    """``(path, dim)`` of the weight that multiplies the module's inputs."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        return "weight", 0
    spec = resizer_for(module).consumer_weight
    if spec is None:
        raise SurgeryError(f"{type(module).__name__} does not multiply its inputs by a weight")
    return spec


# --- Norms ---------------------------------------------------------------------------------
def _norm_axes(m: nn.Module) -> list[AxisSpec]:
    return [
        AxisSpec("weight", 0),
        AxisSpec("bias", 0),
        AxisSpec("running_mean", 0),
        AxisSpec("running_var", 0),
    ]


def _bn_set(m: nn.Module, n: int) -> None:
    m.num_features = n


_NORM_DEFAULTS = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
register_resizer(
    nn.modules.batchnorm._NormBase,
    Resizer(
        out=_norm_axes, inp=_norm_axes, set_out=_bn_set, set_in=_bn_set,
        norm_defaults=_NORM_DEFAULTS,
    ),
)  # fmt: skip


def _ln_axes(m: nn.Module) -> list[AxisSpec]:
    return [AxisSpec("weight", -1), AxisSpec("bias", -1)]


def _ln_set(m: nn.Module, n: int) -> None:
    m.normalized_shape = (*tuple(m.normalized_shape)[:-1], n)


register_resizer(
    nn.LayerNorm,
    Resizer(out=_ln_axes, inp=_ln_axes, set_out=_ln_set, set_in=_ln_set,
            norm_defaults=_NORM_DEFAULTS),
)  # fmt: skip


def _gn_set(m: nn.Module, n: int) -> None:
    if m.num_groups == m.num_channels:
        m.num_groups = n
    m.num_channels = n


register_resizer(
    nn.GroupNorm,
    Resizer(out=_ln_axes, inp=_ln_axes, set_out=_gn_set, set_in=_gn_set,
            norm_defaults=_NORM_DEFAULTS),
)  # fmt: skip


# --- Embedding -----------------------------------------------------------------------------
register_resizer(
    nn.Embedding,
    Resizer(
        out=lambda m: [AxisSpec("weight", 1)],
        inp=lambda m: [],
        set_out=_set_attr("embedding_dim"),
        set_in=lambda m, n: None,
    ),
)


# --- MultiheadAttention (its embed dim: prune only) ----------------------------------------
def _mha_axes(m: nn.Module) -> list[AxisSpec]:
    if not m._qkv_same_embed_dim:
        raise SurgeryError(
            "surgery supports nn.MultiheadAttention with kdim == vdim == embed_dim only"
        )
    return [
        AxisSpec("in_proj_weight", 0, blocks=3),
        AxisSpec("in_proj_weight", 1),
        AxisSpec("in_proj_bias", 0, blocks=3),
        AxisSpec("out_proj.weight", 0),
        AxisSpec("out_proj.weight", 1),
        AxisSpec("out_proj.bias", 0),
        AxisSpec("bias_k", 2),
        AxisSpec("bias_v", 2),
    ]


def _mha_set(m: nn.Module, n: int) -> None:
    if n % m.num_heads:
        raise SurgeryError(
            f"MultiheadAttention embed dim {n} is not divisible by num_heads={m.num_heads}"
        )
    m.embed_dim = m.kdim = m.vdim = n
    m.head_dim = n // m.num_heads
    m.out_proj.in_features = m.out_proj.out_features = n


register_resizer(
    nn.MultiheadAttention,
    Resizer(out=_mha_axes, inp=_mha_axes, set_out=_mha_set, set_in=_mha_set, grows=False),
)
