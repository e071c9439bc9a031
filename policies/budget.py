"""Compensated budget mode: remove a share of units and fold them onto the units that stay.

Give exactly one budget: ``remove_fraction`` (of each selected layer), ``fractions`` (per
layer), ``target_params`` (a parameter count for the whole model) or ``target_fraction`` (keep
this share of the model's current parameters). ``max_step_fraction`` bounds one plan: it
removes at most that share of the current parameters, so a schedule reaches a far target over
several surgeries.

Which units go is decided by the loss the consumer would see after the best linear
reconstruction from the kept units. With ``Σ_λ = Σ + λI`` (covariance plus ridge) and consumer
weights ``V``, the loss of keeping K is ``tr(VΣ_λVᵀ) − tr(W_K Σ_λ,KK⁻¹ W_Kᵀ)`` with ``W = VΣ_λ``;
units are removed one at a time, each time the one whose removal raises that loss least (see
:mod:`policies.greedy`, which runs every layer's steps at once). The removed set R is then
folded onto K with ``coef = Σ_λ,KK⁻¹ Σ_KR`` (ridge-regularised least squares), so the consumer
gets ``V_K += V_R·coefᵀ`` and ``c += V_R·(μ_R − coefᵀ·μ_K)``.

**Allocation of a parameter target** (``allocation``): ``"cost"`` (the default) removes the
globally cheapest steps first — a step's cost is its loss increase relative to its layer's
output energy ``tr(VΣVᵀ)``, per parameter it saves (``params_per_unit``) — so the budget is
spent where removal hurts least per parameter, e.g. wide layers that are nearly redundant,
not equally everywhere; ``"uniform"`` (the earlier behaviour) removes one common fraction of
every layer, found by bisection on ``ModelLayout.params_after``. ``"cost"`` is the default
because it is what the plan's own loss measure recommends and it held up where it matters: on
a small trained ResNet (digits) a 30 % budget kept 91–99.5 % test accuracy against 42–80 % for
uniform, which also prunes narrow residual streams uncompensated; on a trained MLP both tie.
It concentrates removal (on a random-init ResNet-18 all of it lands in stage 4), so
``max_step_fraction`` and the guard's floors (``min_width``, ``min_keep_fraction``) matter.

**Residual-coupled groups** (a residual stream: ``LayerLayout.coupled``) are one unit space:
removing channel ``i`` removes it from every producer of the stream and every consumer. The
consumers read the *sum* of the producers (after a ReLU, in a ResNet), whose statistics are
not tracked, so no fold coefficients can be fitted for the stream: the group gets a **prune**
on its first member (surgery removes the units from the whole group) whose channels are
replaced by a constant, the sum of the producers' means (the stream's mean where the stream is
linear, e.g. pre-norm transformers; after a ReLU it is an estimate). Channels are chosen by the
uncompensated loss of that replacement summed over the producers, ``Σ_L tr(V_R Σ_L,RR V_Rᵀ)``
(cross-covariances between producers are not tracked and count as 0), and the group's
parameters are counted once. ``coupled: "skip"`` leaves groups alone. Every selected layer the
policy leaves alone (frozen, coupled and skipped, too few samples, at its width floor) gets a
note in the plan.

>>> BudgetPolicy(remove_fraction=0.5).settings.ridge
1e-06
>>> BudgetPolicy(target_fraction=0.7).settings.allocation
'cost'
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Literal

import torch
from pydantic import Field, model_validator

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.stats.snapshot import StatsSnapshot
from policies.base import Policy, PolicySettings, register_policy
from policies.budget_actions import fold_action, prune_action
from policies.budget_spaces import (
    Space,
    collapsed,
    counts_by_cost,
    counts_uniform,
    scaled_counts,
)
from policies.common import judged_guard
from policies.greedy import (
    fold_coefficients,
    gram,
    greedy_removal,
    prune_order,
    reconstruction_loss,
    removal_orders,
)
from policies.guards import Guard

__all__ = [
    "BudgetPolicy",
    "BudgetSettings",
    "fold_coefficients",
    "greedy_removal",
    "reconstruction_loss",
]

_BUDGETS = ("remove_fraction", "fractions", "target_params", "target_fraction")


class BudgetSettings(PolicySettings):
    remove_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)
    fractions: dict[str, float] | None = None
    target_params: int | None = Field(default=None, ge=1)
    target_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0, description="keep this share of the current parameters"
    )
    allocation: Literal["uniform", "cost"] = Field(
        default="cost", description="how a parameter target is shared among layers"
    )
    max_step_fraction: float | None = Field(
        default=None, gt=0.0, le=1.0, description="one plan removes at most this share"
    )
    coupled: Literal["prune", "skip"] = Field(
        default="prune", description="residual-coupled groups: prune them as one, or skip"
    )
    step_scale: float = Field(
        default=1.0, gt=0.0, le=1.0, description="share of the step taken (trial back-off)"
    )
    layers: list[str] | None = Field(default=None, description="names or patterns; default all")
    ridge: float = Field(
        default=1e-6, gt=0.0, description="relative to the mean unit variance; > 0 and finite"
    )
    min_samples: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetSettings:
        given = [k for k in _BUDGETS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_BUDGETS)} (got {given or 'none'})")
        for name, f in (self.fractions or {}).items():
            if not 0.0 <= f < 1.0:
                raise ValueError(f"fractions[{name!r}] = {f}: must be in [0, 1)")
        return self


def _matches(name: str, patterns) -> bool:
    return any(name == p or fnmatchcase(name, p) for p in patterns)


@register_policy
class BudgetPolicy(Policy):
    name = "budget"
    Settings = BudgetSettings
    shrinks = True  # a schedule's back-off after a refused trial scales the step (``scaled``)

    def scaled(self, factor: float) -> Policy:
        """This policy taking ``factor`` of its step (fractions, or the distance to the
        target, times ``factor``).

        >>> BudgetPolicy(target_fraction=0.5).scaled(0.5).settings.step_scale
        0.5
        """
        return self.with_settings(step_scale=self.settings.step_scale * factor)

    # --- which spaces -------------------------------------------------------------------------
    def _patterns(self) -> list[str] | None:
        s = self.settings
        return list(s.fractions) if s.fractions is not None else s.layers

    def _fraction_of(self, members: list[str]) -> float:
        s = self.settings
        if s.fractions is None:
            return float(s.remove_fraction or 0.0)
        for name in members:
            for p, f in s.fractions.items():
                if name == p or fnmatchcase(name, p):
                    return f
        return 0.0

    def _spaces(self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard) -> list[Space]:
        """The layers and coupled groups this plan may shrink; notes every selected layer
        left alone; raises when a selected one has no correlation state."""
        patterns, s = self._patterns(), self.settings
        spaces, seen, missing = [], set(), []
        for name, layer in layout.layers.items():
            if name in seen or not (patterns is None or _matches(name, patterns)):
                continue
            members = guard.group(name) if layer.coupled else [name]
            seen.update(members)
            coupled = len(members) > 1
            if coupled and s.coupled == "skip":
                for m in members:
                    guard.note(self.name, m, f"coupled with {layout.layers[m].coupled} "
                               "(residual) and the budget's coupled setting is 'skip'")  # fmt: skip
                continue
            kind = "prune" if coupled else "fold"
            why = guard.why_frozen(members[0], kind, coupled_ok=coupled)
            if why is not None:
                for m in members:
                    guard.note(self.name, m, why)
                continue
            cap = guard.removable(members[0], kind, coupled_ok=coupled)
            if cap == 0:
                for m in members:
                    guard.note(self.name, m, "no unit may go (width floor, or already shrunk)")
                continue
            missing += [m for m in members if snapshot.layers[m].comoments is None]
            few = [m for m in members if snapshot.layers[m].count < s.min_samples]
            if few:
                for m in members:
                    guard.note(self.name, m, f"{snapshot.layers[few[0]].count} samples of "
                               f"{few[0]!r}, fewer than min_samples={s.min_samples}")  # fmt: skip
                continue
            units = snapshot.layers[members[0]].num_units
            if coupled:
                free, reserved = guard.group_free(members[0], range(units))
            else:
                free = guard.free(name, range(units))
                reserved = set(guard.reserved[name])
            fixed = [k for k, i in enumerate(free) if i in reserved]
            cap = min(cap, len(free) - len(fixed), len(free) - 1)
            if cap <= 0:
                for m in members:
                    guard.note(self.name, m, "every free unit is claimed or reserved")
                continue
            rep = layout.layers[members[0]]
            fraction = self._fraction_of(members)
            spaces.append(Space(members[0], members, rep.units, free, fixed, cap,
                                rep.params_per_unit, fraction))  # fmt: skip
        if missing:
            raise ConfigurationError(
                f"budget policy needs correlation state for layers {missing}: track them with "
                f"NeuronEngine(model, correlation=True) (or list them in correlation=[...])"
            )
        return spaces

    # --- scoring --------------------------------------------------------------------------------
    def _score(self, space: Space, snapshot: StatsSnapshot, layout: ModelLayout) -> None:
        if space.gram is not None:
            return
        whole = len(space.free) == space.units
        idx = None if whole else torch.tensor(space.free)
        consumers = [c.weight for c in layout.layers[space.rep].consumers]
        if not consumers:
            space.gram = torch.eye(len(space.free), dtype=torch.float64)
        else:
            space.gram = gram(consumers, None if whole else space.free)
        covs = [snapshot.layers[m].comoments.covariance() for m in space.members]
        covs = [c.to(torch.float64) if whole else c[idx][:, idx] for c in covs]
        if space.coupled:
            space.energy = space.gram * sum(covs)
            space.total = float(space.energy.sum())
            return
        cov = covs[0]
        scale = float(cov.diagonal().mean())
        space.ridge = self.settings.ridge * (scale if math.isfinite(scale) and scale > 0 else 1.0)
        space.raw_cov = cov
        space.cov = cov + space.ridge * torch.eye(len(space.free), dtype=cov.dtype)
        space.total = float((space.gram * cov).sum())

    def _orders(self, spaces: list[Space], counts: list[int], snapshot, layout) -> None:
        """Fill each space's greedy ``order`` / ``steps`` for ``counts`` removals."""
        for space in spaces:
            self._score(space, snapshot, layout)
        folds = [(s, k) for s, k in zip(spaces, counts) if not s.coupled]
        results = removal_orders(
            [s.cov for s, _ in folds], [s.gram for s, _ in folds], [k for _, k in folds],
            [s.fixed for s, _ in folds],
        )  # fmt: skip
        for (space, _), (order, steps) in zip(folds, results):
            space.order, space.steps = order, steps
        for space, k in zip(spaces, counts):
            if space.coupled:
                space.order, space.steps = prune_order(space.energy, k, space.fixed)

    # --- how many -------------------------------------------------------------------------------
    def _counts(
        self, spaces: list[Space], snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard
    ) -> tuple[list[int], dict]:
        s = self.settings
        base = collapsed(layout, guard.removed)
        done = {sp.rep: max(guard.removed[m] for m in sp.members) for sp in spaces}
        needs_total = s.target_params is not None or s.target_fraction is not None
        if (needs_total or s.max_step_fraction is not None) and layout.total_params <= 0:
            which = next(k for k in (*_BUDGETS, "max_step_fraction") if getattr(s, k) is not None
                         and k not in ("remove_fraction", "fractions"))  # fmt: skip
            raise ConfigurationError(
                f"{which} needs a model layout with parameter counts: plan from "
                "engine.propose(...) or save the snapshot with engine.snapshot(with_layout=True)"
            )
        floor = 0
        if s.max_step_fraction is not None:
            floor = math.ceil(layout.total_params * (1.0 - s.max_step_fraction) - 1e-9)
        if not needs_total:
            wanted = [
                max(0, min(sp.cap, round(sp.fraction * s.step_scale * sp.units) - done[sp.rep]))
                for sp in spaces
            ]
            return scaled_counts(spaces, layout, base, wanted, floor), {}
        target = s.target_params
        if target is None:
            target = math.floor(s.target_fraction * layout.total_params + 1e-9)
        current = layout.params_after(base)
        step_target = target
        if current > target and s.step_scale < 1.0:
            step_target = math.ceil(current - (current - target) * s.step_scale)
        bound = floor > step_target  # the step's bound, not the target, decides
        step_target = max(step_target, floor)
        info = {"target_params": target, "step_target": step_target, "allocation": s.allocation}
        if s.allocation == "uniform":
            return counts_uniform(spaces, layout, base, done, step_target, bound), info
        counts = counts_by_cost(
            spaces, layout, base, step_target,
            lambda usable: self._orders(usable, [u.cap for u in usable], snapshot, layout),
            bound,
        )  # fmt: skip
        for sp, k in zip(spaces, counts):
            if k == 0:
                for m in sp.members:
                    guard.note(self.name, m, "cheaper units elsewhere met the budget")
        return counts, info

    def _whole(self, space, k: int, layout: ModelLayout, guard: Guard) -> int:
        """``k`` moved to the nearest count that keeps every member's width a multiple of its
        ``width_multiple`` (attention heads, norm groups keep one size), within the cap."""
        if k <= 0:
            return 0
        down = guard.divisible(space.rep, k, coupled_ok=space.coupled)
        if down == k:
            return k
        multiple = math.lcm(*(max(1, layout.layers[m].width_multiple) for m in space.members))
        up = down + multiple
        whole = up if k - down >= up - k and up <= space.cap else down
        for m in space.members:
            multiple = layout.layers[m].width_multiple
            guard.notes.append(
                f"{self.name}: layer {m!r}: {k} unit(s) rounded to {whole}, the width must stay "
                f"a multiple of {multiple}"
            )
        return whole

    # --- actions --------------------------------------------------------------------------------
    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        """The budget's actions: a fold per layer, a prune per coupled group.

        >>> import torch, torch.nn as nn
        >>> from engine import NeuronEngine
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> engine = NeuronEngine(model, correlation=True)
        >>> with engine.tracking():
        ...     _ = model(torch.randn(256, 4))
        >>> (fold,) = BudgetPolicy(target_fraction=0.7).propose(
        ...     engine.snapshot(), engine.model_layout())
        >>> fold.layer, len(fold.remove), fold.evidence["reached"]
        ('0', 5, True)
        """
        guard = judged_guard(snapshot, layout, guard)
        spaces = self._spaces(snapshot, layout, guard)
        counts, info = self._counts(spaces, snapshot, layout, guard)
        wanted = [self._whole(sp, k, layout, guard) for sp, k in zip(spaces, counts)]
        todo = [(sp, k) for sp, k in zip(spaces, wanted) if k > 0]
        stale = [sp for sp, k in todo if len(sp.order) < k]  # orders computed short, or not yet
        if stale:
            self._orders(stale, [k for sp, k in todo if len(sp.order) < k], snapshot, layout)
        actions: list[Action] = []
        for space, k in todo:
            make = prune_action if space.coupled else fold_action
            actions.append(make(space, snapshot, guard, space.order[:k], self.name))
        if info:  # say whether the budget was met (guards may stop short of it)
            after = layout.params_after(collapsed(layout, guard.removed))
            note = {**info, "params_after": after, "reached": after <= info["target_params"]}
            actions = [a.model_copy(update={"evidence": {**a.evidence, **note}}) for a in actions]
        return actions
