"""Exact, mergeable per-neuron statistics (pure functions and small state objects)."""

from engine.stats.accumulator import NeuronAccumulator, NonFiniteStatisticsWarning
from engine.stats.comoments import CoMoments, merge_comoments
from engine.stats.moments import Moments, merge_moments, saturation_mask
from engine.stats.remap import remap_accumulator, remap_comoments, remap_moments

__all__ = [
    "CoMoments",
    "Moments",
    "NeuronAccumulator",
    "NonFiniteStatisticsWarning",
    "merge_comoments",
    "merge_moments",
    "remap_accumulator",
    "remap_comoments",
    "remap_moments",
    "saturation_mask",
]
