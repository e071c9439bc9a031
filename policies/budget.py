"""Compensated budget mode: remove a share of units and fold them onto the units that stay.

Give ``remove_fraction`` (of each selected layer), ``fractions`` (per layer) or
``target_params`` (a parameter budget for the whole model, reached with one common fraction
found by bisection on ``ModelLayout.params_after``).

Which units go is decided by the loss the consumer would see after the best linear
reconstruction from the kept units. With ``Σ_λ = Σ + λI`` (covariance plus ridge) and consumer
weights ``V``, the loss of keeping K is ``tr(VΣ_λVᵀ) − tr(W_K Σ_λ,KK⁻¹ W_Kᵀ)`` with ``W = VΣ_λ``;
units are removed one at a time, each time the one whose removal raises that loss least
(``‖(W_K P)[:, j]‖² / P_jj`` with ``P = Σ_λ,KK⁻¹``, updated by a rank-one downdate). The removed
set R is then folded onto K with ``coef = Σ_λ,KK⁻¹ Σ_KR`` (ridge-regularised least squares), so
the consumer gets ``V_K += V_R·coefᵀ`` and ``c += V_R·(μ_R − coefᵀ·μ_K)``.

>>> BudgetPolicy(remove_fraction=0.5).settings.ridge
1e-06
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch
from pydantic import Field, model_validator

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action, FoldAction
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.guards import Guard


class BudgetSettings(PolicySettings):
    remove_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    fractions: dict[str, float] | None = None
    target_params: int | None = Field(default=None, ge=1)
    layers: list[str] | None = Field(default=None, description="names or patterns; default all")
    ridge: float = Field(
        default=1e-6, gt=0.0, description="relative to the mean unit variance; > 0 and finite"
    )
    min_samples: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetSettings:
        given = [
            k
            for k in ("remove_fraction", "fractions", "target_params")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of remove_fraction, fractions, target_params "
                f"(got {given or 'none'})"
            )
        for name, f in (self.fractions or {}).items():
            if not 0.0 <= f < 1.0:
                raise ValueError(f"fractions[{name!r}] = {f}: must be in [0, 1)")
        return self


def greedy_removal(
    cov: torch.Tensor, consumer: torch.Tensor, count: int, fixed: Sequence[int] = ()
) -> tuple[list[int], torch.Tensor]:
    """Indices to remove (in order) so that the reconstruction loss stays smallest.

    ``cov`` is the ridge-regularised covariance (m×m, positive definite), ``consumer`` the
    consumer weights (rows×m); ``fixed`` units are never removed. Returns the removed indices
    and the loss increase of each step.
    """
    precision = torch.linalg.inv(cov)
    m = (consumer @ cov) @ precision  # W_K P
    alive = torch.ones(cov.shape[0], dtype=torch.bool)
    alive[list(fixed)] = False  # never candidates (they stay in K)
    removed, steps = [], []
    for _ in range(count):
        delta = m.square().sum(0) / precision.diagonal()
        delta = torch.where(alive, delta, torch.full_like(delta, float("inf")))
        j = int(torch.argmin(delta))
        pj = precision[j].clone()
        m = m - torch.outer(m[:, j], pj) / pj[j]
        precision = precision - torch.outer(pj, pj) / pj[j]
        alive[j] = False
        removed.append(j)
        steps.append(delta[j])
    return removed, torch.stack(steps) if steps else torch.zeros(0, dtype=cov.dtype)


def fold_coefficients(
    cov: torch.Tensor, ridge: float, keep: list[int], remove: list[int]
) -> torch.Tensor:
    """``coefᵀ`` (|R|×|K|): least squares of the removed units on the kept ones."""
    k, r = torch.tensor(keep), torch.tensor(remove)
    skk = cov[k][:, k] + ridge * torch.eye(len(keep), dtype=cov.dtype)
    return torch.linalg.solve(skk, cov[k][:, r]).T


def reconstruction_loss(
    cov: torch.Tensor, consumer: torch.Tensor, keep: list[int], remove: list[int], coef_t
) -> float:
    """``tr(V_R S V_Rᵀ)`` with ``S`` the covariance of ``a_R − coefᵀ a_K`` (no ridge)."""
    k, r = torch.tensor(keep), torch.tensor(remove)
    srr, skr, skk = cov[r][:, r], cov[k][:, r], cov[k][:, k]
    s = srr - coef_t @ skr - skr.T @ coef_t.T + coef_t @ skk @ coef_t.T
    vr = consumer[:, r]
    return float(((vr @ s) * vr).sum().clamp_min(0))


@register_policy
class BudgetPolicy(Policy):
    name = "budget"
    Settings = BudgetSettings

    def _selected(self, layout: ModelLayout, guard: Guard) -> list[str]:
        patterns = self.settings.layers
        if self.settings.fractions is not None:
            patterns = list(self.settings.fractions)
        names = []
        for name in layout.layers:
            chosen = patterns is None or any(name == p or fnmatchcase(name, p) for p in patterns)
            if chosen and guard.removable(name, "fold") > 0:
                names.append(name)
        return names

    def _fraction_of(self, name: str) -> float:
        s = self.settings
        if s.fractions is not None:
            return next(f for p, f in s.fractions.items() if name == p or fnmatchcase(name, p))
        return float(s.remove_fraction if s.remove_fraction is not None else 0.0)

    def _counts(self, names: list[str], layout: ModelLayout, guard: Guard) -> dict[str, int]:
        def at(f_of) -> dict[str, int]:
            out = {}
            for n in names:
                want = round(f_of(n) * layout.layers[n].units) - guard.removed[n]
                out[n] = max(0, min(guard.removable(n, "fold"), want))
            return out

        target = self.settings.target_params
        if target is None:
            return at(self._fraction_of)
        if layout.total_params <= 0:
            raise ConfigurationError(
                "target_params needs a model layout with parameter counts: plan from "
                "engine.propose(...) or save the snapshot with engine.snapshot(with_layout=True)"
            )
        lo, hi = 0.0, 1.0
        for _ in range(40):  # bisection on one common fraction
            mid = (lo + hi) / 2
            counts = at(lambda n, f=mid: f)
            removed = {n: counts.get(n, 0) + guard.removed[n] for n in layout.layers}
            if layout.params_after(removed) <= target:
                hi = mid
            else:
                lo = mid
        return at(lambda n: hi)

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        guard = guard or Guard(layout)
        names = self._selected(layout, guard)
        missing = [n for n in names if snapshot.layers[n].comoments is None]
        if missing:
            raise ConfigurationError(
                f"budget policy needs correlation state for layers {missing}: track them with "
                f"NeuronEngine(model, correlation=True) (or list them in correlation=[...])"
            )
        actions: list[FoldAction] = []
        counts = self._counts(names, layout, guard)
        for name, count in counts.items():
            layer = snapshot.layers[name]
            if count > 0 and layer.count >= self.settings.min_samples:
                action = self._fold(name, layer, layout, guard, count)
                if action is not None:
                    actions.append(action)
        target = self.settings.target_params
        if target is not None:  # say whether the budget was met (guards may stop short of it)
            after = layout.params_after(dict(guard.removed))
            note = {"target_params": target, "params_after": after, "reached": after <= target}
            actions = [a.model_copy(update={"evidence": {**a.evidence, **note}}) for a in actions]
        return list(actions)

    def _fold(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard, count: int
    ) -> FoldAction | None:
        free = guard.free(name, range(layer.num_units))
        reserved = set(guard.reserved[name])  # net2net sources of earlier actions: kept
        fixed = [k for k, i in enumerate(free) if i in reserved]
        count = min(count, len(free) - len(fixed))
        if count <= 0 or count >= len(free):
            return None
        idx = torch.tensor(free)
        cov = layer.comoments.covariance()[idx][:, idx]
        consumer = layout.layers[name].consumer_matrix()
        consumer = torch.eye(len(free), dtype=cov.dtype) if consumer is None else consumer[:, idx]
        scale = float(cov.diagonal().mean())
        ridge = self.settings.ridge * (scale if math.isfinite(scale) and scale > 0 else 1.0)
        regularised = cov + ridge * torch.eye(len(free), dtype=cov.dtype)
        removed_local, _ = greedy_removal(regularised, consumer.to(cov.dtype), count, fixed)
        gone = set(removed_local)
        keep_local = [i for i in range(len(free)) if i not in gone]
        remove_local = sorted(removed_local)
        coef_t = fold_coefficients(cov, ridge, keep_local, remove_local)
        loss = reconstruction_loss(cov, consumer, keep_local, remove_local, coef_t)
        total = float(((consumer @ cov) * consumer).sum())
        keep = [free[i] for i in keep_local]
        remove = [free[i] for i in remove_local]
        guard.claim(name, keep + remove, removes=len(remove))
        return FoldAction(
            layer=name,
            keep=keep,
            remove=remove,
            keep_ids=[layer.neuron_ids[i] for i in keep],
            remove_ids=[layer.neuron_ids[i] for i in remove],
            coefficients=coef_t.tolist(),
            mean_keep=layer.mean[torch.tensor(keep)].tolist(),
            mean_remove=layer.mean[torch.tensor(remove)].tolist(),
            ridge=ridge,
            expected_cost=loss,
            reason="budget",
            policy=self.name,
            evidence={
                "count": layer.count,
                "width_before": layer.num_units,
                "removed": len(remove),
                "relative_cost": loss / total if total > 0 else None,
            },
        )
