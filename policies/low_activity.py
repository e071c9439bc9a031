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
from engine.plan.actions import Action, PruneAction
from engine.snapshot import StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.common import enough_samples, floats, ids
from policies.guards import Guard


class LowActivitySettings(PolicySettings):
    dormancy_threshold: float = Field(default=0.1, ge=0.0)
    max_firing_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    max_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    min_samples: int = Field(default=100, ge=1)


@register_policy
class LowActivityPolicy(Policy):
    name = "low_activity"
    Settings = LowActivitySettings

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        s = self.settings
        guard = guard or Guard(layout)
        actions: list[Action] = []
        for name, layer in snapshot.layers.items():
            if name not in layout.layers or not enough_samples(layer, s.min_samples):
                continue
            typical = layer.mean_abs.mean()
            if not torch.isfinite(typical) or typical <= 0:
                continue
            score = layer.mean_abs / typical
            mask = score <= s.dormancy_threshold
            if s.max_firing_rate is not None:
                mask &= layer.firing_rate <= s.max_firing_rate
            order = torch.argsort(score[mask], stable=True)
            candidates = torch.nonzero(mask).flatten()[order].tolist()
            cap = min(guard.removable(name, "prune"), math.floor(s.max_fraction * layer.num_units))
            idx = guard.free(name, candidates)[:cap]
            if not idx:
                continue
            guard.claim(name, idx, removes=len(idx))
            sel = torch.tensor(idx)
            actions.append(
                PruneAction(
                    layer=name,
                    local_indices=idx,
                    neuron_ids=ids(layer, idx),
                    constant_values=floats(layer.mean[sel], 9),
                    reason="low_activity",
                    policy=self.name,
                    evidence={
                        "count": layer.count,
                        "dormancy_score": floats(score[sel]),
                        "mean_abs": floats(layer.mean_abs[sel]),
                        "firing_rate": floats(layer.firing_rate[sel]),
                        "layer_mean_abs": floats([typical])[0],
                    },
                )
            )
        return actions
