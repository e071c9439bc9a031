"""Weight-change tracking across surgery: snapshots, comparisons, change log, plots.

>>> import tempfile, torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> tracker = WeightTracker(model, tempfile.mkdtemp())
>>> _ = tracker.on_epoch(0)
>>> with torch.no_grad():
...     _ = model[2].weight.zero_()
>>> _ = tracker.on_epoch(1)
>>> cmp = tracker.compare()
>>> cmp.tensors["0.weight"].l2, cmp.tensors["2.weight"].relative
(0.0, 1.0)
"""

from engine.weights.changelog import ChangeEntry, ChangeLog, lineage_from_record
from engine.weights.compare import (
    NeuronChange,
    TensorChange,
    UnitChanges,
    WeightComparison,
    compare_series,
    compare_snapshots,
)
from engine.weights.errors import (
    ChangeLogError,
    TensorNotFoundError,
    WeightPlotError,
    WeightShapeMismatchError,
    WeightSnapshotError,
    WeightTrackingError,
)
from engine.weights.metrics import ChangeSums
from engine.weights.schema import SnapshotEntry, UnitAxis
from engine.weights.store import SnapshotStore
from engine.weights.tracker import WeightTracker
from engine.weights.weight_snapshot import WeightSnapshot, capture_weights

__all__ = [
    "ChangeEntry",
    "ChangeLog",
    "ChangeLogError",
    "ChangeSums",
    "NeuronChange",
    "SnapshotEntry",
    "SnapshotStore",
    "TensorChange",
    "TensorNotFoundError",
    "UnitAxis",
    "UnitChanges",
    "WeightComparison",
    "WeightPlotError",
    "WeightShapeMismatchError",
    "WeightSnapshot",
    "WeightSnapshotError",
    "WeightTracker",
    "WeightTrackingError",
    "capture_weights",
    "compare_series",
    "compare_snapshots",
    "lineage_from_record",
]
