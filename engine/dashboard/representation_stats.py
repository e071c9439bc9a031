"""``python -m engine representations RUN_DIR``: representation dynamics as text.

For every stored layer of a run's probe representations (``RepresentationDynamics``): how much
each sample's ``k`` nearest neighbours stay the same from one recorded epoch to the next (mean
overlap, 1 = the neighbourhoods did not move), first → last, and the samples whose
neighbourhoods moved most over training; then the per-sample confidence (softmax entropy of
the last layer, the logits of a classifier) per epoch. The dashboard draws the same numbers
(``engine.dashboard.representations``).

>>> import tempfile, pathlib, torch
>>> from engine.dynamics import RepresentationStore
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> store = RepresentationStore(run / "dynamics" / "representations", sample_ids=list(range(8)))
>>> for e in range(3):
...     store.record(e, {"out": torch.randn(8, 3, generator=torch.Generator().manual_seed(e))})
>>> lines = representation_report(run, k=2).splitlines()
>>> lines[0].startswith("representations of 8 probe samples"), lines[2].split()[0]
(True, 'out')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.dashboard.errors import RunFolderError


def _store_dir(run_dir: Path) -> Path:
    for candidate in (run_dir / "dynamics" / "representations", run_dir / "representations",
                      run_dir):  # fmt: skip
        if (candidate / "representations.json").is_file():
            return candidate
    raise RunFolderError(
        f"{run_dir}: no representations.json (looked in dynamics/representations/, "
        f"representations/ and the folder itself); RepresentationDynamics(..., "
        f"directory=RUN_DIR / 'dynamics') writes it"
    )


def representation_report(
    run_dir: str | os.PathLike[str], *, k: int = 10, top: int = 5, max_samples: int = 200
) -> str:
    """The report (see the module docstring): ``k`` neighbours per sample, the ``top``
    samples whose neighbourhoods moved most, among the first ``max_samples`` probe samples."""
    from engine.dashboard.representations import representation_panels
    from engine.dynamics.representations import RepresentationStore

    root = Path(run_dir)
    if not root.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    store = RepresentationStore(_store_dir(root))
    data = representation_panels(store, k=k, max_samples=max_samples)
    ids = data["sample_ids"]
    lines = [
        f"representations of {len(ids)} probe samples (of {data['samples_total']}), "
        f"k = {data['k']} neighbours, epochs {store.epochs}",
        f"{'layer':<24}{'epochs':>7}{'width':>8}{'next-epoch overlap':>20}{'first→last':>12}"
        f"  moved most (sample: overlap first→last)",
    ]
    for layer in data["layers"]:
        panel = data["per_layer"][layer]
        overlap = np.asarray(panel["overlap"], dtype=float)
        epochs = panel["epochs"]
        steps = [overlap[i, i + 1] for i in range(len(epochs) - 1)]
        step_text = f"{np.mean(steps):.3f}" if steps else "-"
        whole = f"{overlap[0, -1]:.3f}" if len(epochs) > 1 else "-"
        moved = ""
        if len(epochs) > 1:
            sets = panel["neighbours"]
            first, last = np.asarray(sets[str(epochs[0])]), np.asarray(sets[str(epochs[-1])])
            kept = np.array([len(set(a) & set(b)) for a, b in zip(first, last, strict=True)])
            order = np.argsort(kept, kind="stable")[:top]
            moved = ", ".join(f"{ids[i]}: {kept[i] / first.shape[1]:.2f}" for i in order)
        lines.append(f"{layer:<24}{len(epochs):>7}{panel['widths'][-1]:>8}{step_text:>20}"
                     f"{whole:>12}  {moved}")  # fmt: skip
    conf = data["confidence"]
    bound = data["max_entropy"]
    lines.append("")
    lines.append(
        f"confidence ({data['confidence_layer']!r}: mean softmax entropy per epoch; 0 is certain"
        + (f", {bound:.3f} a uniform guess)" if bound else ")")
    )
    lines.append("  " + "  ".join(f"{e}: {np.mean(v):.3f}" for e, v in conf.items()))
    return "\n".join(lines)
