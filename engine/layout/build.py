"""Build a :class:`~engine.layout.ModelLayout` from a live model with Torch-Pruning's DepGraph.

One trace of the model (``tp.DependencyGraph().build_dependency``) and one pruning group per
tracked layer (all its units at once) give, for every tracked layer:

``consumers``
    Every ``nn.Linear`` / ``nn.Conv*d`` / ``nn.ConvTranspose*d`` whose *input* channels are in
    the layer's group, as a ``(rows, units)`` float64 CPU matrix (see
    :class:`~engine.layout.ConsumerSlice`). Columns are mapped back to units with the group's
    root indices, so a Linear after ``flatten`` gives ``columns_per_unit = H·W`` and, for unit
    ``j``, rows ``o·HW + s`` hold ``weight[o, j·HW + s]`` (output-major, position-minor; the
    same order for every unit). A conv kernel ``(out, in, *k)`` gives rows ``(o, *k)``. The
    in-projection of an ``nn.MultiheadAttention`` that reads the units is a consumer too
    (``in_proj_weight[:, cols]``, never ``tracked_layer``: its rows shrink with the same
    units). Grouped and depthwise convolutions give no slice (see ``supports``). A layer is
    never its own consumer.
``coupled``
    The other tracked layers whose *output* axis is in the same group (residual adds, a
    depthwise conv right after the layer, an embedding feeding a residual stream): removing a
    unit of one removes it from all of them.
``is_output``
    True when the group's unit axis reaches a tensor the model returns: a pass-through member
    of the group (the layer itself, a norm, an activation, a reshape, an attention block, …;
    not an in-channel consumer, whose output is another axis) is a root of the traced graph or
    is the ``grad_fn`` of a returned tensor. Also True when the group has no consumer of any
    kind (nothing inside the model multiplies the units). The final logits Linear, the last
    conv of a fully convolutional net and a residual stream returned after a LayerNorm all
    have ``is_output=True``.
``supports``
    Which plan kinds surgery may apply, starting from ``{"prune", "merge", "fold", "expand"}``
    for Linear / Conv / ConvTranspose / Embedding and narrowed by the group's content:

    * ``nn.MultiheadAttention`` (tracked, or anywhere in the group): ``{"prune"}`` (the embed
      dim must stay divisible by ``num_heads``: surgery validates the count);
    * a depthwise conv in the group (or tracked): ``{"prune"}``; a GroupNorm with
      ``1 < num_groups < num_channels``: ``{"prune"}`` (divisibility again); an unwrapped
      ``nn.Parameter`` (positional embedding, layer scale): ``{"prune"}``; a Linear/Conv whose
      input *and* output axes are both in the group (``h = h + f(h)``): ``{"prune"}``;
    * a member that holds the units at an offset or not in unit order (one branch of a
      concat): no ``"expand"`` (growth appends at the end of every axis);
    * a grouped, non-depthwise conv (tracked, consumer or coupled), an RNN/LSTM/GRU anywhere
      in the group, or a group that reaches a model *input* (a residual stream that starts at
      the raw input: its width is fixed by the caller's data): ``frozenset()``;
    * RNN/LSTM/GRU layers themselves: ``frozenset()``, ``is_output=False``, no consumers
      (surgery does not support RNN hidden units; Torch-Pruning's LSTM pruner is single-layer
      only);
    * a layer the trace never reaches (unused in forward, only feeding non-differentiable ops,
      or a type Torch-Pruning does not know, e.g. ``nn.Bilinear``, ``nn.EmbeddingBag``), or
      whose group Torch-Pruning cannot build: ``frozenset()`` and ``params_per_unit=0``.

    LayerNorm in a group does not narrow ``supports``: pruning through it is approximate and
    surgery measures the error (see DESIGN.md, decision 5).
``width_multiple``
    The width must stay a multiple of it: the least common multiple of the ``num_heads`` of
    every attention block, the head size of every Hugging Face style q/k/v projection
    (``engine.layout.heads``) and the ``num_groups`` of every GroupNorm in the group (1
    without).
``params_per_unit``
    Parameters that disappear when one unit is removed: for every member of the group, the
    parameter count along its pruned axis times the number of its indices per unit (a Linear
    output: ``in + bias``; a Linear input: ``out`` per column, ``out·H·W`` after flatten; a
    conv input: ``out·prod(k)/groups``; BatchNorm/GroupNorm/InstanceNorm: 2 when affine;
    LayerNorm: weight and bias; an attention block: ``8·E`` for one of its ``E`` embed dims).
    It is exact for one unit (the tests prune one with Torch-Pruning and compare);
    ``ModelLayout.params_after`` corrects for pairs of shrinking tracked layers. When units cost
    different amounts (a split with unequal parts) it is the mean, rounded.

Tracing runs one forward pass of ``example_inputs`` in eval mode with autograd on (Torch-Pruning
reads the autograd graph and refuses ``torch.no_grad``; nothing is back-propagated, so
parameters, their ``.grad`` and the buffers are untouched; weights are read under
``torch.no_grad``). A batch of one is enough (eval-mode BatchNorm accepts it). Afterwards
every module's train/eval mode and every parameter's ``requires_grad`` flag are restored, also
when the forward raises. Hooks on the model run during that forward: the caller should pause
the engine's tracking hooks so that the example batch does not enter the statistics
(``build_layout`` itself works with hooks attached).

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> layout = build_layout(model, {"0": list(range(8)), "2": [8, 9, 10]}, torch.randn(2, 4))
>>> [(c.module, tuple(c.weight.shape)) for c in layout.layers["0"].consumers]
[('2', (3, 8))]
>>> layout.layers["0"].params_per_unit, layout.layers["2"].is_output, layout.total_params
(8, True, 67)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops as tp_ops

from engine.errors import ConfigurationError
from engine.layers import consumer_weight_of
from engine.layout.heads import head_sizes
from engine.layout.members import (
    DependencyMember,
    appendable,
    classify_member,
    unit_positions,
)
from engine.layout.model import ALL_KINDS, ConsumerSlice, LayerLayout, ModelLayout
from engine.layout.params import is_depthwise, params_per_index, self_overlap
from engine.layout.trace import ForwardFn, trace_graph

__all__ = ["build_layout", "build_layout_and_graph"]


_PRUNE_ONLY = frozenset({"prune"})
_NOTHING: frozenset[str] = frozenset()
_RNN_TYPES = (nn.RNNBase,)
_WEIGHTED_CONSUMERS = (nn.Linear, nn.modules.conv._ConvNd)
_OPT = tp_ops.OPTYPE


def build_layout(
    model: nn.Module,
    layers: Mapping[str, Sequence[int]],
    example_inputs: Any,
    *,
    forward_fn: ForwardFn | None = None,
) -> ModelLayout:
    """The layout of ``model``'s tracked layers.

    Args:
        model: the live model (not modified: parameters, buffers, modes and flags come back
            exactly as they were).
        layers: tracked layer name (as in ``model.named_modules()``) → its neuron IDs, in
            local-index order; ``len(ids)`` must equal the layer's width.
        example_inputs: a tensor (called as ``model(x)``), a tuple or list (``model(*x)``) or a
            dict (``model(**x)``), on the model's device; a small batch is enough.
        forward_fn: ``forward_fn(model, example_inputs) -> output`` for other call styles.

    Raises:
        ConfigurationError: an unknown layer name, a width that does not match the IDs, or a
            model output that does not depend on any parameter.
    """
    return build_layout_and_graph(model, layers, example_inputs, forward_fn=forward_fn)[0]


def build_layout_and_graph(
    model: nn.Module,
    layers: Mapping[str, Sequence[int]],
    example_inputs: Any,
    *,
    forward_fn: ForwardFn | None = None,
) -> tuple[ModelLayout, tp.DependencyGraph]:
    """:func:`build_layout` and the dependency graph it was read from (one trace; surgery
    resolves its coupled groups on the same graph)."""
    named = dict(model.named_modules())
    for name in layers:
        if name not in named or not name:
            raise ConfigurationError(
                f"build_layout: {name!r} is not a sub-module name of {type(model).__name__}"
            )
    tracked = {name: named[name] for name in layers}
    total_params = sum(p.numel() for p in model.parameters())

    graph, input_fns, output_fns = trace_graph(model, example_inputs, forward_fn)
    ctx = _Context(
        graph=graph,
        names={m: n for n, m in named.items()},
        tracked={m: n for n, m in tracked.items()},
        input_fns=input_fns,
        output_fns=output_fns,
        head_size={named[n]: size for n, (_, _, size) in head_sizes(model).items()},
    )
    out: dict[str, LayerLayout] = {}
    with torch.no_grad():
        for name, ids in layers.items():
            out[name] = _layer_layout(ctx, name, tracked[name], list(ids))
    return ModelLayout(layers=out, total_params=total_params), graph


# --- one layer -----------------------------------------------------------------------------
@dataclass
class _Context:
    graph: tp.DependencyGraph
    names: dict[Any, str]
    tracked: dict[nn.Module, str]
    input_fns: set[Any]
    output_fns: set[Any]
    slices: dict[tuple[Any, ...], tuple[torch.Tensor, int] | None] = field(default_factory=dict)
    head_size: dict[nn.Module, int] = field(default_factory=dict)  # q/k/v Linears → head size


@dataclass
class _Facts:
    supports: frozenset[str] = ALL_KINDS
    consumers: list[ConsumerSlice] = field(default_factory=list)
    coupled: list[str] = field(default_factory=list)
    any_consumer: bool = False
    reaches_output: bool = False
    params: float = 0.0
    multiple: int = 1


def _layer_layout(ctx: _Context, name: str, module: nn.Module, ids: list[int]) -> LayerLayout:
    units = len(ids)
    base = LayerLayout(name=name, module_type=type(module).__name__, units=units, neuron_ids=ids)
    if isinstance(module, _RNN_TYPES) or module not in ctx.graph.module2node:
        base.supports = _NOTHING
        return base
    pruner = ctx.graph.get_pruner_of_module(module)
    width = None if pruner is None else pruner.get_out_channels(module)
    if width is None:
        base.supports = _NOTHING
        return base
    if width != units:
        raise ConfigurationError(
            f"build_layout: layer {name!r} has {width} output units but {units} neuron IDs"
        )
    try:
        group = ctx.graph.get_pruning_group(module, pruner.prune_out_channels, list(range(units)))
    except Exception:  # Torch-Pruning cannot follow this graph (e.g. an unknown split)
        base.supports = _NOTHING
        return base

    facts = _Facts(supports=_own_supports(module))
    members = [classify_member(ctx.graph, item) for item in group]
    if any(_out_of_range(ctx, m) for m in members):  # a fused q/k/v seen through its split
        base.supports = _NOTHING
        return base
    for member in members:
        _visit(ctx, module, member, units, facts)
    overlap = self_overlap(members, units)
    if overlap is not None:  # a Linear/Conv reads and writes the same units (h + f(h))
        facts.supports &= _PRUNE_ONLY
        facts.params -= overlap

    base.supports = facts.supports
    base.consumers = facts.consumers
    base.coupled = [n for n in ctx.tracked.values() if n in facts.coupled]
    base.is_output = facts.reaches_output or not facts.any_consumer
    base.params_per_unit = round(facts.params)
    base.width_multiple = facts.multiple
    return base


def _appendable(ctx: _Context, m: DependencyMember, units: int) -> bool:
    """Whether growth can append new units at the end of this member's axis."""
    pruner = ctx.graph.get_pruner_of_module(m.module)
    if pruner is None or isinstance(m.module, nn.Parameter):
        return True  # Torch-Pruning's own ops (add, concat, flatten…): judged at the modules
    size = (pruner.get_in_channels if m.is_in else pruner.get_out_channels)(m.module)
    return size is None or appendable(unit_positions(m.idxs, m.roots, units), int(size))


