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
from engine.snapshot import StatsSnapshot
from policies.guards import Guard


class PolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


POLICIES: dict[str, type[Policy]] = {}


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available by ``cls.name`` in YAML configs."""
    POLICIES[cls.name] = cls
    return cls
