"""Self-modifying training on Fashion-MNIST, read from the IDX files in a local folder.

    python demos/fashion_mnist.py                 # 12 epochs on the full data (about a minute)
    python demos/fashion_mnist.py --fast          # 4 epochs on 1000 samples per part
    python demos/fashion_mnist.py --data DIR      # where the four IDX files are
    python demos/fashion_mnist.py --out DIR       # default: outputs/fashion_mnist

The data is never downloaded. Put the four files of https://github.com/zalandoresearch/fashion-mnist
(``data/fashion``: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; compressed or not) in
``data/fashion-mnist/`` under the repository, or in a folder named by ``--data`` or by the
environment variable ``FASHION_MNIST_DIR``. Without them the demo says which files are missing
where, and exits with status 2.

An MLP 784-256-128-10 trains with Adam while the engine watches every hidden unit (with
correlation). Every ``--every`` epochs a ``SurgerySchedule`` runs the policies
(``policies/default.yaml`` unless ``--config``) on the statistics gathered since the last
surgery, saves the plan and applies it to the live model and optimizer; the last two epochs
fine-tune without surgery.

Writes, under the output folder:

* ``plans/plan-epochNNN.json``  every proposed plan (also the empty ones)
* ``surgeries.json``            what each applied plan did (widths, parameters, output change)
* ``history.json``              per-epoch per-neuron statistics with loss, accuracy, parameters
* ``stats/``                    statistics since the last surgery (``python -m engine report``)
* ``report.txt``                the full text report of those statistics
* ``plan.json``                 what the policies would change now (not applied)
* ``summary.json``              per-epoch accuracy, loss, parameters, widths
* ``weights/``                  weight snapshots per epoch and around each surgery, and
                                ``changes.jsonl``, the change log (one line per applied action)
* ``dynamics/``                 64 test images' representations per epoch
* ``report.html``               the run's dashboard (``python -m engine dashboard``)
* ``training.png``              test accuracy and parameter count per epoch, surgeries marked
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import torch
from demo_utils import (
    REPO,
    accuracy,
    count_parameters,
    demo_arguments,
    fresh_run_dir,
    mlp,
    parse_demo_arguments,
    positive,
    probe_dynamics,
    train_epoch,
    write_dashboard,
)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from engine import NeuronEngine, SurgerySchedule
from engine.data import load_fashion_mnist
from engine.errors import DatasetError, EngineError
from engine.io import atomic_write_bytes, atomic_write_text
from engine.report import full_report, save_report
from engine.weights import WeightTracker
from policies import resolve_config

ENV = "FASHION_MNIST_DIR"
DEFAULT_DIR = REPO / "data" / "fashion-mnist"


def data_dir(given: Path | None) -> Path:
    """``--data``, else ``$FASHION_MNIST_DIR``, else ``data/fashion-mnist`` in the repository."""
    if given is not None:
        return given
    return Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT_DIR


def widths(model: torch.nn.Module) -> dict[str, int]:
    return {n: m.out_features for n, m in model.named_children() if isinstance(m, torch.nn.Linear)}


def plot(rows: list[dict], surgeries: list[int], path: Path) -> None:
    """Test accuracy and parameter count (after the epoch's surgery) per epoch; dotted lines
    at the surgeries."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [r["epoch"] + 1 for r in rows]
    ax.plot(epochs, [r["test_accuracy"] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy", color="tab:blue")
    twin = ax.twinx()
    twin.plot(epochs, [r["params"] for r in rows], "s--", color="tab:red")
    twin.set_ylabel("parameters", color="tab:red")
    for epoch in surgeries:
        ax.axvline(epoch + 1, color="grey", linestyle=":", linewidth=1)
    ax.set_title("Fashion-MNIST MLP: accuracy and size (dotted: surgery)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments(
        "fashion_mnist", __doc__.splitlines()[0], "4 epochs on 1000 samples per part"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"folder of the IDX files (default: ${ENV}, else {DEFAULT_DIR})",
    )
    parser.add_argument("--epochs", type=positive, help="default 12 (4 with --fast)")
    parser.add_argument("--every", type=positive, help="epochs between surgeries (default 3; 2 "
                        "with --fast)")  # fmt: skip
    parser.add_argument("--config", type=Path, default=None,
                        help="policy YAML (default: policies/default.yaml)")  # fmt: skip
    args = parse_demo_arguments(parser, argv)
    epochs = args.epochs or (4 if args.fast else 12)
    every = args.every or (2 if args.fast else 3)

    folder = data_dir(args.data)
    try:
        config = resolve_config(args.config)  # a bad YAML stops the demo now, not at epoch 3
        data = load_fashion_mnist(folder, subset=1000 if args.fast else None, flat=True)
    except DatasetError as exc:
        print(f"fashion_mnist: {exc}", file=sys.stderr)
        print(f"(choose the folder with --data DIR or ${ENV})", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"fashion_mnist: {exc}", file=sys.stderr)
        return 2
    print(f"Fashion-MNIST from {folder}: {len(data.x_train)} train, {len(data.x_test)} test")

    out: Path = args.out.resolve()
    torch.manual_seed(args.seed)
    model = mlp((256, 128), inputs=data.x_train.shape[1], classes=data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params_initial = count_parameters(model)
    engine = NeuronEngine(model, correlation=True)
    tracker = WeightTracker(engine, fresh_run_dir(out / "weights"), example_inputs=data.x_train[:2])
    engine.add_listener(tracker)  # weight snapshots and the change log of every surgery
    probe = probe_dynamics(engine, data.x_test, data.y_test, out / "dynamics", side=28)
    schedule = SurgerySchedule(
        engine, opt, config, every=every,
        stop=max(1, epochs - 2), plans_dir=out / "plans",
    )  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    rows: list[dict] = []
    for epoch in range(epochs):
        with engine.tracking():
            loss, train_acc = train_epoch(
                model, opt, data.x_train, data.y_train, batch=128, generator=gen
            )
        test_acc = accuracy(model, data.x_test, data.y_test)
        params = count_parameters(model)  # the model this epoch trained
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc,
                         params=params)  # fmt: skip
        tracker.on_epoch(epoch, loss=loss)
        probe.record(epoch)
        record = schedule.epoch_end(epoch)
        row = {
            "epoch": epoch, "loss": round(loss, 5), "train_accuracy": round(train_acc, 4),
            "test_accuracy": round(test_acc, 4), "params_trained": params,
            "params": count_parameters(model), "widths": widths(model),
        }  # fmt: skip
        line = (f"epoch {epoch + 1:2d}/{epochs}  loss {loss:.4f}  train {train_acc:.3f}  "
                f"test {test_acc:.3f}  params {params}")  # fmt: skip
        if record is not None:
            row["surgery"] = [f"{a.label} {a.layer}" for a in record.actions]
            line += (f"\n    surgery: {', '.join(row['surgery'])} → params "
                     f"{record.params_after}, widths {widths(model)}")  # fmt: skip
        rows.append(row)
        print(line)

    final_acc = accuracy(model, data.x_test, data.y_test)
    snapshot = engine.snapshot(with_layout=True, demo="fashion_mnist", epochs=epochs)
    stats = snapshot.save(out / "stats")
    report = save_report(out / "report.txt", full_report(snapshot, top=10, threshold=0.9))
    plan_path = engine.propose(schedule.config).save(out / "plan.json")
    history = engine.history.save(out / "history.json")
    records = [r.model_dump(mode="json") for r in schedule.records]
    atomic_write_text(out / "surgeries.json", json.dumps(records, indent=2) + "\n")
    summary = {
        "data": str(folder), "train_samples": len(data.x_train), "test_samples": len(data.x_test),
        "epochs": epochs, "every": every, "seed": args.seed,
        "final_test_accuracy": round(final_acc, 4),
        "params_initial": params_initial, "params_final": count_parameters(model),
        "widths_final": widths(model), "surgery_epochs": [r.epoch for r in schedule.records],
        "per_epoch": rows,
    }  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot(rows, summary["surgery_epochs"], out / "training.png")

    print(f"\nfinal test accuracy {final_acc:.4f}; parameters {summary['params_initial']} → "
          f"{summary['params_final']}; widths {widths(model)}")  # fmt: skip
    done = [e + 1 for e in summary["surgery_epochs"]]
    print(f"{len(schedule.records)} surgeries applied (after epochs {done})")
    for name, path in (("plans", out / "plans"), ("surgeries", out / "surgeries.json"),
                       ("history", history), ("stats", stats), ("report", report),
                       ("plan", plan_path), ("summary", out / "summary.json"),
                       ("plot", out / "training.png")):  # fmt: skip
        print(f"{name + ':':<11}{path}")
    write_dashboard(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
