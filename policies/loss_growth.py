"""Grow where the loss says more units would help: GradMax-scored growth.

For each Linear layer with a gathered growth signal (``NeuronEngine(growth_signal=True)``, see
``engine.stats.growth``), the singular values ``σ₁ ≥ σ₂ ≥ …`` of ``M = E[δ_Cᵀ·x_L]`` say how
fast new units could lower the loss: a unit with zero incoming weights and outgoing column
``s·uᵢ`` (``s``: the median norm of the consumer's columns, as ``gradmax`` surgery sets it)
lowers the loss by ``η·s²·σᵢ²`` with one gradient step ``η = step_size`` on its incoming weights
(first order). Relative to the current training loss ``ℓ`` (the engine passes the last
``log_epoch`` loss), unit ``i`` is worth adding when ``η·s²·σᵢ²/ℓ ≥ min_unit_gain``, and the
layer grows only when its new units together reach ``min_gain_share``. Layers are served best
gain first within ``max_params`` (the whole model's parameter count after growth) and
``max_width``; a layer with units younger than ``cooldown_epochs`` waits. New units are
function-preserving (``gradmax`` or ``zero_outgoing``). Every layer left alone gets a note.

>>> LossGrowthPolicy().settings.init
'gradmax'
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action, ExpandAction
from engine.stats.snapshot import StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.common import judged_guard
from policies.guards import Guard


class LossGrowthSettings(PolicySettings):
    # η of the first-order estimate. With 1.0 a gain is ``s²·σ²/ℓ``; the thresholds below are
    # calibrated that way (digits MLP: best unit ≈ 0.3 at width 4, 0.02 at 8, ≤ 5e-4 at 32+).
    step_size: float = Field(default=1.0, gt=0.0)
    min_gain_share: float = Field(default=0.01, ge=0.0)
    min_unit_gain: float = Field(default=0.005, ge=0.0)
    growth_fraction: float = Field(default=0.5, gt=0.0, le=100.0)
    max_width: int | None = Field(default=None, ge=1)
    max_params: int | None = Field(default=None, ge=1)
    cooldown_epochs: int = Field(default=0, ge=0)
    min_batches: int = Field(default=10, ge=1)
    init: str = Field(default="gradmax", pattern="^(gradmax|zero_outgoing)$")
    # A layer without a GradMax signal (a convolution, a residual stream, a consumer that is
    # not one Linear): "skip" it, or grow it by growth_fraction with zero outgoing weights and
    # let a trial (SurgerySchedule(min_growth_gain=…)) say whether the new units pay.
    without_signal: Literal["skip", "zero_outgoing"] = "skip"


@register_policy
class LossGrowthPolicy(Policy):
    name = "loss_growth"
    Settings = LossGrowthSettings
    grows = True

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        s = self.settings
        guard = judged_guard(snapshot, layout, guard)
        loss = snapshot.metadata.get("loss")
        if not isinstance(loss, int | float) or not math.isfinite(loss) or loss <= 0:
            raise ConfigurationError(
                "loss_growth weighs gains against the training loss: call "
                "engine.log_epoch(epoch, loss=...) before propose (snapshot metadata 'loss', "
                f"got {loss!r})"
            )
        candidates, blind = [], []
        for name, layer in snapshot.layers.items():
            if name not in layout.layers:
                continue
            unestimated = layer.growth is None and s.without_signal == "zero_outgoing"
            why = self._why_not(name, layer, layout, guard, unestimated)
            if why is not None:
                guard.note(self.name, name, why)
                continue
            if unestimated:
                blind.append(name)
                continue
            gains = self._unit_gains(name, layer, layout, float(loss))
            count = int((gains >= s.min_unit_gain).sum())
            width = layer.num_units
            cap = max(1, math.ceil(s.growth_fraction * width))
            if s.max_width is not None:
                cap = min(cap, s.max_width - width)
            count = min(count, cap)
            share = float(gains[:count].sum()) if count else 0.0
            if count <= 0 or share < s.min_gain_share:
                top = float(gains[0]) if gains.numel() else 0.0
                guard.note(self.name, name, f"estimated gain {share:.3g} of the loss with {count} "
                           f"unit(s) (best unit {top:.3g}) is below min_gain_share "
                           f"{s.min_gain_share}")  # fmt: skip
                continue
            candidates.append((share, name, count, gains[:count]))
        actions = self._within_budget(sorted(candidates, key=lambda c: -c[0]), layout, guard, loss)
        return actions + self._unestimated(blind, snapshot, layout, guard)

    def _why_not(self, name, layer, layout, guard, unestimated: bool = False) -> str | None:
        s = self.settings
        info = layout.layers[name]
        frozen = guard.why_frozen(name, "expand", coupled_ok=unestimated)
        if frozen is not None:
            return frozen
        if info.is_output:
            return "output layer"
        if unestimated:
            if any(m in guard.grown for m in guard.group(name)):
                return "its residual-coupled group already grows in this plan"
        elif layer.growth is None:
            return "no growth signal (track it with NeuronEngine(growth_signal=True))"
        elif layer.growth.batches < s.min_batches:
            return f"growth signal of {layer.growth.batches} batches < min_batches {s.min_batches}"
        if guard.removed[name] > 0:
            return "an earlier policy of this plan shrinks it"
        if s.max_width is not None and layer.num_units >= s.max_width:
            return f"at max_width {s.max_width}"
        if s.cooldown_epochs:
            young = [a for nid in layer.neuron_ids if (a := guard.ages.get(nid)) is not None]
            if young and min(young) < s.cooldown_epochs:
                return f"grown {min(young)} epoch(s) ago, cool-down {s.cooldown_epochs}"
        return None

    def _unit_gains(self, name, layer, layout, loss: float) -> torch.Tensor:
        """``η·s²·σᵢ²/ℓ`` per candidate unit, best first."""
        sigma = torch.linalg.svdvals(layer.growth.mean().double())
        v = layout.layers[name].consumer_matrix()
        scale = float(v.norm(dim=0).median()) if v is not None and v.numel() else 1.0
        return self.settings.step_size * scale**2 * sigma.square() / loss

    def _unestimated(self, names, snapshot, layout, guard) -> list[Action]:
        """Growth by ``growth_fraction`` with ``zero_outgoing`` units for layers without a
        GradMax signal (``without_signal``), within ``max_width`` and ``max_params``; one
        action per residual-coupled group (surgery grows every member)."""
        s = self.settings
        total = layout.total_params + sum(
            n * max(1, layout.layers[name].params_per_unit) for name, n in guard.grown.items()
        )
        actions: list[Action] = []
        for name in names:
            if any(m in guard.grown for m in guard.group(name)):
                guard.note(self.name, name, "its residual-coupled group already grows")
                continue
            width = layout.layers[name].units
            count = max(1, math.ceil(s.growth_fraction * width))
            if s.max_width is not None:
                count = min(count, s.max_width - width)
            per_unit = max(1, layout.layers[name].params_per_unit)
            if s.max_params is not None:
                count = min(count, max(0, (s.max_params - total) // per_unit))
            if count <= 0:
                guard.note(self.name, name, "no room under max_width / max_params")
                continue
            total += count * per_unit
            guard.grow(name, count)
            actions.append(ExpandAction(
                layer=name, count=count, init="zero_outgoing", reason="untested_growth",
                policy=self.name,
                evidence={"width": width, "samples": snapshot.layers[name].count,
                          "estimate": "none: no GradMax signal for this layer; a trial judges "
                                      "whether the new units lower the loss"},
            ))  # fmt: skip
        return actions

    def _within_budget(self, candidates, layout, guard, loss) -> list[Action]:
        s = self.settings
        total = layout.total_params
        actions: list[Action] = []
        for share, name, count, gains in candidates:
            per_unit = max(1, layout.layers[name].params_per_unit)
            if s.max_params is not None:
                affordable = max(0, (s.max_params - total) // per_unit)
                if affordable < count:
                    guard.note(self.name, name, f"max_params {s.max_params} leaves room for "
                               f"{affordable} of {count} unit(s)")  # fmt: skip
                    count = affordable
                    share = float(gains[:count].sum())
                    if count == 0 or share < s.min_gain_share:
                        continue
            total += count * per_unit
            guard.grow(name, count)
            evidence = {
                "estimated_gain_share": round(share, 6),
                "unit_gain_shares": [round(float(g), 6) for g in gains[:count]],
                "loss": loss,
                "step_size": s.step_size,
                "width": layout.layers[name].units,
            }
            actions.append(
                ExpandAction(
                    layer=name,
                    count=count,
                    init=s.init,
                    reason="loss_gain",
                    policy=self.name,
                    evidence=evidence,
                )
            )
        return actions
