"""Where a constant folded into a bias-free consumer goes: the norm right after it, or a new bias.

Removing a unit whose activation is the constant ``c`` (a dead ReLU unit, the offset of a
merge) takes ``contrib = Σ c·W[:, unit]`` out of the consumer's pre-activation output, so a
fold adds ``contrib`` back. A consumer without a bias (ResNet's ``conv → BatchNorm``) either
has its output read by one ``BatchNorm``/``InstanceNorm`` and nothing else (no nonlinearity,
no add in between: the Torch-Pruning graph node of the consumer has that norm as its only
output), or surgery gives it a new zero bias (added to the optimizer at commit, in its
weight's param group, see :func:`~engine.surgery.created_params.add_params`).

Into the norm, the constant goes to ``running_mean -= contrib`` (not to the affine shift):

* eval mode: ``γ·(x − contrib − (μ − contrib))/σ + β`` is the old output exactly;
* train mode: batch statistics subtract the batch mean, which already drops any per-channel
  constant, so the output is unchanged whatever the fold; and the running mean keeps moving in
  step (``(1−m)(μ − contrib) + m(x̄ − contrib)`` is the old update ``− contrib``).

Folding into ``β`` (``β += γ·contrib/σ``) would be exact in eval mode only: in train mode the
batch mean removes the constant and the extra shift would stay. A norm without running
statistics (``track_running_stats=False``) removes the constant in both modes by itself:
nothing to fold.

>>> import torch, torch.nn as nn
>>> from engine.layout.trace import trace_graph
>>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False),
...                       nn.BatchNorm2d(2))
>>> graph, _, _ = trace_graph(model, torch.randn(2, 3, 4, 4), None)
>>> norm_after(graph, model[2]) is model[3], norm_after(graph, model[0])
(True, None)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch_pruning as tp
from torch import nn

from engine.surgery.groups import GroupMember
from engine.surgery.resizers import resizer_for

__all__ = ["norm_after", "norms_after"]

_NORM = nn.modules.batchnorm._NormBase


def norm_after(graph: tp.DependencyGraph, module: nn.Module) -> nn.Module | None:
    """The BatchNorm/InstanceNorm that alone reads ``module``'s output directly, or None."""
    node = graph.module2node.get(module)
    if node is None or len(node.outputs) != 1:
        return None
    follower = node.outputs[0].module
    if not isinstance(follower, _NORM):
        return None
    out = getattr(module, "out_channels", getattr(module, "out_features", None))
    return follower if follower.num_features == out else None


def norms_after(
    graph: tp.DependencyGraph, groups: Mapping[str, list[GroupMember]]
) -> dict[int, nn.Module]:
    """``id(consumer) -> norm`` for every bias-free consumer of the groups that a norm
    follows directly (see :func:`norm_after`)."""
    out: dict[int, nn.Module] = {}
    for members in groups.values():
        for m in members:
            resizer = resizer_for(m.module)
            if m.side != "in" or not resizer.consumes or id(m.module) in out:
                continue
            head, _, name = (resizer.bias or "bias").rpartition(".")
            owner = m.module.get_submodule(head) if head else m.module
            if getattr(owner, name, None) is not None:
                continue
            norm = norm_after(graph, m.module)
            if norm is not None:
                out[id(m.module)] = norm
    return out