def _out_of_range(ctx: _Context, m: DependencyMember) -> bool:
    """Whether Torch-Pruning mapped the units to positions past the member's axis (it could
    not follow the ops between, e.g. GPT-2's fused ``c_attn`` split into q, k, v)."""
    pruner = ctx.graph.get_pruner_of_module(m.module)
    if pruner is None or isinstance(m.module, nn.Parameter) or not m.idxs:
        return False
    size = (pruner.get_in_channels if m.is_in and not m.is_out else pruner.get_out_channels)(
        m.module
    )
    return size is not None and max(m.idxs) >= int(size)


def _own_supports(module: nn.Module) -> frozenset[str]:
    if isinstance(module, nn.MultiheadAttention):
        return _PRUNE_ONLY
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return _PRUNE_ONLY if is_depthwise(module) else _NOTHING
    return ALL_KINDS


def _visit(ctx: _Context, root: nn.Module, m: DependencyMember, units: int, facts: _Facts) -> None:
    module, node = m.module, m.node
    facts.params += len(m.idxs) * params_per_index(ctx.graph, module, m) / units
    consumes = m.is_in and (
        isinstance(module, (*_WEIGHTED_CONSUMERS, nn.MultiheadAttention, nn.LSTM))
        or (isinstance(module, nn.Module) and consumer_weight_of(module) is not None)
    )
    facts.any_consumer |= consumes
    passes = m.is_out  # the unit axis goes on through this member to its output
    if passes and (not node.outputs or node.grad_fn in ctx.output_fns or node.type == _OPT.OUTPUT):
        facts.reaches_output = True
    if node.grad_fn in ctx.input_fns:
        facts.supports = _NOTHING  # the group reaches a model input: its width is not ours

    if (m.is_in or m.is_out) and not _appendable(ctx, m, units):
        facts.supports -= {"expand"}  # units at an offset (a concat): growth cannot append
    if isinstance(module, nn.MultiheadAttention):  # the width must stay a multiple of …
        facts.multiple = math.lcm(facts.multiple, module.num_heads)
    elif isinstance(module, nn.GroupNorm):
        facts.multiple = math.lcm(facts.multiple, module.num_groups)
    elif m.is_out and module in ctx.head_size:  # Hugging Face style q/k/v: whole heads
        facts.multiple = math.lcm(facts.multiple, ctx.head_size[module])
    # narrow what surgery supports
    if isinstance(module, (nn.MultiheadAttention, nn.Parameter)):
        facts.supports &= _PRUNE_ONLY
    elif isinstance(module, _RNN_TYPES):
        facts.supports = _NOTHING
    elif isinstance(module, nn.GroupNorm) and 1 < module.num_groups < module.num_channels:
        facts.supports &= _PRUNE_ONLY
    elif isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        facts.supports &= _PRUNE_ONLY if is_depthwise(module) else _NOTHING
    name = ctx.names.get(module)
    if module is not root and m.is_out and module in ctx.tracked:
        facts.coupled.append(ctx.tracked[module])
    if consumes and module is not root and name is not None:
        key = (id(module), tuple(m.idxs), tuple(m.roots), units)
        if key not in ctx.slices:  # coupled layers share their group's consumers
            ctx.slices[key] = _consumer_weight(module, m.idxs, m.roots, units)
        weight = ctx.slices[key]
        if weight is not None:
            facts.consumers.append(
                ConsumerSlice(
                    module=name,
                    module_type=type(module).__name__,
                    weight=weight[0],
                    columns_per_unit=weight[1],
                    tracked_layer=None
                    if isinstance(module, nn.MultiheadAttention)
                    else ctx.tracked.get(module),
                )
            )


