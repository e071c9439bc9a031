"""Plans: versioned JSON of prune / merge / expand actions for one model layout.

The schema (``engine.plan.plan`` with ``metadata``, ``actions`` and ``statistics``) imports
none of its readers and printers; they register with it when imported, and this package
imports them all: ``engine.plan.legacy`` (the SelfModifyingSLM format of ``Plan.load``, via
``engine.plan.formats``) and ``engine.plan.summary`` (the text of ``Plan.summary()``).

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
from engine.plan.metadata import FORMAT, VERSION, PlanMetadata, PolicyRecord
from engine.plan.plan import Plan
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
