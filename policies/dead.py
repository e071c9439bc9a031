"""Prune dead and constant units.

A unit is *dead* when it sits behind a rectifier and its firing rate is at most
``firing_threshold``; it is *constant* when its observed range is within
``constant_tolerance·max(1, |mean|)``. Either way its mean is recorded as the constant value
surgery folds into the consumer's bias, which makes the removal exact for truly constant units.

>>> DeadUnitPolicy().settings.min_samples
100
"""

from __future__ import annotations

import torch
from pydantic import Field

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.stats.snapshot import LayerSnapshot
from policies.base import PerLayerPolicy, PolicySettings, register_policy
from policies.guards import Guard


class DeadSettings(PolicySettings):
    firing_threshold: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="< 1: every unit fires at most always"
    )
    constant_tolerance: float = Field(default=1e-6, ge=0.0)
    min_samples: int = Field(default=100, ge=1)


@register_policy
class DeadUnitPolicy(PerLayerPolicy):
    name = "dead"
    shrinks = True
    costless = True  # a dead or constant unit is replaced by its mean: nothing to scale
    Settings = DeadSettings

    def propose_layer(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard
    ) -> list[Action]:
        s = self.settings
        spread = layer.maximum - layer.minimum
        constant = spread <= s.constant_tolerance * layer.mean.abs().clamp_min(1.0)
        dead = (layer.firing_rate <= s.firing_threshold) if layer.rectified else constant
        actions: list[Action] = []
        for reason, mask in (("dead", dead), ("constant", constant & ~dead)):
            actions += self.prune_candidates(
                name,
                layer,
                guard,
                torch.nonzero(mask).flatten().tolist(),
                reason,
                firing_rate=layer.firing_rate,
                variance=layer.variance,
                mean=layer.mean,
            )
        return actions
