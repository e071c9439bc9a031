"""A hand-built layout for chains of Linear layers (independent of the Torch-Pruning builder),
and ``apply_masked``: the plan's function-level effect via ``engine.preview``."""

from __future__ import annotations

from torch import nn

from engine import NeuronEngine
from engine.layout import ConsumerSlice, LayerLayout, ModelLayout
from engine.preview import preview_plan


def linear_chain_layout(engine: NeuronEngine) -> ModelLayout:
    """Layout of an nn.Sequential of Linear layers (each consumed by the next Linear)."""
    names = list(engine.layers)
    layers: dict[str, LayerLayout] = {}
    total = sum(p.numel() for p in engine.model.parameters())
    for k, name in enumerate(names):
        module = engine.layers[name].module
        consumers, per_unit = [], module.in_features + 1
        if k + 1 < len(names):
            nxt = engine.layers[names[k + 1]].module
            consumers.append(
                ConsumerSlice(
                    names[k + 1], "Linear", nxt.weight.detach().double().clone(), 1, names[k + 1]
                )
            )
            per_unit += nxt.out_features
        layers[name] = LayerLayout(
            name,
            "Linear",
            module.out_features,
            engine.neurons.ids(name),
            is_output=k + 1 == len(names),
            params_per_unit=per_unit,
            consumers=consumers,
        )
    return ModelLayout(layers, total)


def apply_masked(model: nn.Sequential, actions) -> nn.Module:
    engine = NeuronEngine(model)
    return preview_plan(model, actions, linear_chain_layout(engine))
