"""Hugging Face style attention: projections whose units are reshaped into heads of one size.

``nn.MultiheadAttention`` knows its heads (``engine.surgery.checks`` keeps its embed dim
divisible by ``num_heads``). Attention written as separate ``query`` / ``key`` / ``value``
Linears (BERT's ``BertSelfAttention``, LLaMA's ``q_proj``…) splits each projection's output
with ``view(…, heads, head_size)``: a width that is not a multiple of the head size fails
there, far from the plan. The block says its head size in an attribute, so a direct
``nn.Linear`` child of a module (other than ``nn.MultiheadAttention``) with an integer
``attention_head_size`` (BERT family), ``head_dim`` (LLaMA, GPT-NeoX, ViT…) or ``head_size``
greater than 1, whose width is a multiple of it, must keep its width a multiple of it: plans
remove or add whole heads' worth of units. (An output projection of such a block is held to
the same rule: conservative, and its width is the model's hidden size, a multiple anyway.)

Which projections these are is the layout's :func:`engine.layout.heads.head_sizes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from torch import nn

from engine.layout.heads import HEAD_SIZE_ATTRIBUTES, head_sizes
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.groups import GroupMember

__all__ = ["HEAD_SIZE_ATTRIBUTES", "head_problems", "head_sizes"]


def _change(action: Any) -> int:
    if isinstance(action, ExpandAction):
        return action.count
    if isinstance(action, PruneAction):
        return -len(action.local_indices)
    if isinstance(action, FoldAction):
        return -len(action.remove)
    return -1 if isinstance(action, MergeAction) else 0


def head_problems(
    labelled: list[tuple[str, Any]], groups: Mapping[str, list[GroupMember]], model: nn.Module
) -> list[str]:
    """One problem per block whose projections the plan would leave at a width that is not a
    multiple of the block's head size, naming the first action, the layers and the multiple."""
    sizes = head_sizes(model)
    if not sizes:
        return []
    delta: dict[str, int] = defaultdict(int)
    width: dict[str, int] = {}
    first: dict[str, str] = {}
    for label, action in labelled:
        for m in groups.get(action.layer, []):
            if m.side == "out" and m.name in sizes:
                delta[m.name] += _change(action) * (len(m.positions[0]) if m.positions else 1)
                width[m.name] = m.size
                first.setdefault(m.name, f"{label} (layer {action.layer!r})")
    bad: dict[tuple[str, str], list[str]] = defaultdict(list)  # (first label, block): layers
    for name, d in delta.items():
        if (width[name] + d) % sizes[name][2]:
            bad[(first[name], sizes[name][0])].append(name)
    problems = []
    order = {name: k for k, name in enumerate(sizes)}
    for (where, block), names in bad.items():
        names.sort(key=order.__getitem__)
        _, attr, size = sizes[names[0]]
        after = width[names[0]] + delta[names[0]]
        problems.append(
            f"{where}: {', '.join(map(repr, names))} would have {after} units, not a multiple "
            f"of the attention head size {size} ({block!r}.{attr}); remove or add whole heads "
            f"({size} units at a time)"
        )
    return problems
