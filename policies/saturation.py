"""Grow saturated layers: most units firing (or pinned at a bound) most of the time.

A layer qualifies when at least ``layer_fraction`` of its units fire at a rate of at least
``unit_firing_rate``, or (bounded activations) its mean saturation fraction is at least
``saturation_threshold``. It gets ``ceil(growth_fraction·width)`` new units (at least 1), capped
so the width stays ≤ ``max_width`` (or ``max_growth_factor`` × the width). With ``net2net`` the
busiest units (highest mean |a|) are the sources that get split.

>>> SaturationPolicy().settings.init
'net2net'
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from engine.layout import ModelLayout
from engine.plan.actions import Action, ExpandAction, InitMethod
from engine.snapshot import StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.common import enough_samples, floats
from policies.guards import Guard


class SaturationSettings(PolicySettings):
    unit_firing_rate: float = Field(default=0.95, ge=0.0, le=1.0)
    layer_fraction: float = Field(default=0.9, ge=0.0, le=1.0)
    saturation_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    growth_fraction: float = Field(default=0.25, gt=0.0)
    max_width: int | None = Field(default=None, ge=1)
    max_growth_factor: float = Field(default=4.0, ge=1.0)
    init: InitMethod = "net2net"
    noise: float = Field(default=0.0, ge=0.0)
    min_samples: int = Field(default=100, ge=1)


@register_policy
class SaturationPolicy(Policy):
    name = "saturation"
    Settings = SaturationSettings

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        s = self.settings
        guard = guard or Guard(layout)
        actions: list[Action] = []
        for name, layer in snapshot.layers.items():
            if name not in layout.layers or not enough_samples(layer, s.min_samples):
                continue
            if guard.why_frozen(name, "expand") is not None or layout.layers[name].is_output:
                continue
            busy = float((layer.firing_rate >= s.unit_firing_rate).double().mean())
            saturation = float(layer.saturation.mean()) if layer.bounds is not None else None
            saturated = saturation is not None and saturation >= s.saturation_threshold
            if busy < s.layer_fraction and not saturated:
                continue
            width = layer.num_units
            cap = (
                s.max_width if s.max_width is not None else math.floor(width * s.max_growth_factor)
            )
            count = min(max(1, math.ceil(s.growth_fraction * width)), cap - width)
            if count <= 0:
                continue
            sources = ids_ = None
            if s.init == "net2net":
                ranked = torch.argsort(layer.mean_abs, descending=True, stable=True).tolist()
                sources = [ranked[k % width] for k in range(count)]
                ids_ = [layer.neuron_ids[i] for i in sources]
            actions.append(
                ExpandAction(
                    layer=name,
                    count=count,
                    init=s.init,
                    source_indices=sources,
                    source_ids=ids_,
                    noise=s.noise,
                    reason="saturated" if saturated else "high_firing",
                    policy=self.name,
                    evidence={
                        "count": layer.count,
                        "width": width,
                        "fraction_of_units_firing": round(busy, 6),
                        "mean_firing_rate": floats([layer.firing_rate.mean()])[0],
                        "mean_saturation": None if saturation is None else round(saturation, 6),
                    },
                )
            )
        return actions
