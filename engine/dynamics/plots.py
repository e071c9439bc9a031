"""Matplotlib figures (Agg, written atomically as PNG) for the training-dynamics analyses.

No global backend is changed: each figure is a ``matplotlib.figure.Figure`` on its own Agg
canvas. Every function returns the path it wrote.

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> path = plot_heatmap(np.eye(3), Path(tempfile.mkdtemp()) / "m.png", title="eye")
>>> path.stat().st_size > 0
True
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from engine.dynamics.gradient_record import GradientHistory
from engine.io import atomic_write_bytes


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_heatmap(
    matrix: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    labels: list[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Path:
    """A square or rectangular matrix as a heatmap with a colour bar."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    im = ax.imshow(
        np.asarray(matrix, dtype=float),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        aspect="auto",
        interpolation="nearest",
    )
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90)
        ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def plot_lines(
    x: np.ndarray,
    series: dict[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, y in series.items():
        ax.plot(x, y, label=label, lw=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if 1 < len(series) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


GRADIENT_CURVES = {
    "near_zero": "gradients with |g| < eps",
    "released_fraction": "fraction of near-zero gradients released",
    "sign_flip_fraction": "fraction of gradient sign flips",
    "weight_diff_norm": "‖w_t − w_(t−1)‖",
}

# packed codes −2…3 → red (near zero, negative), white, grey (exact zero), white, green, absent
_SIGN_CMAP = ListedColormap(["#d62728", "white", "#7f7f7f", "white", "#2ca02c", "#dddddd"])


def gradient_sign_matrix(history: GradientHistory) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """``(steps, sampled components)`` codes of every parameter side by side, and where each
    parameter's block starts."""
    blocks, starts, at = [], [], 0
    for name, codes in history.signs.items():
        blocks.append(codes)
        starts.append((name, at))
        at += codes.shape[1]
    return (np.concatenate(blocks, axis=1) if blocks else np.zeros((0, 0))), starts


def plot_gradient_signs(
    history: GradientHistory,
    path: str | os.PathLike[str],
    *,
    steps: slice = slice(None),
    columns: slice = slice(None),
    title: str = "layer-wise gradient signs",
) -> Path:
    """Heatmap of sampled gradient components over steps: red/green = near zero with negative/
    positive sign, white = not near zero; ``steps``/``columns`` slices zoom in."""
    matrix, starts = gradient_sign_matrix(history)
    fig = Figure(figsize=(9, 5))
    ax = fig.add_subplot()
    shown = matrix[steps, columns]
    ax.imshow(shown + 2, cmap=_SIGN_CMAP, vmin=0, vmax=5, aspect="auto", interpolation="nearest")
    ax.set(
        title=title,
        xlabel="gradient component (sampled, first → last layer)",
        ylabel="recorded step",
    )
    first = columns.start or 0
    for name, start in starts:
        if 0 <= start - first < shown.shape[1]:
            ax.axvline(start - first - 0.5, color="black", lw=0.5)
            ax.text(start - first, -0.5, name, fontsize=6, rotation=45, va="bottom")
    return _save(fig, path)


def plot_gradient_dynamics(
    history: GradientHistory, directory: str | os.PathLike[str]
) -> list[Path]:
    """The seed's figures: near-zero counts, released fraction, sign-flip fraction, weight
    difference norm (one line per parameter), sign heatmap and a zoomed view."""
    directory = Path(directory)
    paths = []
    for column, title in GRADIENT_CURVES.items():
        series = {name: history.column(name, column) for name in history.parameters}
        paths.append(
            plot_lines(
                history.steps,
                series,
                directory / f"gradients_{column}.png",
                title=title,
                xlabel="step",
                ylabel=column,
            )
        )
    if history.signs:
        paths.append(plot_gradient_signs(history, directory / "gradient_signs.png"))
        n = len(history.steps)
        paths.append(
            plot_gradient_signs(
                history,
                directory / "gradient_signs_zoom.png",
                steps=slice(max(n - 50, 0), n),
                columns=slice(0, 64),
                title="gradient signs (zoom: last 50 steps, first 64 components)",
            )
        )
    return paths


def plot_fingerprint(
    epochs: list[int], overlap: np.ndarray, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Neighbour overlap per sample (rows) over epochs (columns)."""
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    im = ax.imshow(
        np.asarray(overlap).T, vmin=0, vmax=1, aspect="auto", cmap="magma", interpolation="nearest"
    )
    ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
    ax.set(title=title or "training fingerprint: kNN overlap", xlabel="epoch", ylabel="sample")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)
