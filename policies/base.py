"""The policy interface, settings models and the registry.

A policy reads a ``StatsSnapshot`` and a ``ModelLayout`` (plain data) and returns plan actions;
it never touches modules. Settings are pydantic models (unknown keys rejected).

>>> sorted(POLICIES)[:2]
['budget', 'dead']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from policies.common import claim_removable, judged_guard, prune_units
from policies.guards import Guard


class PolicySettings(BaseModel):
    # NaN/inf thresholds make every comparison false (or overflow sizes): refuse them. Strict:
    # YAML ``yes``/``'4'`` is not a number, ``1`` is not a boolean (an int is fine as a float).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Policy(ABC):
    """``propose(snapshot, layout, guard) -> actions``; subclasses declare ``name`` and
    ``Settings`` and register themselves with ``@register_policy``."""

    name: ClassVar[str]
    Settings: ClassVar[type[PolicySettings]] = PolicySettings
    # Whether the policy removes units (prune, merge, fold). A schedule that backs off after a
    # refused trial scales these policies' steps (``scaled``) and, at scale 0, drops them.
    shrinks: ClassVar[bool] = False
    # Whether its removals cannot change the function (dead or constant units): such a policy
    # still runs when ``guards.shrink_while_growing`` is off and the plan grows.
    costless: ClassVar[bool] = False
    # Whether the policy adds units: left out of a plan proposed with growth off (the schedule's
    # retry after new units did not pay for themselves).
    grows: ClassVar[bool] = False

    def __init__(self, settings: PolicySettings | Mapping[str, Any] | None = None, **kw: Any):
        if settings is None or isinstance(settings, Mapping):
            settings = self.Settings.model_validate({**(settings or {}), **kw})
        self.settings = settings

    def scaled(self, factor: float) -> Policy:
        """This policy with its removal step scaled by ``factor`` in (0, 1] (the schedule's
        back-off after a refused trial). The default keeps the policy as it is: a policy whose
        step has a size (a share of units to remove, a parameter budget) overrides it.

        >>> from policies.dead import DeadUnitPolicy
        >>> p = DeadUnitPolicy(); p.scaled(0.5) is p
        True
        """
        return self

    def with_settings(self, **changes: Any) -> Policy:
        """A copy of this policy with some settings changed (validated again)."""
        data = {**self.settings.model_dump(), **changes}
        return type(self)(self.Settings.model_validate(data))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings.model_dump(mode="json")}

    @abstractmethod
    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        """Actions for this policy. ``guard`` (shared by the policies of one plan) says which
        layers may change and which units earlier policies already claimed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


class PerLayerPolicy(Policy):
    """A policy that looks at one layer at a time: ``propose_layer`` is called for each layer
    of the layout that has at least ``settings.min_samples`` observations. Pruning policies
    only choose and order their candidate units; :meth:`prune_candidates` claims them."""

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        guard = judged_guard(snapshot, layout, guard)
        min_samples = getattr(self.settings, "min_samples", 1)
        actions: list[Action] = []
        for name, layer in snapshot.layers.items():
            if name in layout.layers and layer.count >= min_samples:
                actions += self.propose_layer(name, layer, layout, guard)
        return actions

    @abstractmethod
    def propose_layer(
        self, name: str, layer: LayerSnapshot, layout: ModelLayout, guard: Guard
    ) -> list[Action]:
        """Actions for one layer."""

    def prune_candidates(
        self,
        name: str,
        layer: LayerSnapshot,
        guard: Guard,
        candidates: Iterable[int],
        reason: str,
        *,
        limit: int | None = None,
        layer_evidence: Mapping[str, Any] | None = None,
        **evidence: torch.Tensor,
    ) -> list[Action]:
        """The loop every pruning policy shares, once: claim from ``guard`` the
        ``candidates`` (best first) that may still be removed from layer ``name`` (at most
        ``limit``), and return the one prune action removing them, or [] when none may go.

        ``evidence`` (per-unit tensors) and ``layer_evidence`` (layer-wide figures) are
        recorded on the action as :func:`~policies.common.prune_units` does.

        >>> from engine.layout import LayerLayout, ModelLayout
        >>> from engine.stats import Moments
        >>> from policies.dead import DeadUnitPolicy
        >>> x = torch.rand(8, 6)
        >>> layer = LayerSnapshot("fc", "Linear", [10, 11, 12, 13, 14, 15], Moments.from_samples(x))
        >>> guard = Guard(ModelLayout({"fc": LayerLayout("fc", "Linear", 6, layer.neuron_ids)}))
        >>> [(a.local_indices, a.neuron_ids, a.reason)
        ...  for a in DeadUnitPolicy().prune_candidates("fc", layer, guard, [5, 2, 0], "dead")]
        [([5, 2], [15, 12], 'dead')]
        >>> DeadUnitPolicy().prune_candidates("fc", layer, guard, [0], "dead")  # layer at its floor
        []
        """
        unjudged = guard.unjudged_units.get(name, set())  # said once, in the plan's notes
        candidates = [c for c in candidates if int(c) not in unjudged]
        idx = claim_removable(guard, name, candidates, "prune", limit)
        if not idx:
            if candidates and not guard.layout.layers[name].is_output:  # say why it did not act
                why = guard.why_frozen(name, "prune") or (
                    "at its width floor" if guard.removable(name, "prune") == 0
                    else "its candidate units are claimed or reserved by earlier actions"
                )  # fmt: skip
                guard.note(self.name, name, f"{len(candidates)} candidate unit(s) kept: {why}")
            return []
        return [prune_units(name, layer, idx, reason, self.name, layer_evidence, **evidence)]


POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available by ``cls.name`` in YAML configs."""
    POLICIES[cls.name] = cls
    return cls
