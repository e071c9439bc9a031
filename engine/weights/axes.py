"""Which axis of which tensor holds the units of which tracked layer.

A tracked layer's units lie along the *output* axis of its own weight and bias (rows of a
Linear, filters of a conv, columns of an Embedding), and of the norms that follow it (the
BatchNorm in ``Conv → BN → ReLU``, read from the engine's observation chain); and along the
*input* axis of every module that consumes them (columns of the next Linear, input channels of
the next conv; after ``flatten`` each unit owns ``columns_per_unit`` consecutive columns), read
from the engine's :class:`~engine.layout.ModelLayout`. Comparisons use these axes to match
units by neuron ID when surgery changed a tensor's shape.

>>> import torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
>>> axes = output_axes(model, {"0": 8, "3": 2}, norms={"0": ["1"]})
>>> sorted(axes), axes["1.running_mean"]
(['0.bias', '0.weight', '1.bias', '1.running_mean', '1.running_var', '1.weight', '3.bias', \
'3.weight'], [UnitAxis(dim=0, layer='0', columns_per_unit=1)])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from engine.layers import layer_kind_for
from engine.observe.activations import NORM_TYPES
from engine.weights.schema import UnitAxis

if TYPE_CHECKING:  # pragma: no cover
    from engine.layout import ModelLayout

AxisMap = dict[str, list[UnitAxis]]


def _own_axes(module: nn.Module) -> dict[str, int]:
    """Local tensor name → output axis for a tracked module of a known kind."""
    kind = layer_kind_for(module)
    name = kind.name if kind is not None else ""
    if name in ("linear", "conv"):
        return {"weight": 0, "bias": 0}
    if name == "conv_transpose" and getattr(module, "groups", 1) == 1:
        return {"weight": 1, "bias": 0}
    if name == "embedding":
        return {"weight": 1}
    if name == "attention":
        return {"out_proj.weight": 0, "out_proj.bias": 0}
    return {}  # RNNs and custom kinds: gate-stacked or unknown axes, no IDs


def _claim(axes: AxisMap, tensor: str, axis: UnitAxis) -> None:
    current = axes.setdefault(tensor, [])
    if all(a.dim != axis.dim for a in current):  # coupled layers share an axis: first wins
        current.append(axis)
        current.sort(key=lambda a: a.dim)


def output_axes(
    model: nn.Module,
    widths: Mapping[str, int],
    norms: Mapping[str, Sequence[str]] | None = None,
) -> AxisMap:
    """Output axes of each tracked layer (``widths``: layer → units) and of the norm modules
    listed for it in ``norms`` (layer → module names)."""
    axes: AxisMap = {}
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for layer, units in widths.items():
        module = model.get_submodule(layer)
        for local, dim in _own_axes(module).items():
            tensor = f"{layer}.{local}"
            if len(shapes.get(tensor, ())) > dim and shapes[tensor][dim] == units:
                _claim(axes, tensor, UnitAxis(dim=dim, layer=layer))
        for norm in (norms or {}).get(layer, ()):
            for local, t in model.get_submodule(norm).state_dict().items():
                tensor = f"{norm}.{local}"
                if t.is_floating_point() and t.dim() == 1 and t.shape[0] == units:
                    _claim(axes, tensor, UnitAxis(dim=0, layer=layer))
    return axes


def norms_after(model: nn.Module, observations: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """Norm modules in each layer's observation chain (``Observation.describe()['chain']``
    entries look like ``'1:batchnorm1d'``)."""
    out: dict[str, list[str]] = {}
    for layer, desc in observations.items():
        for label in desc.get("chain", ()):
            name = str(label).rsplit(":", 1)[0]
            try:
                module = model.get_submodule(name)
            except AttributeError:
                continue
            if isinstance(module, NORM_TYPES):
                out.setdefault(layer, []).append(name)
    return out


def _input_dim(module: nn.Module) -> tuple[str, int] | None:
    if isinstance(module, nn.Linear):
        return "weight", 1
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1:
        return "weight", 0 if module.transposed else 1
    if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        return "in_proj_weight", 1
    return None


def consumer_axes(model: nn.Module, layout: ModelLayout, axes: AxisMap) -> AxisMap:
    """Add the input axes of every consumer listed in ``layout`` to ``axes`` (in place)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for layer, info in layout.layers.items():
        for c in info.consumers:
            found = _input_dim(model.get_submodule(c.module))
            if found is None:
                continue
            tensor, dim = f"{c.module}.{found[0]}", found[1]
            width = info.units * c.columns_per_unit
            if len(shapes.get(tensor, ())) > dim and shapes[tensor][dim] == width:
                _claim(
                    axes,
                    tensor,
                    UnitAxis(dim=dim, layer=layer, columns_per_unit=c.columns_per_unit),
                )
    return axes


def check_axes(axes: AxisMap, shapes: Mapping[str, Sequence[int]], widths: Mapping[str, int]):
    """The axes that still fit ``shapes`` (a cached map after surgery changed widths)."""
    out: AxisMap = {}
    for tensor, items in axes.items():
        shape = shapes.get(tensor)
        if shape is None:
            continue
        ok = [
            a
            for a in items
            if a.layer in widths
            and len(shape) > a.dim
            and shape[a.dim] == widths[a.layer] * a.columns_per_unit
        ]
        if ok:
            out[tensor] = ok
    return out
