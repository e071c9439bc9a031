"""Read a run folder into the dashboard's data: one entry per panel, either its data or a note
naming the file it lacks.

Missing files are not errors by default: the page renders the panels it has data for and says,
in each of the others, which file would fill it (``strict=True`` raises
:class:`MissingRunFileError` instead). A file that exists but is malformed always raises the
reader's typed error (naming the file); a folder with none of the files raises
:class:`RunFolderError`.

>>> import tempfile, pathlib, torch
>>> from engine.history import TrainingHistory
>>> from engine.stats import Moments
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> h = TrainingHistory()
>>> _ = h.log(0, {"fc": ([0, 1], Moments.from_samples(torch.rand(3, 2)))}, loss=0.5)
>>> _ = h.save(run / "history.json")
>>> data = collect_run(run)
>>> sorted(p for p, v in data["panels"].items() if "note" not in v)
['layer_stats', 'units']
>>> data["panels"]["timeline"]["note"].endswith("(the surgery change log: a WeightTracker "
...                                             "listening to the engine)")
True
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engine.dashboard.files import RunFiles, locate

PANELS = {
    "timeline": ("Surgery timeline", "changes"),
    "units": ("Units per layer", "weights|history"),
    "layer_stats": ("Per-layer statistics and metrics", "history"),
    "weights": ("Weight change per layer", "weights"),
    "gradients": ("Gradient dynamics", "gradients"),
    "representations": ("Representation dynamics", "representations"),
    "similarity": ("Layer similarity: all pairs of layers", "similarity"),
    "moving": ("Moving averages and weights at zero gradient", "moving"),
}


def _history(files: RunFiles):
    from engine.history import TrainingHistory

    path = files.found("history")
    return None if path is None else TrainingHistory.load(path)


def _store(files: RunFiles):
    from engine.weights.store import SnapshotStore

    path = files.found("weights")
    return None if path is None else SnapshotStore(path.parent)


def collect_run(
    run_dir: str | os.PathLike[str],
    *,
    strict: bool = False,
    k: int = 10,
    max_samples: int = 200,
    confidence_layer: str | None = None,
) -> dict[str, Any]:
    """``{"run": …, "panels": {panel: data or {"note": …}}, "titles": …}`` for the page."""
    from engine.dashboard.changes import gradient_dynamics, moving_dynamics, weight_change
    from engine.dashboard.representations import layer_similarity, representation_panels
    from engine.dashboard.training import history_panels, timeline, units_from_snapshots

    files = locate(run_dir)
    if strict:
        for source in ("history", "changes", "weights", "gradients", "representations"):
            files.require(source)
    history = _history(files)
    store = _store(files)
    panels: dict[str, Any] = {}

    path = files.found("changes")
    if path is None:
        panels["timeline"] = {"note": files.note("changes")}
    else:
        from engine.weights.changelog import ChangeLog

        panels["timeline"] = timeline(ChangeLog(path).read(), history)

    hist = history_panels(history) if history is not None else None
    entries = [s.entry for s in store.snapshots()] if store is not None else []
    if any(e.neuron_ids for e in entries):  # snapshots of an engine's model know the widths
        panels["units"] = {"source": "weights", **units_from_snapshots(entries)}
    elif hist is not None:
        panels["units"] = {"source": "history", "labels": [f"epoch {e}" for e in hist["epochs"]],
                           "epochs": hist["epochs"], "units": hist["units"]}  # fmt: skip
    else:
        panels["units"] = {"note": files.note("weights")}
    panels["layer_stats"] = hist if hist is not None else {"note": files.note("history")}

    if store is None:
        panels["weights"] = {"note": files.note("weights")}
    else:
        panels["weights"] = weight_change(store.snapshots(), lineage=store.lineage)

    from engine.dynamics.gradient_record import GradientHistory
    from engine.dynamics.layer_similarity import LayerSimilarityHistory
    from engine.dynamics.moving_averages import MovingAverageHistory
    from engine.dynamics.representations import RepresentationStore

    builders = {  # panel: (source file, how its data is made from the file's path)
        "gradients": ("gradients", lambda p: gradient_dynamics(GradientHistory.load(p))),
        "representations": ("representations", lambda p: representation_panels(
            RepresentationStore(p.parent), k=k, max_samples=max_samples,
            confidence_layer=confidence_layer, probe=files.found("probe"),
        )),
        "moving": ("moving", lambda p: moving_dynamics(MovingAverageHistory.load(p))),
        "similarity": ("similarity",
                       lambda p: layer_similarity(LayerSimilarityHistory.load(p).entries)),
    }  # fmt: skip
    for panel, (source, build) in builders.items():
        path = files.found(source)
        panels[panel] = {"note": files.note(source)} if path is None else build(path)
    return {
        "run": str(Path(run_dir)),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "titles": {p: title for p, (title, _) in PANELS.items()},
        "panels": panels,
    }
