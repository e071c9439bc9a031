"""Policies turn a statistics snapshot and a layout into plan actions (pure; never touch modules).

>>> from policies import POLICIES
>>> sorted(POLICIES)
['budget', 'dead', 'loss_growth', 'low_activity', 'redundancy', 'saturation']
"""

from engine.planning import register_planner
from policies.base import POLICIES, Policy, PolicySettings, register_policy
from policies.budget import BudgetPolicy
from policies.config import DEFAULT_CONFIG, PolicyConfig, load_config, parse_config
from policies.dead import DeadUnitPolicy
from policies.guards import Guard, GuardSettings
from policies.loss_growth import LossGrowthPolicy
from policies.low_activity import LowActivityPolicy
from policies.planner import PLANNER, PolicyPlanner, propose_actions, resolve_config
from policies.redundancy import RedundancyPolicy
from policies.saturation import SaturationPolicy

register_planner(PLANNER)  # the engine's default planner (engine never imports policies)

__all__ = [
    "DEFAULT_CONFIG",
    "PLANNER",
    "POLICIES",
    "BudgetPolicy",
    "DeadUnitPolicy",
    "Guard",
    "GuardSettings",
    "LossGrowthPolicy",
    "LowActivityPolicy",
    "Policy",
    "PolicyConfig",
    "PolicyPlanner",
    "PolicySettings",
    "RedundancyPolicy",
    "SaturationPolicy",
    "load_config",
    "parse_config",
    "propose_actions",
    "register_policy",
    "resolve_config",
]
