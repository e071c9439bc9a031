"""Merge redundant pairs: highly correlated units folded into one.

Candidate pairs have Pearson correlation ≥ ``threshold`` (or |ρ| ≥ it with
``allow_negative``). For a pair the unit removed is the cheaper one; the expected cost of
removing j and reconstructing it from i is ``‖V_j‖²·Var(a_j)·(1−ρ²)`` when the consumer weights
V are known (else pairs go by ρ). Pairs are taken greedily, cheapest first, so the merged set
never overlaps: a unit is merged at most once per plan. Each action carries the least-squares
fit ``a_remove ≈ alpha·a_keep + beta`` that surgery folds into the consumers.

>>> RedundancyPolicy().settings.threshold
0.95
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from engine.layout import ModelLayout
from engine.plan.actions import Action, MergeAction
from engine.stats.snapshot import LayerSnapshot
from policies.base import PerLayerPolicy, Policy, PolicySettings, register_policy
from policies.common import claim_pair
from policies.guards import Guard


class RedundancySettings(PolicySettings):
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    allow_negative: bool = False
    use_consumer_cost: bool = True
    max_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    max_candidates_per_unit: int = Field(default=8, ge=1)
    min_samples: int = Field(default=100, ge=1)


def candidate_pairs(
    layer: LayerSnapshot, threshold: float, allow_negative: bool, cap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pairs (P, 2) with i < j, rho (P,))`` above the threshold, strongest first."""
    r = layer.pearson()
    score = r.abs() if allow_negative else r
    n = r.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    mask = upper & torch.isfinite(score) & (score >= threshold)
    pairs = torch.nonzero(mask)
    strength = score[mask]
    order = torch.argsort(strength, descending=True, stable=True)[:cap]
    pairs = pairs[order]
    return pairs, r[pairs[:, 0], pairs[:, 1]]


@register_policy
class RedundancyPolicy(PerLayerPolicy):
    name = "redundancy"
    Settings = RedundancySettings
    shrinks = True

    def scaled(self, factor: float) -> Policy:
        """At most ``factor`` times the usual share of a layer per plan."""
        return self.with_settings(max_fraction=self.settings.max_fraction * factor)

    def propose_layer(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard
    ) -> list[Action]:
        s = self.settings
        if layer.comoments is None:
            if not layout.layers[name].is_output:
                guard.note(self.name, name, "no correlation state (track with correlation=True)")
            return []
        if guard.removable(name, "merge") == 0:
            if not layout.layers[name].is_output:  # logits are never merged: nothing to say
                guard.note(self.name, name, guard.why_frozen(name, "merge") or "at its floor")
            return []
        cap = s.max_candidates_per_unit * layer.num_units
        pairs, rho = candidate_pairs(layer, s.threshold, s.allow_negative, cap)
        if pairs.numel() == 0:
            return []
        i, j = pairs[:, 0], pairs[:, 1]
        sq = layout.layers[name].consumer_sq_norms() if s.use_consumer_cost else None
        unexplained = 1.0 - rho.square()
        if sq is not None:
            weight = sq * layer.variance
            cost_j, cost_i = weight[j] * unexplained, weight[i] * unexplained
            swap = cost_i < cost_j  # remove i instead of j when that is cheaper
            keep, remove = torch.where(swap, j, i), torch.where(swap, i, j)
            cost = torch.minimum(cost_i, cost_j)
        else:
            keep, remove, cost = i, j, None
        order = torch.argsort(cost, stable=True) if cost is not None else torch.arange(len(i))
        alpha, beta = layer.comoments.fit_matrix()
        budget = min(guard.removable(name, "merge"), math.floor(s.max_fraction * layer.num_units))
        actions: list[Action] = []
        for p in order.tolist():
            if len(actions) >= budget:
                break
            k, r = int(keep[p]), int(remove[p])
            a, b = float(alpha[k, r]), float(beta[k, r])
            if not (math.isfinite(a) and math.isfinite(b)) or not claim_pair(guard, name, k, r):
                continue
            actions.append(
                MergeAction(
                    layer=name,
                    keep=k,
                    remove=r,
                    keep_id=layer.neuron_ids[k],
                    remove_id=layer.neuron_ids[r],
                    alpha=a,
                    beta=b,
                    correlation=max(-1.0, min(1.0, float(rho[p]))),
                    expected_cost=None if cost is None else max(0.0, float(cost[p])),
                    reason="redundant",
                    policy=self.name,
                    evidence={
                        "count": layer.count,
                        "variance_keep": float(layer.variance[k]),
                        "variance_remove": float(layer.variance[r]),
                        "consumer_sq_norm_remove": None if sq is None else float(sq[r]),
                    },
                )
            )
        return actions
