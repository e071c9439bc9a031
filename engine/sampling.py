"""Sampling windows: track ``track`` of every ``every`` training steps, hooks removed between.

A hook left attached costs a Python call per module per forward even when it returns at once,
and a module with hooks leaves PyTorch's hook-free fast path. A :class:`SamplingWindow`
attaches the engine's hooks only for the steps it tracks (``engine.start()`` on entering one,
``engine.stop()`` on leaving it, also when the step raises) and leaves every other step
untouched: no hooks at all. The statistics then cover exactly the samples of the tracked
steps, and :meth:`SamplingWindow.coverage` (recorded in every ``engine.snapshot()``'s metadata
under ``"sampling"``) says which:

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> window = SamplingWindow(engine, track=1, every=4)
>>> for _ in range(10):
...     with window.step():
...         _ = model(torch.randn(16, 4))
>>> window.coverage().steps_tracked, window.coverage().steps, engine.snapshot().layers["0"].count
(3, 10, 48)

Steps ``0, 4, 8, …`` are tracked (``track`` consecutive steps at the start of every period of
``every``; ``offset`` shifts the period). A step is whatever runs inside ``with
window.step():``: one batch, or several (gradient accumulation). The window owns the hooks:
entering a step while the engine is tracking by other means raises ``TrackingStateError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import ConfigurationError, TrackingStateError

__all__ = ["Coverage", "SamplingWindow"]


class _Trackable(Protocol):
    """What a window needs of the engine: ``start``, ``stop`` and ``is_tracking``."""

    @property
    def is_tracking(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Coverage:
    """Which steps a window's statistics cover: ``steps_tracked`` of ``steps`` (steps
    ``offset + k·every + j`` for ``j < track``), since the window was made or reset."""

    track: int
    every: int
    offset: int
    steps: int
    steps_tracked: int

    @property
    def fraction(self) -> float:
        """Tracked steps ÷ steps (0.0 before the first step).

        >>> Coverage(1, 10, 0, 20, 2).fraction
        0.1
        """
        return self.steps_tracked / self.steps if self.steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (the snapshot metadata's ``"sampling"`` entry)."""
        return {
            "track": self.track, "every": self.every, "offset": self.offset,
            "steps": self.steps, "steps_tracked": self.steps_tracked,
            "fraction": self.fraction,
        }  # fmt: skip


class SamplingWindow:
    """Track ``track`` of every ``every`` steps of ``engine`` (see the module docstring).

    Raises ``ConfigurationError`` unless ``1 ≤ track ≤ every`` and ``0 ≤ offset < every``.
    """

    def __init__(self, engine: _Trackable, track: int = 1, every: int = 10, offset: int = 0):
        for name, value in (("track", track), ("every", every), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"sampling {name} must be an int, got {value!r}")
        if not 1 <= track <= every:
            raise ConfigurationError(
                f"sampling window: need 1 <= track <= every, got track={track}, every={every}"
            )
        if not 0 <= offset < every:
            raise ConfigurationError(
                f"sampling window: need 0 <= offset < every={every}, got offset={offset}"
            )
        self.engine = engine
        self.track, self.every, self.offset = track, every, offset
        self._steps = 0
        self._tracked = 0
        if engine is not None:  # NeuronEngine.snapshot() adds what this returns to metadata
            engine._snapshot_metadata = self.metadata  # type: ignore[attr-defined]

    def tracks(self, step: int) -> bool:
        """Whether step number ``step`` (counting from 0) is tracked.

        >>> SamplingWindow(None, track=2, every=5, offset=1).tracks(2)  # type: ignore[arg-type]
        True
        """
        return (step - self.offset) % self.every < self.track

    @property
    def tracks_next(self) -> bool:
        """Whether the next ``step()`` is tracked."""
        return self.tracks(self._steps)

    @contextmanager
    def step(self) -> Iterator[bool]:
        """``with window.step() as tracked:`` one training step, with the engine's hooks
        attached when it is a tracked step (``tracked`` is True) and none otherwise."""
        if self.engine.is_tracking:
            raise TrackingStateError(
                "sampling window: the engine is already tracking; the window attaches and "
                "removes the hooks itself (leave engine.tracking()/start() out of the loop)"
            )
        tracked = self.tracks(self._steps)
        self._steps += 1
        if not tracked:
            yield False
            return
        self._tracked += 1
        self.engine.start()
        try:
            yield True
        finally:
            self.engine.stop()

    def coverage(self) -> Coverage:
        """Steps seen and steps tracked so far (see :class:`Coverage`)."""
        return Coverage(self.track, self.every, self.offset, self._steps, self._tracked)

    def metadata(self) -> dict[str, Any]:
        """``{"sampling": coverage}``: the entry ``engine.snapshot()`` adds to its metadata
        (for the latest window made for the engine)."""
        return {"sampling": self.coverage().as_dict()}

    def reset(self) -> None:
        """Count steps from 0 again (e.g. after ``engine.reset()``, so that the coverage
        describes the statistics kept from then on)."""
        self._steps = self._tracked = 0
