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
from engine.plan.actions import Action, PruneAction
from engine.snapshot import StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.common import enough_samples, floats, ids
from policies.guards import Guard


class DeadSettings(PolicySettings):
    firing_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    constant_tolerance: float = Field(default=1e-6, ge=0.0)
    min_samples: int = Field(default=100, ge=1)


@register_policy
class DeadUnitPolicy(Policy):
    name = "dead"
    Settings = DeadSettings

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        s = self.settings
        guard = guard or Guard(layout)
        actions: list[Action] = []
        for name, layer in snapshot.layers.items():
            if name not in layout.layers or not enough_samples(layer, s.min_samples):
                continue
            spread = layer.maximum - layer.minimum
            constant = spread <= s.constant_tolerance * layer.mean.abs().clamp_min(1.0)
            dead = (layer.firing_rate <= s.firing_threshold) if layer.rectified else constant
            for reason, mask in (("dead", dead), ("constant", constant & ~dead)):
                idx = guard.free(name, torch.nonzero(mask).flatten().tolist())
                idx = idx[: guard.removable(name, "prune")]
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
                        reason=reason,
                        policy=self.name,
                        evidence={
                            "count": layer.count,
                            "firing_rate": floats(layer.firing_rate[sel]),
                            "variance": floats(layer.variance[sel], 9),
                            "mean": floats(layer.mean[sel]),
                        },
                    )
                )
        return actions
