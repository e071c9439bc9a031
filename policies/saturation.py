"""Grow saturated layers: most units firing (or pinned at a bound) most of the time.

A layer qualifies when at least ``layer_fraction`` of its units fire at a rate of at least
``unit_firing_rate``, or (bounded activations) its mean saturation fraction is at least
``saturation_threshold``. It gets ``ceil(growth_fraction·width)`` new units (at least 1), capped
so the width stays ≤ ``max_width`` (or ``max_growth_factor`` × the width). With ``net2net`` the
busiest units (highest mean |a|) are the sources that get split.

With ``min_rank_fraction`` a busy layer also has to use its width: the participation ratio of
its activations' covariance C, ``PR = tr(C)² / ‖C‖_F²`` (= (Σλ)²/Σλ², the effective number of
independent directions, between 1 and the width), must be at least that fraction of the width.
A layer whose units mostly move together gains little from more of them. It needs correlation
tracking on the layer.

>>> SaturationPolicy().settings.init
'net2net'
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action, ExpandAction, InitMethod
from engine.stats.snapshot import LayerSnapshot
from policies.base import PerLayerPolicy, PolicySettings, register_policy
from policies.common import floats
from policies.guards import Guard


class SaturationSettings(PolicySettings):
    unit_firing_rate: float = Field(default=0.95, ge=0.0, le=1.0)
    layer_fraction: float = Field(default=0.9, ge=0.0, le=1.0)
    saturation_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Bounded: one plan never grows a layer more than 100-fold (a net2net source list per unit).
    growth_fraction: float = Field(default=0.25, gt=0.0, le=100.0)
    max_width: int | None = Field(default=None, ge=1)
    max_growth_factor: float = Field(default=4.0, ge=1.0, le=1000.0)
    init: InitMethod = "net2net"
    noise: float = Field(default=0.0, ge=0.0)
    min_samples: int = Field(default=100, ge=1)
    # A layer that an earlier policy of the same plan shrinks is not also grown: the two
    # signals contradict each other, and growing what was just pruned only churns units.
    skip_shrinking_layers: bool = True
    min_rank_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="grow only if the participation ratio of the activations is at least this "
        "fraction of the width (needs correlation tracking)",
    )


@register_policy
class SaturationPolicy(PerLayerPolicy):
    name = "saturation"
    Settings = SaturationSettings
    grows = True

    def propose_layer(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard
    ) -> list[Action]:
        s = self.settings
        if guard.why_frozen(name, "expand") is not None or layout.layers[name].is_output:
            return []
        if s.skip_shrinking_layers and guard.removed[name] > 0:
            return []
        busy = float((layer.firing_rate >= s.unit_firing_rate).double().mean())
        saturation = float(layer.saturation.mean()) if layer.bounds is not None else None
        saturated = saturation is not None and saturation >= s.saturation_threshold
        if busy < s.layer_fraction and not saturated:
            return []
        width = layer.num_units
        rank = None
        if s.min_rank_fraction is not None:
            rank = participation_ratio(name, layer)
            if rank < s.min_rank_fraction * width:
                return []
        # min() before rounding: huge factors must not overflow (inf cannot become an int)
        cap = s.max_width or math.floor(min(width * s.max_growth_factor, 2.0**62))
        count = min(max(1, math.ceil(min(s.growth_fraction * width, cap))), cap - width)
        if count <= 0:
            return []
        sources = source_ids = None
        if s.init == "net2net":
            ranked = torch.argsort(layer.mean_abs, descending=True, stable=True).tolist()
            # Only units no earlier action of this plan claimed (a pruned or folded-away unit
            # cannot be copied); cycle over them when there are fewer than ``count``.
            free = guard.free(name, ranked)
            if not free:
                return []
            sources = [free[k % len(free)] for k in range(count)]
            source_ids = [layer.neuron_ids[i] for i in sources]
            guard.reserve(name, sources)  # read, not removed: later actions must keep them
        guard.grow(name, count)
        return [
            ExpandAction(
                layer=name,
                count=count,
                init=s.init,
                source_indices=sources,
                source_ids=source_ids,
                noise=s.noise,
                reason="saturated" if saturated else "high_firing",
                policy=self.name,
                evidence={
                    "count": layer.count,
                    "width": width,
                    "fraction_of_units_firing": round(busy, 6),
                    "mean_firing_rate": floats([layer.firing_rate.mean()])[0],
                    "mean_saturation": None if saturation is None else round(saturation, 6),
                    "participation_ratio": None if rank is None else round(rank, 6),
                },
            )
        ]


def participation_ratio(name: str, layer: LayerSnapshot) -> float:
    """``tr(C)² / ‖C‖_F²`` of the layer's activation covariance (1 … width; 0 when constant)."""
    if layer.comoments is None:
        raise ConfigurationError(
            f"saturation's min_rank_fraction needs correlation state for layer {name!r}: track "
            f"it with NeuronEngine(model, correlation=True) (or list it in correlation=[...])"
        )
    cov = layer.comoments.covariance().double()
    frob = float(torch.linalg.matrix_norm(cov) ** 2)
    return float(cov.trace() ** 2) / frob if frob > 0 else 0.0
