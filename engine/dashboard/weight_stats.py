"""``python -m engine weights RUN_DIR``: the change statistics of a weight-tracking folder as
text — first → last snapshot (total and per layer, units kept, removed, merged, added) and
the relative change of each layer from epoch to epoch.

>>> import tempfile, torch, torch.nn as nn
>>> from engine.weights import WeightTracker
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> tracker = WeightTracker(model, tempfile.mkdtemp(), background=False)
>>> for epoch in range(2):
...     with torch.no_grad():
...         for p in model[2].parameters():
...             _ = p.mul_(2.0)
...     _ = tracker.on_epoch(epoch)
>>> report = weight_change_report(tracker.run_dir)
>>> report.splitlines()[1].split(":")[0], report.splitlines()[3].split()[:3]
('first → last', ['2', 'relative', '1.0000'])
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.dashboard.errors import RunFolderError


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def weight_change_report(run_dir: str | os.PathLike[str], top: int = 8) -> str:
    """The report (see the module docstring); ``top`` layers (by mean change) get a column in
    the per-epoch table. ``run_dir`` is the tracker's folder (``index.json``) or a run folder
    holding it as ``weights/``."""
    from engine.dashboard.changes import weight_change
    from engine.weights.compare import compare_snapshots
    from engine.weights.store import SnapshotStore

    root = Path(run_dir)
    if (root / "weights" / "index.json").is_file():
        root = root / "weights"
    if not root.is_dir():
        raise RunFolderError(f"{run_dir}: no such weight-tracking folder")
    store = SnapshotStore(root)
    snaps = store.snapshots()
    if len(snaps) < 2:
        raise RunFolderError(
            f"{root}: {len(snaps)} snapshot(s) (index.json or snapshots/*.safetensors); "
            f"change needs two"
        )
    first, last = snaps[0], snaps[-1]
    cmp = compare_snapshots(first, last, lineage=store.lineage, on_unaligned="skip")

    def name(s) -> str:
        return f"#{s.entry.seq} {s.entry.name!r} (epoch {s.entry.epoch})"

    lines = [
        f"{root}: {len(snaps)} snapshots",
        f"first → last: {name(first)} → {name(last)}: relative change "
        f"{cmp.total.relative:.4f}, L2 {cmp.total.l2:.4g}",
    ]
    for module, sums in cmp.by_module().items():
        units = cmp.units.get(module)
        moved = ""
        if units is not None and (units.removed or units.added or units.merged):
            moved = (f"; units {units.width_a} → {units.width_b} (removed {len(units.removed)}, "
                     f"merged {sum(len(v) for v in units.merged.values())}, "
                     f"added {len(units.added)})")  # fmt: skip
        lines.append(f"  {module:<16} relative {sums.relative:.4f}  L2 {sums.l2:.4g}{moved}")
    unaligned = sorted(n for n, why in cmp.skipped.items()
                       if not why.startswith(("buffer", "not floating")))  # fmt: skip
    if unaligned:
        lines.append(f"  not compared (shapes without neuron IDs): {', '.join(unaligned[:8])}")
    per_epoch = weight_change(snaps, lineage=store.lineage)
    if per_epoch["epochs"]:
        shown = per_epoch["layers"][:top]
        more = len(per_epoch["layers"]) - len(shown)
        title = "relative change from the previous epoch"
        if more:
            title += f" (top {len(shown)} layers of {len(per_epoch['layers'])})"
        lines += ["", title]
        header = ["epoch", "total", *shown]
        rows = [
            [str(e), _cell(per_epoch["total"][i])]
            + [_cell(per_epoch["relative"][n][i]) for n in shown]
            for i, e in enumerate(per_epoch["epochs"])
        ]
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
        for r in [header, *rows]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)
