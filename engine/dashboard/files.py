"""Which files of a run folder the dashboard reads, and where it looks for each.

A run folder is what a demo (or your training script) writes: ``history.json``
(``engine.history``), ``changes.jsonl`` (the surgery change log, also found in ``weights/``),
``weights/`` (a ``WeightTracker`` run folder), ``gradients.json`` (``GradientHistory.save``)
and ``dynamics/representations/`` (a ``RepresentationDynamics`` store, with an optional
``dynamics/probe.safetensors`` holding the probe inputs and labels). Every file is optional;
the first candidate path that exists is used.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = (run / "history.json").write_text("{}")
>>> files = locate(run)
>>> files.found("history").name, files.found("gradients"), files.missing()[0][0]
('history.json', None, 'changes.jsonl')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.dashboard.errors import MissingRunFileError, RunFolderError

# source → (candidate paths relative to the run folder, what it holds and who writes it)
SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    "history": (("history.json",), "per-epoch statistics and metrics: engine.history.save"),
    "changes": (
        ("changes.jsonl", "weights/changes.jsonl"),
        "the surgery change log: a WeightTracker listening to the engine",
    ),
    "weights": (
        ("weights/index.json", "index.json"),
        "weight snapshots: WeightTracker(engine, RUN_DIR / 'weights')",
    ),
    "gradients": (("gradients.json",), "gradient dynamics: GradientTracker.history().save"),
    "representations": (
        ("dynamics/representations/representations.json", "representations/representations.json"),
        "probe representations: RepresentationDynamics(..., directory=RUN_DIR / 'dynamics')",
    ),
    "similarity": (
        ("dynamics/layer_similarity.json", "layer_similarity.json"),
        "CKA and cross-correlation between layers: RepresentationDynamics.record",
    ),
    "moving": (
        ("moving_averages.json",),
        "EMA of gradients and weights: engine.dynamics.moving_averages.MovingAverages",
    ),
    "probe": (
        ("dynamics/probe.safetensors",),
        "probe inputs and labels: engine.dashboard.save_probe",
    ),
}

OPTIONAL = ("similarity", "moving", "probe")  # beside the others; never a run alone


@dataclass(frozen=True)
class RunFiles:
    """The run folder and, per source, the file found (or None)."""

    run_dir: Path
    paths: dict[str, Path | None]

    def found(self, source: str) -> Path | None:
        return self.paths[source]

    def missing(self) -> list[tuple[str, str]]:
        """``(expected file, what it holds)`` of every source not found."""
        return [(SOURCES[s][0][0], SOURCES[s][1]) for s, p in self.paths.items() if p is None]

    def require(self, source: str) -> Path:
        """The file of ``source``, or :class:`MissingRunFileError` naming it."""
        path = self.paths[source]
        if path is None:
            names, what = SOURCES[source]
            raise MissingRunFileError(self.run_dir, " or ".join(names), what)
        return path

    def note(self, source: str) -> str:
        """One line for a panel without data: which file is missing and who writes it."""
        names, what = SOURCES[source]
        return f"no data: {self.run_dir / names[0]} not found ({what})"


def locate(run_dir: str | os.PathLike[str]) -> RunFiles:
    """Find the files of ``run_dir``; :class:`RunFolderError` when it is not a folder or holds
    none of them (the message lists what was looked for)."""
    run = Path(run_dir)
    if not run.exists():
        raise RunFolderError(f"{run}: no such run folder")
    if not run.is_dir():
        raise RunFolderError(f"{run}: not a folder (give the run folder a demo wrote, --out)")
    paths: dict[str, Path | None] = {}
    for source, (names, _) in SOURCES.items():
        paths[source] = next((run / n for n in names if (run / n).is_file()), None)
    if not any(p for s, p in paths.items() if s not in OPTIONAL):
        wanted = ", ".join(names[0] for s, (names, _) in SOURCES.items() if s not in OPTIONAL)
        raise RunFolderError(f"{run}: not a run folder: none of {wanted} found")
    return RunFiles(run, paths)