# --- consumer weights ----------------------------------------------------------------------
def _columns_by_unit(idxs: list[int], roots: list[int], units: int) -> list[list[int]]:
    cols: list[list[int]] = [[] for _ in range(units)]
    for idx, root in zip(idxs, roots):
        if root is not None and 0 <= root < units:
            cols[root].append(idx)
    return [sorted(c) for c in cols]


def _consumer_weight(
    module: Any, idxs: list[int], roots: list[int], units: int
) -> tuple[torch.Tensor, int] | None:
    """``(V, columns_per_unit)``: the consumer's weights on each unit as ``(rows, units)``.

    The consumer's input axis is moved last (Linear ``(out, in)``, conv ``(out, *k, in)``,
    transposed conv ``(out, *k, in)``), so a unit's column holds its entries in the order
    ``(out, *k, column)``; a unit that feeds fewer columns than another is zero-padded.
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1:
            return None  # grouped / depthwise: one unit meets a slice of one group only
        weight, axis = module.weight, 0 if module.transposed else 1
    elif isinstance(module, nn.Linear):
        weight, axis = module.weight, 1
    elif isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is None:
            return None  # separate q/k/v projections: Torch-Pruning only prunes their rows
        weight, axis = module.in_proj_weight, 1
    elif isinstance(module, nn.Module) and (spec := consumer_weight_of(module)) is not None:
        weight, axis = module.get_parameter(spec[0]), spec[1]  # a registered type (Conv1D)
    else:
        return None
    cols = _columns_by_unit(idxs, roots, units)
    per_unit = max(len(c) for c in cols)
    if per_unit == 0:
        return None
    uniform = all(len(c) == per_unit for c in cols)
    w = weight.detach().movedim(axis, -1)  # (*rows, in)
    flat = [i for c in cols for i in c + [0] * (per_unit - len(c))]
    if flat != list(range(w.shape[-1])):
        w = w.index_select(-1, torch.tensor(flat, dtype=torch.long, device=w.device))
    src = w.reshape(*w.shape[:-1], units, per_unit).movedim(-2, 0)  # (units, *rows, per_unit)
    dst = torch.empty(src.shape, dtype=torch.float64)
    dst.copy_(src)  # one copy: gather, cast and move to the CPU
    if not uniform:
        mask = torch.zeros(units, per_unit, dtype=torch.float64)
        for u, c in enumerate(cols):
            mask[u, : len(c)] = 1.0
        dst.mul_(mask.reshape(units, *([1] * (dst.dim() - 2)), per_unit))
    return dst.reshape(units, -1).T, per_unit
