"""Training dynamics: gradients, representations of a probe set, similarity between layers.

* ``GradientTracker``: near-zero / released / retained gradients, sign flips, minimum and
  maximum crossings and weight steps per parameter, on device, every N steps;
* ``RepresentationDynamics`` (with ``RepresentationStore``): a probe set's representations per
  epoch, kNN sets and their overlap over training (the training fingerprint), distances;
* ``linear_cka``, ``MinibatchCKA``, ``cross_correlation``, ``LayerSimilarityHistory``,
  ``augmentation_spread``: similarity within and between layers;
* ``capture_outputs``: layer outputs for a batch, hooks removed in ``finally``;
* ``cross_correlation_grid`` / ``plot_cross_correlation_grid``: every unit of every layer
  against every unit of every other (the all-pairs grid figure);
* ``MovingAverages``: EMA of gradients and weights, and weights where the gradient is zero.
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
from engine.dynamics.moving_averages import MovingAverageError, MovingAverageHistory, MovingAverages
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
    "MovingAverageError",
    "MovingAverageHistory",
    "MovingAverages",
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
    "cross_correlation_grid",
    "distance_matrix",
    "engine_capture_points",
    "epoch_similarity",
    "feature_correlation",
    "knn_sets",
    "linear_cka",
    "mean_abs_correlation",
    "neighbour_overlap",
    "overlap_over_time",
    "plot_cross_correlation_grid",
    "plot_gradient_dynamics",
    "plot_gradient_signs",
    "sample_correlation",
    "unbiased_hsic",
]

_LAZY = {  # these import matplotlib: only when asked for
    "plot_gradient_dynamics": "plots",
    "plot_gradient_signs": "plots",
    "cross_correlation_grid": "correlation_grid",
    "plot_cross_correlation_grid": "correlation_grid",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"engine.dynamics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'engine.dynamics' has no attribute {name!r}")
