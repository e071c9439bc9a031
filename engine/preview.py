"""Preview a plan's removals on a copy of the model, without changing any shape.

Removed units get zero consumer columns and the survivors absorb the folds, exactly as surgery
will compute them, so ``preview_plan(model, plan, layout)(x)`` is the model the plan would give
for prune, merge and fold actions (expand is not previewed). It is how a plan's quality is
measured before it is applied. Supported consumers: ``nn.Linear`` modules whose inputs are
exactly the layer's units (``in_features == units``), as in MLPs. Real surgery (shapes,
optimizer state, convolutions, residual groups) is ``engine.surgery``'s job.

>>> import torch, torch.nn as nn
>>> from engine.layout import ConsumerSlice, LayerLayout, ModelLayout
>>> from engine.plan.actions import PruneAction
>>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
>>> layout = ModelLayout({"0": LayerLayout("0", "Linear", 3, [0, 1, 2],
...     consumers=[ConsumerSlice("2", "Linear", model[2].weight.detach().double())])})
>>> act = PruneAction(layer="0", local_indices=[1], neuron_ids=[1], reason="dead",
...                   constant_values=[0.5])
>>> preview_plan(model, [act], layout)[2].weight[0, 1].item()
0.0
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action


def _consumers(model: nn.Module, layout: ModelLayout, layer: str) -> list[nn.Linear]:
    info = layout.layers[layer]
    out = []
    for c in info.consumers:
        module = model.get_submodule(c.module)
        if not isinstance(module, nn.Linear) or module.in_features != info.units:
            raise ConfigurationError(
                f"preview supports nn.Linear consumers fed exactly by the layer's units; "
                f"{c.module!r} ({type(module).__name__}) consumes layer {layer!r} otherwise"
            )
        out.append(module)
    if not out:
        raise ConfigurationError(f"layer {layer!r} has no known consumer to preview on")
    return out


@torch.no_grad()
def preview_plan(model: nn.Module, actions: Iterable[Action], layout: ModelLayout) -> nn.Module:
    """A deep copy of ``model`` with prune/merge/fold actions folded into its consumers."""
    actions = actions.actions() if hasattr(actions, "actions") else actions
    out = copy.deepcopy(model)
    for act in actions:
        if act.kind == "expand":
            continue
        for consumer in _consumers(out, layout, act.layer):
            v, c = consumer.weight, consumer.bias
            if c is None:
                raise ConfigurationError(f"consumer of {act.layer!r} has no bias to fold into")
            if act.kind == "prune":
                idx = torch.tensor(act.local_indices)
                values = torch.tensor(act.constant_values or [0.0] * len(idx), dtype=v.dtype)
                c += v[:, idx] @ values
                v[:, idx] = 0
            elif act.kind == "merge":
                v[:, act.keep] += act.alpha * v[:, act.remove]
                c += act.beta * v[:, act.remove]
                v[:, act.remove] = 0
            elif act.kind == "fold":
                keep, remove = torch.tensor(act.keep), torch.tensor(act.remove)
                coef_t = torch.tensor(act.coefficients, dtype=torch.float64)  # |R|×|K|
                vr = v[:, remove].double()
                mu_k = torch.tensor(act.mean_keep, dtype=torch.float64)
                mu_r = torch.tensor(act.mean_remove, dtype=torch.float64)
                v[:, keep] += (vr @ coef_t).to(v.dtype)
                c += (vr @ (mu_r - coef_t @ mu_k)).to(c.dtype)
                v[:, remove] = 0
    return out
