"""Hand-made surgery on ``nn.Sequential`` models for the weight-tracking tests.

Each helper replaces modules with new ones built from chosen rows/columns (what surgery does),
updates the engine's neuron registry, and returns the ``ActionRecord`` surgery would write.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from engine.surgery.records import ActionRecord, SurgeryRecord


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def remove_units(model, engine, layer: int, consumer: int, drop: list[int], merged_into=None):
    """Remove units ``drop`` (local) of Linear ``model[layer]``; columns of ``model[consumer]``.
    With ``merged_into`` (local survivors), each dropped unit's consumer column is first added
    to its survivor's column (an exact fold for duplicates)."""
    name = str(layer)
    ids_before = engine.neurons.ids(name)
    src, dst = model[layer], model[consumer]
    keep = [i for i in range(src.out_features) if i not in drop]
    w2 = dst.weight.detach().clone()
    if merged_into is not None:
        for j, i in zip(drop, merged_into):
            w2[:, i] += w2[:, j]
    params_before, shape_before = count_params(model), list(src.weight.shape)
    model[layer] = _linear(src.weight.detach()[keep], src.bias.detach()[keep])
    model[consumer] = _linear(w2[:, keep], dst.bias.detach())
    engine.layers[name].module = model[layer]
    targets = None if merged_into is None else [ids_before[i] for i in merged_into]
    removed = engine.neurons.remove(name, drop, merged_into=targets)
    merged: dict[int, list[int]] = {}
    for nid, into in zip(removed, targets or []):
        merged.setdefault(into, []).append(nid)
    return ActionRecord(
        index=0, label=f"{'merge' if merged else 'prune'}[0]",
        kind="merge" if merged else "prune", layer=name,
        removed_ids=[] if merged else removed, merged_into=merged,
        width_before=len(ids_before), width_after=len(keep),
        params_before=params_before, params_after=count_params(model),
        shapes_before={f"{name}.weight": shape_before},
        shapes_after={f"{name}.weight": list(model[layer].weight.shape)},
        max_output_change=0.0, exact_expected=True,
    )  # fmt: skip


def grow_unit(model, engine, layer: int, consumer: int, parent: int) -> ActionRecord:
    """Net2Net: copy unit ``parent`` of ``model[layer]``; halve its consumer column."""
    name = str(layer)
    src, dst = model[layer], model[consumer]
    width = src.out_features
    params_before = count_params(model)
    w1 = torch.cat([src.weight.detach(), src.weight.detach()[parent : parent + 1]])
    b1 = torch.cat([src.bias.detach(), src.bias.detach()[parent : parent + 1]])
    w2 = dst.weight.detach().clone()
    w2[:, parent] /= 2
    w2 = torch.cat([w2, w2[:, parent : parent + 1]], dim=1)
    model[layer], model[consumer] = _linear(w1, b1), _linear(w2, dst.bias.detach())
    engine.layers[name].module = model[layer]
    parent_id = engine.neurons.id_of(name, parent)
    added = engine.neurons.grow(name, parents=[parent_id])
    return ActionRecord(
        index=1, label="expand[0]", kind="expand", layer=name, added_ids=added,
        parents=[parent_id], width_before=width, width_after=width + 1,
        params_before=params_before, params_after=count_params(model),
        max_output_change=0.0, exact_expected=True,
    )  # fmt: skip


def surgery_record(engine, actions, widths_before, *, step=None, epoch=None) -> SurgeryRecord:
    return SurgeryRecord(
        fingerprint_before="before", fingerprint_after=engine.fingerprint(), step=step,
        epoch=epoch, time=time.time(), params_before=actions[0].params_before,
        params_after=actions[-1].params_after, widths_before=widths_before,
        widths_after=dict(engine.layout), actions=actions, max_output_change=0.0,
    )  # fmt: skip
