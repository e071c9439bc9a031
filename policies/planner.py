"""Run a policy configuration over a snapshot and a layout: the actions of one plan.

``PolicyPlanner`` is the engine's default planner (``engine.planning.Planner``): importing
``policies`` registers it, and the package's entry point names it, so ``engine.propose()``
uses it without the engine importing this package.

>>> from engine.layout import LayerLayout, ModelLayout
>>> from engine.stats.snapshot import StatsSnapshot
>>> propose_actions(StatsSnapshot({}), ModelLayout({}))
[]
>>> PolicyPlanner().decide(StatsSnapshot({}), ModelLayout({}), {"policies": []}).actions
[]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.planning import Decision
from engine.stats.snapshot import StatsSnapshot
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
    snapshot: StatsSnapshot,
    layout: ModelLayout,
    config: ConfigLike = (),
    *,
    ages: Mapping[int, int] | None = None,
    notes: list[str] | None = None,
) -> list[Action]:
    """Every policy's actions, in config order, sharing one guard (units claimed once).

    ``ages`` (neuron ID → epochs since it was grown) lets the guard's ``min_age_epochs`` keep
    young units; what the guard held back is appended to ``notes`` when given.
    """
    cfg = resolve_config(config)
    guard = Guard(layout, cfg.guards, ages)
    actions: list[Action] = []
    for policy in cfg.policies:
        actions += policy.propose(snapshot, layout, guard)
    if notes is not None:
        notes += guard.notes
        notes += [
            f"{name}: {len(young)} unit(s) grown fewer than {cfg.guards.min_age_epochs} epochs "
            "ago were not considered for removal"
            for name, young in guard.young.items()
        ]
    return actions


class PolicyPlanner:
    """The default planner: the policies of a config (``policies/default.yaml`` when none is
    given), in order, sharing one guard; the plan records each policy's settings."""

    def decide(
        self,
        snapshot: StatsSnapshot,
        layout: ModelLayout,
        config: ConfigLike = None,
        *,
        ages: Mapping[int, int] | None = None,
    ) -> Decision:
        cfg = resolve_config(config)
        notes: list[str] = []
        actions = propose_actions(snapshot, layout, cfg, ages=ages, notes=notes)
        return Decision(actions=actions, policies=cfg.describe(), notes=notes)


PLANNER = PolicyPlanner()
