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

from engine.errors import ConfigurationError
from engine.layout import ModelLayout
from engine.plan.actions import Action
from engine.planning import Decision
from engine.stats.snapshot import StatsSnapshot
from policies.base import Policy
from policies.common import exclude_nonfinite
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


def without_growth(config: PolicyConfig) -> PolicyConfig:
    """``config`` without its growing policies (``Policy.grows``)."""
    return PolicyConfig([p for p in config.policies if not p.grows], config.guards)


def scale_shrinking(config: PolicyConfig, factor: float) -> PolicyConfig:
    """``config`` with every shrinking policy's step scaled by ``factor`` (``Policy.scaled``);
    at 0 the shrinking policies are left out and only the growing ones run.

    >>> from policies.dead import DeadUnitPolicy
    >>> from policies.low_activity import LowActivityPolicy
    >>> cfg = PolicyConfig([DeadUnitPolicy(), LowActivityPolicy(max_fraction=0.5)], GuardSettings())
    >>> [p.settings.max_fraction for p in scale_shrinking(cfg, 0.5).policies[1:]]
    [0.25]
    >>> scale_shrinking(cfg, 0.0).policies
    []
    """
    if not 0.0 <= factor <= 1.0:
        raise ConfigurationError(f"shrink_scale must be in [0, 1], got {factor!r}")
    if factor == 1.0:
        return config
    policies = [
        p if not p.shrinks else p.scaled(factor)
        for p in config.policies
        if not (p.shrinks and factor == 0.0)
    ]
    return PolicyConfig(policies, config.guards)


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
    exclude_nonfinite(snapshot, guard)  # units that saw NaN/inf are judged by no policy
    actions: list[Action] = []
    for policy in cfg.policies:
        stand_down = not cfg.guards.shrink_while_growing and policy.shrinks and not policy.costless
        if stand_down and guard.grown:
            guard.notes.append(
                f"{policy.name}: stood down: this plan grows {sorted(guard.grown)} "
                "(guards.shrink_while_growing is false)"
            )
            continue
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
        scale = snapshot.metadata.get("shrink_scale", 1.0)
        if scale != 1.0:  # a schedule backing off after a refused trial
            cfg = scale_shrinking(cfg, float(scale))
            notes.append(f"shrinking policies' steps scaled by {scale:g} (trial back-off)")
        if snapshot.metadata.get("grow", True) is False:  # growth did not pay: try without
            cfg = without_growth(cfg)
            notes.append("growing policies left out (trial back-off)")
        actions = propose_actions(snapshot, layout, cfg, ages=ages, notes=notes)
        return Decision(actions=actions, policies=cfg.describe(), notes=notes)


PLANNER = PolicyPlanner()
