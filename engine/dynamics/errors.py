"""Typed errors of the training-dynamics analyses (all subclasses of ``EngineError``).

Each names the offending item: the layer, the parameter, the epoch, the requested count.

>>> from engine.errors import EngineError
>>> err = NeighbourCountError(k=20, samples=8, where="layer 'fc1', epoch 3")
>>> isinstance(err, EngineError), isinstance(err, ValueError)
(True, True)
>>> str(err)
"layer 'fc1', epoch 3: asked for 20 neighbours but only 8 samples (at most 7 neighbours each)"
"""

from __future__ import annotations

from engine.errors import ConfigurationError, EngineError


class DynamicsError(EngineError):
    """Base class of the errors raised by ``engine.dynamics``."""


class DynamicsConfigError(DynamicsError, ConfigurationError):
    """An argument of a dynamics analysis is invalid (names the argument and the bad value)."""


class UnknownModuleError(DynamicsError, KeyError):
    """A layer (module) or parameter name does not exist in the model."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        shown = ", ".join(repr(k) for k in known[:12])
        more = "" if len(known) <= 12 else f", … ({len(known)} in all)"
        super().__init__(f"{kind} {name!r} is not in the model; known: {shown}{more}")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class NeighbourCountError(DynamicsError, ValueError):
    """More nearest neighbours were requested than there are other samples."""

    def __init__(self, k: int, samples: int, where: str = "representations") -> None:
        super().__init__(
            f"{where}: asked for {k} neighbours but only {samples} samples "
            f"(at most {max(samples - 1, 0)} neighbours each)"
        )
        self.k, self.samples = k, samples


class RepresentationShapeError(DynamicsError, ValueError):
    """A representation tensor has the wrong shape (names the layer and both shapes)."""


class RepresentationStoreError(DynamicsError, ValueError):
    """A representation store on disk is missing, malformed, or lacks a requested epoch/layer."""


class SimilarityHistoryError(DynamicsError, ValueError):
    """A layer-similarity history file is malformed."""
