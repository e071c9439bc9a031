"""How many parameters disappear with one unit of a dependency-group member.

Used by ``engine.layout.build`` to fill ``LayerLayout.params_per_unit``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch_pruning as tp
from torch import nn

from engine.layout.members import DependencyMember

WEIGHTED_CONSUMERS = (nn.Linear, nn.modules.conv._ConvNd)


def is_depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    return conv.groups == conv.out_channels and conv.out_channels > 1


def params_per_index(graph: tp.DependencyGraph, module: Any, m: DependencyMember) -> int:
    """Parameters removed from ``module`` when one index of its pruned axis goes."""
    if isinstance(module, nn.Parameter):
        dim = m.node.pruning_dim
        return module.numel() // max(1, module.shape[dim])
    if not isinstance(module, nn.Module) or not any(True for _ in module.parameters()):
        return 0
    if isinstance(module, nn.Linear):
        if m.is_out:
            return module.in_features + (module.bias is not None)
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        bias = int(module.bias is not None)
        if is_depthwise(module):
            return module.weight.numel() // module.out_channels + bias
        if m.is_out:
            return module.weight.numel() // module.out_channels + bias
        return module.weight.numel() // module.in_channels
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return 2 if module.affine else 0
    if isinstance(module, nn.GroupNorm):
        return 2 if module.affine else 0
    if isinstance(module, nn.LayerNorm):
        return sum(p.numel() // p.shape[-1] for p in (module.weight, module.bias) if p is not None)
    if isinstance(module, nn.PReLU):
        return 1 if module.num_parameters > 1 else 0
    if isinstance(module, nn.Embedding):
        return module.num_embeddings
    if isinstance(module, nn.MultiheadAttention):
        return _mha_params_per_index(module)
    if isinstance(module, nn.LSTM) and m.is_in and not m.is_out:
        gates = 4 * (module.proj_size or module.hidden_size)
        return gates * (2 if module.bidirectional else 1)
    return _simulated_params_per_index(graph, module, m)


def _mha_params_per_index(mha: nn.MultiheadAttention) -> int:
    """Torch-Pruning removes one embed dim from q, k, v, the in-projection and out_proj."""
    e = mha.embed_dim
    n = 0
    if mha.in_proj_weight is not None:
        n += 3 * e * e - 3 * (e - 1) * (e - 1)  # 3 rows and one column
    for w in (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight):
        if w is not None:
            n += w.shape[1]  # one row each
    if mha.in_proj_bias is not None:
        n += 3
    n += sum(1 for b in (mha.bias_k, mha.bias_v) if b is not None)
    out = mha.out_proj
    n += out.weight.numel() - (out.out_features - 1) * (out.in_features - 1)
    n += int(out.bias is not None)
    return n


def _simulated_params_per_index(
    graph: tp.DependencyGraph, module: nn.Module, m: DependencyMember
) -> int:
    """Any other prunable module (a registered custom pruner): prune one index of a copy."""
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or not m.idxs:
        return 0
    before = sum(p.numel() for p in module.parameters())
    twin = copy.deepcopy(module)
    try:
        pruner.pruning_dim = m.node.pruning_dim
        (pruner.prune_out_channels if m.is_out else pruner.prune_in_channels)(twin, [m.idxs[0]])
    except Exception:
        return 0
    return before - sum(p.numel() for p in twin.parameters())


def self_overlap(members: list[DependencyMember], units: int) -> float | None:
    """Entries counted twice per unit by Linear/Conv layers pruned on both axes in the group.

    ``None`` when no such layer exists. A weight whose rows and columns both shrink loses the
    entries where a unit's rows meet its own columns once, not twice.
    """
    by_module: dict[int, list[DependencyMember]] = {}
    for m in members:
        if isinstance(m.module, WEIGHTED_CONSUMERS) and not (
            isinstance(m.module, nn.modules.conv._ConvNd) and is_depthwise(m.module)
        ):
            by_module.setdefault(id(m.module), []).append(m)
    total: float | None = None
    for ms in by_module.values():
        ins = [m for m in ms if m.is_in and not m.is_out]
        outs = [m for m in ms if m.is_out and not m.is_in]
        if ins and outs:
            w = ms[0].module.weight
            per_entry = w.numel() // (w.shape[0] * w.shape[1])
            rows, cols = len(outs[0].idxs) / units, len(ins[0].idxs) / units
            total = (total or 0.0) + rows * cols * per_entry
    return total
