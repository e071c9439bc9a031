"""The run dashboard: one self-contained, offline HTML page per run folder.

``write_dashboard(run_dir, out)`` (or ``python -m engine dashboard RUN_DIR -o report.html``)
reads what a run wrote — ``history.json``, ``changes.jsonl``, ``weights/``,
``gradients.json``, ``dynamics/representations/`` (see :mod:`engine.dashboard.files`) — and
writes a page with the surgery timeline, units per layer, per-layer statistics and metrics,
weight change per layer (a layer × epoch heatmap), gradient dynamics and representation
dynamics (epoch × epoch neighbour overlap; a click opens a sample's neighbours at every
epoch with per-sample confidence). Panels whose file is missing show a note naming it.

>>> import tempfile, pathlib, torch
>>> from engine.history import TrainingHistory
>>> from engine.stats import Moments
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> h = TrainingHistory()
>>> _ = h.log(0, {"fc": ([0, 1], Moments.from_samples(torch.rand(3, 2)))}, loss=0.5)
>>> _ = h.save(run / "history.json")
>>> page = write_dashboard(run, run / "report.html", library="window.Plotly = {};")
>>> page.name, "no data:" in page.read_text()
('report.html', True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.dashboard.collect import collect_run
from engine.dashboard.errors import (
    DashboardError,
    MissingRunFileError,
    RunFileError,
    RunFolderError,
)
from engine.dashboard.page import render_page
from engine.dashboard.representations import save_probe


def write_dashboard(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    strict: bool = False,
    compress: bool = True,
    k: int = 10,
    max_samples: int = 200,
    confidence_layer: str | None = None,
    title: str | None = None,
    library: str | None = None,
) -> Path:
    """Write the dashboard of ``run_dir`` to ``out`` (atomically); returns ``out``.

    ``strict``: a missing file raises :class:`MissingRunFileError` instead of a note in its
    panel. ``compress``: embed Plotly gzip-compressed (default; see
    :mod:`engine.dashboard.page`). ``k``, ``max_samples``: neighbours per sample and probe
    samples shown; ``confidence_layer``: the layer whose softmax entropy is the confidence
    (default: the last stored layer).

    Example::

        write_dashboard("outputs/self_modifying/cnn", "outputs/self_modifying/cnn/report.html")
    """
    from engine.io import atomic_write_text

    data: dict[str, Any] = collect_run(
        run_dir, strict=strict, k=k, max_samples=max_samples, confidence_layer=confidence_layer
    )
    html = render_page(
        data, title=title or f"neuron-engine run: {Path(run_dir).name}", compress=compress,
        library=library,
    )  # fmt: skip
    return atomic_write_text(out, html)


__all__ = [
    "DashboardError",
    "MissingRunFileError",
    "RunFileError",
    "RunFolderError",
    "collect_run",
    "render_page",
    "save_probe",
    "write_dashboard",
]
