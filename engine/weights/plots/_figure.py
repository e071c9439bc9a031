"""Shared plotting helpers: figures without pyplot (nothing global to leak), atomic PNG writes,
and the time axis of a run.

>>> fig = new_figure()
>>> ax = fig.add_subplot(); _ = ax.set_title("t")
>>> import tempfile, pathlib
>>> p = save_png(fig, pathlib.Path(tempfile.mkdtemp()) / "t.png")
>>> p.stat().st_size > 0, figure_texts(fig)["title"]
(True, ['t'])
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.io import atomic_write_bytes
from engine.weights.schema import SnapshotEntry

EVENT_COLORS = {
    "prune": "tab:red",
    "merge": "tab:orange",
    "fold": "tab:purple",
    "expand": "tab:green",
}


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    """A figure not registered with pyplot: it is freed like any object, never leaks."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path | None, dpi: int = 100) -> Path | None:
    """Write ``fig`` as PNG atomically (None: nothing written)."""
    if path is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(Path(path), buf.getvalue())


def figure_texts(fig: Figure) -> dict[str, list[str]]:
    """Titles and axis labels of every axes of ``fig`` (what a reader sees first)."""
    axes = list(fig.axes)
    return {
        "title": [a.get_title() for a in axes if a.get_title()],
        "xlabel": [a.get_xlabel() for a in axes if a.get_xlabel()],
        "ylabel": [a.get_ylabel() for a in axes if a.get_ylabel()],
        "suptitle": [fig._suptitle.get_text()] if fig._suptitle is not None else [],
    }


def timeline(entries: Sequence[SnapshotEntry]) -> tuple[list[float], str]:
    """x values of snapshots on a shared axis: steps when every snapshot has one, else epochs,
    else the snapshot's position; and the axis label."""
    if entries and all(e.step is not None for e in entries):
        return [float(e.step) for e in entries], "step"
    if entries and all(e.epoch is not None for e in entries):
        return [float(e.epoch) for e in entries], "epoch"
    return [float(i) for i in range(len(entries))], "snapshot"


def entries_of(items: Sequence[Any]) -> list[SnapshotEntry]:
    """Snapshot entries from snapshots or entries."""
    return [getattr(x, "entry", x) for x in items]
