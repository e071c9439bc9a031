"""Policies turn a statistics snapshot and a layout into plan actions (pure; never touch modules).

>>> from policies import POLICIES
>>> sorted(POLICIES)
['budget', 'dead', 'low_activity', 'redundancy', 'saturation']
"""

from policies.base import POLICIES, Policy, PolicySettings, register_policy
from policies.budget import BudgetPolicy
from policies.config import DEFAULT_CONFIG, PolicyConfig, load_config, parse_config
from policies.dead import DeadUnitPolicy
from policies.guards import Guard, GuardSettings
from policies.low_activity import LowActivityPolicy
from policies.propose import propose_actions, resolve_config
from policies.redundancy import RedundancyPolicy
from policies.saturation import SaturationPolicy

__all__ = [
    "DEFAULT_CONFIG",
    "POLICIES",
    "BudgetPolicy",
    "DeadUnitPolicy",
    "Guard",
    "GuardSettings",
    "LowActivityPolicy",
    "Policy",
    "PolicyConfig",
    "PolicySettings",
    "RedundancyPolicy",
    "SaturationPolicy",
    "load_config",
    "parse_config",
    "propose_actions",
    "register_policy",
    "resolve_config",
]
