"""Prune dormant units (ReDo-style): mean |a| far below the layer's typical unit.

The dormancy score of unit i is ``mean|a_i| / mean_j mean|a_j|`` (Sokar et al. 2023); units
with score ≤ ``dormancy_threshold`` (and, if set, firing rate ≤ ``max_firing_rate``) are pruned,
least active first, at most ``max_fraction`` of a layer per plan. Their mean is folded into the
consumer's bias.

>>> LowActivityPolicy(dormancy_threshold=0.05).settings.dormancy_threshold
0.05
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.stats.snapshot import LayerSnapshot
from policies.base import PerLayerPolicy, Policy, PolicySettings, register_policy
from policies.guards import Guard


class LowActivitySettings(PolicySettings):
    dormancy_threshold: float = Field(default=0.1, ge=0.0)
    max_firing_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    max_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    min_samples: int = Field(default=100, ge=1)


@register_policy
class LowActivityPolicy(PerLayerPolicy):
    name = "low_activity"
    Settings = LowActivitySettings
    shrinks = True

    def scaled(self, factor: float) -> Policy:
        """At most ``factor`` times the usual share of a layer per plan."""
        return self.with_settings(max_fraction=self.settings.max_fraction * factor)

    def propose_layer(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard
    ) -> list[Action]:
        s = self.settings
        typical = layer.mean_abs.mean()
        if not torch.isfinite(typical) or typical <= 0:
            return []
        score = layer.mean_abs / typical
        mask = score <= s.dormancy_threshold
        if s.max_firing_rate is not None:
            mask &= layer.firing_rate <= s.max_firing_rate
        order = torch.argsort(score[mask], stable=True)
        return self.prune_candidates(
            name,
            layer,
            guard,
            torch.nonzero(mask).flatten()[order].tolist(),
            "low_activity",
            limit=math.floor(s.max_fraction * layer.num_units),
            layer_evidence={"layer_mean_abs": round(float(typical), 6)},
            dormancy_score=score,
            mean_abs=layer.mean_abs,
            firing_rate=layer.firing_rate,
        )
