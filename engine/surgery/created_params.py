"""Parameters that surgery created: :func:`add_params` puts them in the optimizer.

A constant folded into a consumer without a bias (and without a BatchNorm right after it, see
:mod:`engine.surgery.bias_fold`) gives that consumer a new bias. It is no replacement of an
old parameter, so :func:`~engine.surgery.optimizer.remap_optimizer` does not see it; the
transaction adds it at commit, after the remap, in the param group of its module's weight.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["add_params"]


def add_params(
    optimizer: torch.optim.Optimizer,
    created: Iterable[tuple[nn.Module, str, nn.Parameter]],
) -> list[nn.Parameter]:
    """Put parameters that surgery created (``(owner module, name, parameter)``, e.g. a bias
    given to a bias-free consumer) in the param group that holds their module's ``weight``,
    appended to its list; returns the ones added.

    They get no state: PyTorch's optimizers create it at their first step (SGD's momentum
    buffer from the first gradient, Adam's moments as zeros with ``step`` 0), exactly as for a
    parameter never stepped before. A parameter whose module's weight the optimizer does not
    hold (frozen, or left out on purpose) is not added; nor is one it holds already. The
    group's list object is kept, so restoring a snapshot taken before
    (:func:`~engine.surgery.optimizer_rollback.restore_optimizer`) removes them again.

    >>> from torch import nn
    >>> layer = nn.Linear(3, 2, bias=False)
    >>> opt = torch.optim.SGD([layer.weight], lr=0.1, momentum=0.9)
    >>> layer.bias = nn.Parameter(torch.zeros(2))
    >>> [tuple(p.shape) for p in add_params(opt, [(layer, "bias", layer.bias)])]
    [(2,)]
    >>> opt.param_groups[0]["params"][1] is layer.bias, layer.bias in opt.state
    (True, False)
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    added = []
    for owner, _name, param in created:
        anchor = getattr(owner, "weight", None)
        if id(param) in held or anchor is None or id(anchor) not in held:
            continue
        for group in optimizer.param_groups:
            if any(p is anchor for p in group["params"]):
                group["params"].append(param)
                held.add(id(param))
                added.append(param)
                break
    return added
