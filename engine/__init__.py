"""Self-modifying network engine: watch every neuron, plan changes, apply them live.

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> with engine.tracking():
...     _ = model(torch.randn(32, 4))
>>> sorted(engine.dead_neurons())
['0', '2']
"""

__version__ = "0.1.0"

from engine.core import NeuronEngine, TrackedLayer
from engine.errors import (
    ConfigurationError,
    CorrelationLimitError,
    EngineError,
    HistoryError,
    LayerNotFoundError,
    LayoutMismatchError,
    NeuronNotFoundError,
    SnapshotError,
    TrackingStateError,
)
from engine.history import EpochRecord, TrainingHistory
from engine.layers import LayerKind, layer_kind_for, register_layer_kind
from engine.neurons import NeuronRegistry
from engine.observe import Observation
from engine.snapshot import LayerSnapshot, StatsSnapshot
from engine.stats import CoMoments, Moments, NeuronAccumulator, merge_comoments, merge_moments

__all__ = [
    "CoMoments",
    "ConfigurationError",
    "CorrelationLimitError",
    "EngineError",
    "EpochRecord",
    "HistoryError",
    "LayerKind",
    "LayerNotFoundError",
    "LayerSnapshot",
    "LayoutMismatchError",
    "Moments",
    "NeuronAccumulator",
    "NeuronEngine",
    "NeuronNotFoundError",
    "NeuronRegistry",
    "Observation",
    "SnapshotError",
    "StatsSnapshot",
    "TrackedLayer",
    "TrackingStateError",
    "TrainingHistory",
    "__version__",
    "layer_kind_for",
    "merge_comoments",
    "merge_moments",
    "register_layer_kind",
]
