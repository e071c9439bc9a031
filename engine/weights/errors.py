"""Typed errors of weight-change tracking; each names the offending snapshot, file or tensor.

>>> from engine.errors import EngineError
>>> issubclass(WeightShapeMismatchError, EngineError), issubclass(WeightSnapshotError, ValueError)
(True, True)
"""

from __future__ import annotations

from engine.errors import EngineError


class WeightTrackingError(EngineError):
    """Base class of the errors raised by ``engine.weights``."""


class WeightSnapshotError(WeightTrackingError, ValueError):
    """A weight snapshot, its file or the run's index is missing, malformed or unsafe."""


class WeightShapeMismatchError(WeightTrackingError, ValueError):
    """Two snapshots hold a tensor with different shapes along an axis that carries no neuron
    IDs, so its entries cannot be matched (names the tensor, both shapes and the axis)."""


class TensorNotFoundError(WeightTrackingError, KeyError):
    """A parameter or buffer name is not in a snapshot (names it and what is there)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class ChangeLogError(WeightTrackingError, ValueError):
    """A change-log file has a malformed line (names the file and the line number)."""


class WeightPlotError(WeightTrackingError, ValueError):
    """A plot was asked for with data it cannot draw (too few snapshots, no correlation…)."""
