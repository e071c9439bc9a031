"""Dataset-level analysis: activity, dead and dormant units, redundancy, similarity of layers.

Trains an MLP 64-128-64-10 on scikit-learn's digits for a few epochs, then runs one pass over
the whole training set (eval mode, no gradients) with a ``NeuronEngine`` tracking correlation,
and writes what the statistics say about every unit and every layer.

    python demos/analysis.py                 # 10 epochs on the full data set (a few seconds)
    python demos/analysis.py --fast          # 2 epochs on a subset (smoke test)
    python demos/analysis.py --threshold 0.8 # |r| at which two units count as redundant
    python demos/analysis.py --out DIR       # default: outputs/analysis in the repository

Writes, under the output folder:

* ``stats/``          the dataset-level statistics snapshot, with the model layout
                      (``python -m engine report|plan`` read it)
* ``report.txt``      the engine's full report (layers, activity ranking, redundant pairs with
                      |r| ≥ threshold and their linear fits, per-neuron table), then the dead
                      and dormant units of each layer and the CKA matrix between layers
* ``analysis.json``   the same findings as data: dead, dormant and redundant units per layer,
                      the CKA matrix, accuracies
* ``plots/activity_<layer>.png``     neurons × statistics (mean, std, max, mean |a|, firing
                                     rate), each column scaled to its maximum
* ``plots/class_means_<layer>.png``  neurons × classes: mean activation per digit class
* ``plots/correlation_<layer>.png``  feature × feature Pearson correlation of the layer's units
* ``plots/cka.png``                  linear CKA between the input and every tracked layer
* ``history.json``, ``report.html``  per-epoch statistics while it trained, and the run's
                                     dashboard (``python -m engine dashboard``)

Figures are drawn on matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from demo_utils import (
    accuracy,
    demo_arguments,
    digits,
    mlp,
    parse_demo_arguments,
    train_epoch,
    write_dashboard,
)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine import NeuronEngine
from engine.dynamics import capture_outputs, cka_matrix, engine_capture_points
from engine.dynamics.plots import plot_heatmap
from engine.report import full_report, layer_summary_report, redundant_pairs, save_report
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from engine.weights.plots import plot_correlation

DORMANCY = 0.1  # ReDo score mean|a_i| / mean_j mean|a_j| at or below which a unit is dormant
STATISTICS = {  # column label -> LayerSnapshot attribute
    "mean": "mean",
    "std": "std",
    "max": "maximum",
    "mean |a|": "mean_abs",
    "firing rate": "firing_rate",
}


def matrix_figure(
    values: np.ndarray, path: Path, *, title: str, columns: list[str], rows: list[int], label: str
) -> Path:
    """A (units × columns) heatmap with named columns and neuron IDs on the rows."""
    fig = Figure(figsize=(6.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    img = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="magma")
    fig.colorbar(img, ax=ax, label=label)
    ax.set_xticks(range(len(columns)), columns, rotation=30)
    step = max(1, len(rows) // 16)
    ax.set_yticks(range(0, len(rows), step), [str(r) for r in rows[::step]])
    ax.set(title=title, ylabel="neuron ID")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def dormancy(layer: LayerSnapshot) -> torch.Tensor:
    """ReDo score of every unit (NaN when the layer carries no signal at all)."""
    typical = layer.mean_abs.mean()
    return layer.mean_abs / typical if typical > 0 else torch.full_like(layer.mean_abs, torch.nan)


def findings(snapshot: StatsSnapshot, threshold: float) -> dict[str, dict]:
    """Per layer: dead units, dormant (not dead) units, redundant pairs, as neuron IDs."""
    pairs = redundant_pairs(snapshot, threshold)
    out = {}
    for name, layer in snapshot.layers.items():
        ids, dead, score = layer.neuron_ids, layer.dead, dormancy(layer)
        dormant = torch.nonzero((score <= DORMANCY) & ~dead).flatten().tolist()
        out[name] = {
            "units": layer.num_units,
            "samples": layer.count,
            "dead": [ids[i] for i in torch.nonzero(dead).flatten().tolist()],
            "dormant": {ids[i]: round(float(score[i]), 6) for i in dormant},
            "redundant_pairs": [
                {"neuron_ids": list(p["neuron_ids"]), "correlation": round(p["correlation"], 4)}
                for p in pairs.get(name, [])
            ],
        }
    return out


def findings_report(found: dict[str, dict], names: list[str], cka: torch.Tensor) -> str:
    """The dead/dormant lists and the CKA matrix as text, in the engine report's style."""
    rule = "=" * 80
    lines = ["DEAD AND DORMANT UNITS", rule]
    lines.append(f"dormant: ReDo score mean|a_i| / mean_j mean|a_j| <= {DORMANCY} (not dead)")
    for name, f in found.items():
        dormant = ", ".join(f"{i} ({s:.2g})" for i, s in f["dormant"].items()) or "none"
        lines += [
            f"{name}: {len(f['dead'])} dead of {f['units']}: {f['dead'] or 'none'}",
            f"{' ' * len(name)}  {len(f['dormant'])} dormant: {dormant}",
        ]
    width = max(len(n) for n in names) + 2
    lines += ["", "", "LINEAR CKA BETWEEN LAYERS (whole training set)", rule]
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, cka.tolist()):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
    return "\n".join(lines) + "\n"


