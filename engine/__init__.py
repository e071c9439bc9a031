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

from engine._version import __version__
from engine.core import NeuronEngine
from engine.distributed import rewrap
from engine.dynamics import (
    DynamicsConfigError,
    DynamicsError,
    GradientHistory,
    GradientTracker,
    LayerSimilarityHistory,
    MinibatchCKA,
    NeighbourCountError,
    RepresentationDynamics,
    RepresentationStore,
    capture_outputs,
    cka_matrix,
    linear_cka,
)
from engine.errors import (
    ConfigurationError,
    CorrelationLimitError,
    DatasetError,
    EngineError,
    FingerprintMismatchError,
    HistoryError,
    LayerNotFoundError,
    LayoutMismatchError,
    MissingExtraError,
    NeuronNotFoundError,
    NonFiniteStatisticsError,
    OptimizerRemapError,
    PlanError,
    PlanValidationError,
    RankMismatchError,
    SnapshotError,
    StalePlanError,
    SurgeryError,
    TiedWeightsError,
    TrackingStateError,
    TrialError,
    UnsupportedModuleError,
)
from engine.history import EpochRecord, TrainingHistory
from engine.layers import LayerKind, layer_kind_for, register_layer_kind
from engine.layout import ConsumerSlice, LayerLayout, ModelLayout
from engine.layout.build import build_layout
from engine.neurons import NeuronRegistry
from engine.observe import Observation
from engine.plan import (
    ExpandAction,
    FoldAction,
    MergeAction,
    Plan,
    PruneAction,
    validate_plan,
    validation_problems,
)
from engine.preview import preview_plan
from engine.sampling import Coverage, SamplingWindow
from engine.schedule import SurgerySchedule
from engine.sparsity import SparsityPressure, sparsity_penalty
from engine.stats import (
    CoMoments,
    Moments,
    NeuronAccumulator,
    NonFiniteStatisticsWarning,
    merge_comoments,
    merge_moments,
)
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from engine.surgery import (
    ActionRecord,
    SurgeryListener,
    SurgeryRecord,
    TrialRecord,
    apply_plan,
    held_out_loss,
    recalibrate_batchnorm,
    recovery_steps,
    run_trial,
)
from engine.tracked import TrackedLayer

__all__ = [
    "CoMoments",
    "ConfigurationError",
    "ConsumerSlice",
    "CorrelationLimitError",
    "DatasetError",
    "EngineError",
    "EpochRecord",
    "ExpandAction",
    "FingerprintMismatchError",
    "FoldAction",
    "HistoryError",
    "LayerKind",
    "LayerLayout",
    "LayerNotFoundError",
    "LayerSnapshot",
    "LayoutMismatchError",
    "MergeAction",
    "ModelLayout",
    "Moments",
    "NeuronAccumulator",
    "NeuronEngine",
    "NeuronNotFoundError",
    "NeuronRegistry",
    "Observation",
    "Plan",
    "PlanError",
    "PlanValidationError",
    "PruneAction",
    "SnapshotError",
    "SparsityPressure",
    "StatsSnapshot",
    "TrackedLayer",
    "TrackingStateError",
    "TrainingHistory",
    "__version__",
    "build_layout",
    "layer_kind_for",
    "merge_comoments",
    "merge_moments",
    "preview_plan",
    "register_layer_kind",
    "validate_plan",
    "validation_problems",
]

from engine.weights import (
    ChangeLog,
    ChangeLogError,
    SnapshotStore,
    WeightComparison,
    WeightShapeMismatchError,
    WeightSnapshot,
    WeightSnapshotError,
    WeightTracker,
    WeightTrackingError,
    capture_weights,
    compare_series,
    compare_snapshots,
)

__all__ += [
    "ActionRecord",
    "ChangeLog",
    "ChangeLogError",
    "Coverage",
    "DynamicsConfigError",
    "DynamicsError",
    "GradientHistory",
    "GradientTracker",
    "LayerSimilarityHistory",
    "MinibatchCKA",
    "MissingExtraError",
    "NeighbourCountError",
    "NonFiniteStatisticsError",
    "NonFiniteStatisticsWarning",
    "OptimizerRemapError",
    "RankMismatchError",
    "RepresentationDynamics",
    "RepresentationStore",
    "SamplingWindow",
    "SnapshotStore",
    "StalePlanError",
    "SurgeryError",
    "SurgeryListener",
    "SurgeryRecord",
    "SurgerySchedule",
    "TiedWeightsError",
    "TrialError",
    "TrialRecord",
    "UnsupportedModuleError",
    "WeightComparison",
    "WeightShapeMismatchError",
    "WeightSnapshot",
    "WeightSnapshotError",
    "WeightTracker",
    "WeightTrackingError",
    "apply_plan",
    "capture_outputs",
    "capture_weights",
    "cka_matrix",
    "compare_series",
    "compare_snapshots",
    "held_out_loss",
    "linear_cka",
    "recalibrate_batchnorm",
    "recovery_steps",
    "rewrap",
    "run_trial",
    "sparsity_penalty",
]
