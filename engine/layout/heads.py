"""Attention blocks whose projections' units are reshaped into heads of one size.

``nn.MultiheadAttention`` knows its heads. Attention written as separate ``query`` / ``key`` /
``value`` Linears (BERT's ``BertSelfAttention``, LLaMA's ``q_proj``…) splits each projection's
output with ``view(…, heads, head_size)``, and the block says its head size in an attribute: a
direct ``nn.Linear`` child of a module (other than ``nn.MultiheadAttention``) with an integer
``attention_head_size`` (BERT family), ``head_dim`` (LLaMA, GPT-NeoX, ViT…) or ``head_size``
greater than 1, whose width is a multiple of it, must keep its width a multiple of it. The
layout makes that the layer's ``width_multiple`` (policies remove or add whole heads) and
surgery refuses plans that break it (``engine.surgery.heads``).

>>> import torch.nn as nn
>>> class Attention(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.attention_head_size = 4
...         self.query, self.key = nn.Linear(8, 8), nn.Linear(8, 8)
>>> head_sizes(nn.Sequential(Attention()))
{'0.query': ('0', 'attention_head_size', 4), '0.key': ('0', 'attention_head_size', 4)}
"""

from __future__ import annotations

from torch import nn

__all__ = ["HEAD_SIZE_ATTRIBUTES", "head_sizes"]

HEAD_SIZE_ATTRIBUTES = ("attention_head_size", "head_dim", "head_size")


def head_sizes(model: nn.Module) -> dict[str, tuple[str, str, int]]:
    """``{linear name: (block name, attribute, head size)}`` for every projection whose units
    are split into heads (see the module docstring)."""
    out = {}
    for block_name, block in model.named_modules():
        if isinstance(block, nn.MultiheadAttention):
            continue
        found = [(a, getattr(block, a, None)) for a in HEAD_SIZE_ATTRIBUTES]
        found = [(a, v) for a, v in found if type(v) is int and v > 1]
        if not found:
            continue
        attr, size = found[0]
        for child_name, child in block.named_children():
            if isinstance(child, nn.Linear) and child.out_features % size == 0:
                name = f"{block_name}.{child_name}" if block_name else child_name
                out[name] = (block_name, attr, size)
    return out
