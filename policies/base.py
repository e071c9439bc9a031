"""The policy interface, settings models and the registry.

A policy reads a ``StatsSnapshot`` and a ``ModelLayout`` (plain data) and returns plan actions;
it never touches modules. Settings are pydantic models (unknown keys rejected).

>>> sorted(POLICIES)[:2]
['budget', 'dead']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
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

    def __init__(self, settings: PolicySettings | Mapping[str, Any] | None = None, **kw: Any):
        if settings is None or isinstance(settings, Mapping):
            settings = self.Settings.model_validate({**(settings or {}), **kw})
        self.settings = settings

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
    of the layout that has at least ``settings.min_samples`` observations."""

    def propose(
        self, snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None = None
    ) -> list[Action]:
        guard = guard or Guard(layout)
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


POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available by ``cls.name`` in YAML configs."""
    POLICIES[cls.name] = cls
    return cls
