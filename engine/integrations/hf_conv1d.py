"""Hugging Face's ``Conv1D`` (GPT-2, GPT, …) as a known layer type.

``transformers.pytorch_utils.Conv1D(nf, nx)`` is a Linear layer with a transposed weight
``(nx, nf) = (in, out)``: ``y = x @ W + b``. :func:`register_conv1d` teaches every part of the
engine about it: the layer-kind registry (``nf`` output units, features last), the layout's
consumer registry (weight axis 0 reads the inputs), surgery's resizer (``weight`` dim 1 and
``bias`` follow the outputs, ``weight`` dim 0 the inputs) and Torch-Pruning's dependency graph
(a custom pruner). ``import engine.integrations.transformers`` calls it; it imports
``transformers.pytorch_utils`` only, and only when called.

>>> import torch
>>> from transformers.pytorch_utils import Conv1D
>>> _ = register_conv1d()
>>> pruner = Conv1DPruner()
>>> layer = pruner.prune_out_channels(Conv1D(nf=6, nx=4), [0, 5])
>>> tuple(layer.weight.shape), tuple(layer.bias.shape), layer.nf
((4, 4), (4,), 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from engine.integrations.extras import require
from engine.layers import LayerKind, register_consumer_weight, register_layer_kind
from engine.layout.trace import register_pruner
from engine.surgery.resizers import AxisSpec, Resizer, register_resizer

__all__ = ["Conv1DPruner", "register_conv1d"]


def _keep(size: int, idxs: Sequence[int], device: torch.device) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(size) if i not in drop], dtype=torch.long, device=device)


def _pruned(p: nn.Parameter, keep: torch.Tensor, dim: int) -> nn.Parameter:
    new = nn.Parameter(p.detach().index_select(dim, keep), requires_grad=p.requires_grad)
    if p.grad is not None:
        new.grad = p.grad.index_select(dim, keep)
    return new


class Conv1DPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's view of ``Conv1D``: outputs on weight dim 1 (and the bias), inputs on
    weight dim 0. Torch-Pruning uses it to build groups and to count parameters per unit;
    the engine's surgery resizes through its own resizer."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(layer.nf, idxs, layer.weight.device)
        layer.weight = _pruned(layer.weight, keep, 1)
        if layer.bias is not None:
            layer.bias = _pruned(layer.bias, keep, 0)
        layer.nf = int(keep.numel())
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(layer.nx, idxs, layer.weight.device)
        layer.weight = _pruned(layer.weight, keep, 0)
        layer.nx = int(keep.numel())
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.nf)

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.nx)


def _set(name: str):
    def setter(m: nn.Module, n: int) -> None:
        setattr(m, name, int(n))

    return setter


_REGISTERED: list[type] = []


def register_conv1d() -> type:
    """Register ``transformers.pytorch_utils.Conv1D`` everywhere (idempotent); returns it."""
    conv1d = require("transformers.pytorch_utils", "transformers").Conv1D
    if conv1d in _REGISTERED:
        return conv1d
    register_layer_kind(conv1d, LayerKind("linear", units=lambda m: int(m.nf)))
    register_consumer_weight(conv1d, "weight", 0)
    register_resizer(
        conv1d,
        Resizer(
            out=lambda m: [AxisSpec("weight", 1), AxisSpec("bias", 0)],
            inp=lambda m: [AxisSpec("weight", 0)],
            set_out=_set("nf"),
            set_in=_set("nx"),
            consumes=True,
            consumer_weight=("weight", 0),
            bias="bias",
        ),
    )
    register_pruner(conv1d, Conv1DPruner())
    _REGISTERED.append(conv1d)
    return conv1d
