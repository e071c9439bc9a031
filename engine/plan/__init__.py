"""Plans: versioned JSON of prune / merge / expand actions for one model layout.

>>> from engine.plan import Plan, PruneAction
>>> plan = Plan.create([PruneAction(layer="fc", local_indices=[0], neuron_ids=[0],
...                                 reason="dead")], layout=[("fc", 4)])
>>> plan.statistics.prune_units, plan.format
(1, 'neuron-engine.plan')
"""

from engine.plan.actions import (
    Action,
    ExpandAction,
    FoldAction,
    InitMethod,
    MergeAction,
    MergeLike,
    PruneAction,
)
from engine.plan.legacy import convert_selfmodifying_slm, looks_like_selfmodifying_slm
from engine.plan.plan import FORMAT, VERSION, Plan, PlanMetadata, PolicyRecord
from engine.plan.statistics import LayerWidth, PlanStatistics
from engine.plan.summary import plan_summary
from engine.plan.validate import validate_plan, validation_problems

__all__ = [
    "FORMAT",
    "VERSION",
    "Action",
    "ExpandAction",
    "FoldAction",
    "InitMethod",
    "LayerWidth",
    "MergeAction",
    "MergeLike",
    "Plan",
    "PlanMetadata",
    "PlanStatistics",
    "PolicyRecord",
    "PruneAction",
    "convert_selfmodifying_slm",
    "looks_like_selfmodifying_slm",
    "plan_summary",
    "validate_plan",
    "validation_problems",
]
