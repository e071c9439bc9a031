"""Hook placement and the reduction of activations to per-neuron samples."""

from engine.observe.hooks import HookSet, make_observer, to_samples
from engine.observe.placement import STRUCTURE_HINTS, Observation, plan_observations

__all__ = [
    "STRUCTURE_HINTS",
    "HookSet",
    "Observation",
    "make_observer",
    "plan_observations",
    "to_samples",
]