def layer_plots(
    snapshot: StatsSnapshot, outputs: dict[str, torch.Tensor], labels: torch.Tensor, plots: Path
) -> list[Path]:
    """Activity, per-class mean and correlation heatmaps of every tracked layer."""
    written = []
    classes = sorted(set(labels.tolist()))
    for name, layer in snapshot.layers.items():
        stem = name.replace(".", "_")
        stats = np.stack([getattr(layer, a).numpy() for a in STATISTICS.values()], axis=1)
        scale = np.abs(stats).max(axis=0)
        stats = stats / np.where(scale > 0, scale, 1.0)
        written.append(
            matrix_figure(
                stats, plots / f"activity_{stem}.png", title=f"{name}: unit statistics",
                columns=list(STATISTICS), rows=layer.neuron_ids, label="value / column max",
            )
        )  # fmt: skip
        acts = outputs[name]
        means = torch.stack([acts[labels == c].mean(0) for c in classes], dim=1)
        written.append(
            matrix_figure(
                means.numpy(), plots / f"class_means_{stem}.png",
                title=f"{name}: mean activation per class", columns=[str(c) for c in classes],
                rows=layer.neuron_ids, label="mean activation",
            )
        )  # fmt: skip
        written.append(plots / f"correlation_{stem}.png")
        plot_correlation(layer, path=written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments("analysis", __doc__.splitlines()[0], "2 epochs on a 600-sample subset")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --fast)")
    parser.add_argument("--threshold", type=float, default=0.9, help="|r| of a redundant pair")
    args = parse_demo_arguments(parser, argv)
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    epochs = args.epochs or (2 if args.fast else 10)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    data = digits(args.seed, fast=args.fast)
    model = mlp((128, 64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(args.seed)
    watcher = NeuronEngine(model)  # per-epoch history while it trains: the run's dashboard
    for epoch in range(epochs):
        with watcher.tracking():
            loss, train_acc = train_epoch(model, opt, data.x_train, data.y_train, generator=shuffle)
        watcher.log_epoch(epoch, loss=loss, accuracy=train_acc)
        print(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  train acc {train_acc:.3f}")
    test_acc = accuracy(model, data.x_test, data.y_test)
    watcher.history.save(out / "history.json")

    # Dataset-level pass: every training sample once, in eval mode, with correlation.
    engine = NeuronEngine(model, correlation=True)
    model.eval()
    with engine.tracking(), torch.no_grad():
        for batch in data.x_train.split(256):
            model(batch)
    snapshot = engine.snapshot(
        with_layout=True, demo="analysis", epochs=epochs, test_accuracy=round(test_acc, 4)
    )

    outputs = capture_outputs(model, data.x_train, engine_capture_points(engine))
    representations = {"input": data.x_train, **outputs}
    cka = cka_matrix(representations)
    found = findings(snapshot, args.threshold)

    stats = snapshot.save(out / "stats")
    text = full_report(snapshot, top=10, threshold=args.threshold, limit=None)
    report = save_report(
        out / "report.txt", text + "\n\n" + findings_report(found, list(representations), cka)
    )
    summary = {
        "epochs": epochs,
        "seed": args.seed,
        "samples": len(data.x_train),
        "test_accuracy": test_acc,
        "threshold": args.threshold,
        "dormancy_threshold": DORMANCY,
        "layers": found,
        "cka": {"layers": list(representations), "matrix": cka.tolist()},
    }
    analysis = out / "analysis.json"
    analysis.write_text(json.dumps(summary, indent=2) + "\n")
    plots = layer_plots(snapshot, outputs, data.y_train, out / "plots")
    names = list(representations)
    plots.append(
        plot_heatmap(
            cka.numpy(), out / "plots" / "cka.png", title="linear CKA between layers",
            labels=names, vmin=0.0, vmax=1.0,
        )
    )  # fmt: skip

    print()
    print(layer_summary_report(snapshot))
    print()
    print(f"test accuracy {test_acc:.3f}; dataset pass over {len(data.x_train)} samples")
    for name, f in found.items():
        print(
            f"{name:>8}: {len(f['dead'])} dead, {len(f['dormant'])} dormant, "
            f"{len(f['redundant_pairs'])} pairs with |r| >= {args.threshold:g}"
        )
    steps = [f"{names[i]}→{names[i + 1]} {cka[i, i + 1]:.3f}" for i in range(len(names) - 1)]
    print("CKA with the next layer: " + ", ".join(steps))
    print()
    print(f"snapshot: {stats}")
    print(f"report:   {report}")
    print(f"findings: {analysis}")
    print(f"plots:    {len(plots)} PNGs under {out / 'plots'}")
    print(f"next:     python -m engine report {stats} --threshold {args.threshold:g}")
    write_dashboard(out)  # per-layer statistics and metrics over the training epochs
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
