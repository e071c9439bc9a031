"""Run a policy configuration over a snapshot and a layout: the actions of one plan.

>>> from engine.layout import LayerLayout, ModelLayout
>>> from engine.snapshot import StatsSnapshot
>>> propose_actions(StatsSnapshot({}), ModelLayout({}))
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.snapshot import StatsSnapshot
from policies.base import Policy
from policies.config import PolicyConfig, load_config, parse_config
from policies.guards import Guard, GuardSettings

ConfigLike = PolicyConfig | str | Path | dict[str, Any] | Sequence[Policy] | None


def resolve_config(config: ConfigLike) -> PolicyConfig:
    """A ``PolicyConfig`` from a config object, a YAML path, a mapping or a list of policies
    (None: ``policies/default.yaml``)."""
    if isinstance(config, PolicyConfig):
        return config
    if config is None or isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        return parse_config(config)
    return PolicyConfig(list(config), GuardSettings())


def propose_actions(
    snapshot: StatsSnapshot, layout: ModelLayout, config: ConfigLike = ()
) -> list[Action]:
    """Every policy's actions, in config order, sharing one guard (units claimed once)."""
    cfg = resolve_config(config)
    guard = Guard(layout, cfg.guards)
    actions: list[Action] = []
    for policy in cfg.policies:
        actions += policy.propose(snapshot, layout, guard)
    return actions
