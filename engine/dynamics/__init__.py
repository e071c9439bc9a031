"""Training dynamics: gradients, representations of a probe set, similarity between layers.

* ``GradientTracker``: near-zero / released / retained gradients, sign flips, minimum and
  maximum crossings and weight steps per parameter, on device, every N steps;
* ``RepresentationDynamics`` (with ``RepresentationStore``): a probe set's representations per
  epoch, kNN sets and their overlap over training (the training fingerprint), distances;
* ``linear_cka``, ``MinibatchCKA``, ``cross_correlation``, ``LayerSimilarityHistory``,
  ``augmentation_spread``: similarity within and between layers;
* ``capture_outputs``: layer outputs for a batch, hooks removed in ``finally``.
"""

from engine.dynamics.capture import capture_outputs, engine_capture_points
from engine.dynamics.errors import (
    DynamicsConfigError,
    DynamicsError,
    NeighbourCountError,
    RepresentationShapeError,
    RepresentationStoreError,
    SimilarityHistoryError,
    UnknownModuleError,
)
from engine.dynamics.gradient_record import GradientHistory, GradientHistoryError
from engine.dynamics.gradients import GradientTracker
from engine.dynamics.layer_similarity import (
    LayerSimilarityHistory,
    augmentation_spread,
    mean_abs_correlation,
)
from engine.dynamics.neighbours import (
    distance_matrix,
    epoch_similarity,
    knn_sets,
    neighbour_overlap,
    overlap_over_time,
)
from engine.dynamics.probes import RepresentationDynamics
from engine.dynamics.representations import RepresentationStore
from engine.dynamics.similarity import (
    MinibatchCKA,
    cka_matrix,
    cross_correlation,
    feature_correlation,
    linear_cka,
    sample_correlation,
    unbiased_hsic,
)

__all__ = [
    "DynamicsConfigError",
    "DynamicsError",
    "GradientHistory",
    "GradientHistoryError",
    "GradientTracker",
    "LayerSimilarityHistory",
    "MinibatchCKA",
    "NeighbourCountError",
    "RepresentationDynamics",
    "RepresentationShapeError",
    "RepresentationStore",
    "RepresentationStoreError",
    "SimilarityHistoryError",
    "UnknownModuleError",
    "augmentation_spread",
    "capture_outputs",
    "cka_matrix",
    "cross_correlation",
    "distance_matrix",
    "engine_capture_points",
    "epoch_similarity",
    "feature_correlation",
    "knn_sets",
    "linear_cka",
    "mean_abs_correlation",
    "neighbour_overlap",
    "overlap_over_time",
    "plot_gradient_dynamics",
    "plot_gradient_signs",
    "sample_correlation",
    "unbiased_hsic",
]

_PLOTS = ("plot_gradient_dynamics", "plot_gradient_signs")


def __getattr__(name: str):  # the plots import matplotlib: only when asked for
    if name in _PLOTS:
        from engine.dynamics import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'engine.dynamics' has no attribute {name!r}")
