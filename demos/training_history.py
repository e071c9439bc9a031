"""Training history and weight change: what each neuron and each weight did, epoch by epoch.

Trains an MLP 64-128-64-10 on scikit-learn's digits while a ``NeuronEngine`` records per-neuron
statistics per epoch (``engine.log_epoch``), a ``WeightTracker`` snapshots the weights before
training and after every epoch, and the engine's gradient tracker records near-zero gradients,
sign flips and weight steps at every optimizer step. Then it draws the whole run.

    python demos/training_history.py          # 15 epochs on the full data set (a few seconds)
    python demos/training_history.py --fast   # 3 epochs on a subset (smoke test)
    python demos/training_history.py --out DIR  # default: outputs/training_history

Writes, under the output folder:

* ``history.json``        per epoch: loss, accuracies, and each neuron's mean, variance and
                          firing rate over that epoch (``TrainingHistory.load`` reads it)
* ``weights/``            the weight snapshots (safetensors) and their ``index.json``; a rerun
                          into the same folder starts this run folder afresh
* ``weight_change.json``  first → last snapshot: L1, L2, cosine and relative change per tensor
                          and in total, and the units kept, removed, merged or added
* ``gradients.json``      gradient dynamics per parameter and recorded step
* ``plots/``              ``total_change``, ``layer_change``, ``change_histogram``,
                          ``architecture`` and ``activity_<layer>`` (firing rate per neuron and
                          epoch), from ``plot_run``; ``mean_activity_<layer>``;
                          ``weight_heatmap_<layer>`` (ΔW first → last) and
                          ``trajectories_<layer>`` (sampled weights over the epochs) per layer
                          (with ``--fast``: ``mean_activity``, ``weight_heatmap`` and
                          ``trajectories`` of the first layer only, ``fc1``);
                          ``curves`` (loss and accuracies)
* ``moving_averages.json``  per parameter and step: EMA of the gradient and of the weights,
                          and how far weights moved where the previous gradient was zero
* ``dynamics/``           the probe set's representations per epoch (64 test samples) and
                          ``probe.safetensors``, read by the dashboard's representation panel
* ``report.html``         the run's dashboard (``python -m engine dashboard``; needs the
                          ``dashboard`` extra)
* ``plots/gradients/``    near-zero, released and sign-flip fractions, ‖Δw‖ per parameter, and
                          the gradient-sign heatmap (full and zoomed)

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
    fresh_run_dir,
    mlp,
    parse_demo_arguments,
    probe_dynamics,
    train_epoch,
    write_dashboard,
)

from engine import NeuronEngine
from engine.dynamics import plot_gradient_dynamics
from engine.dynamics.moving_averages import MovingAverages
from engine.dynamics.plots import plot_lines
from engine.weights import WeightTracker
from engine.weights.plots import (
    plot_neuron_activity,
    plot_run,
    plot_weight_heatmap,
    plot_weight_trajectories,
)


def draw(
    engine: NeuronEngine,
    tracker: WeightTracker,
    epochs: list[int],
    curves: dict[str, list[float]],
    plots: Path,
    layers: list[str],
) -> list[Path]:
    """Every figure of the run (the per-layer weight views for ``layers``); the PNG paths."""
    written = list(plot_run(tracker, plots).values())
    snaps = tracker.snapshots()
    for layer in layers:
        stem = layer.replace(".", "_")
        written.append(plots / f"mean_activity_{stem}.png")
        plot_neuron_activity(engine.history, layer, "mean", path=written[-1])
        tensor = f"{layer}.weight"
        written.append(plots / f"weight_heatmap_{stem}.png")
        plot_weight_heatmap(snaps[0], snaps[-1], tensor, path=written[-1])
        written.append(plots / f"trajectories_{stem}.png")
        plot_weight_trajectories(snaps, tensor, path=written[-1])
    written.append(
        plot_lines(
            np.asarray(epochs), {k: np.asarray(v) for k, v in curves.items()},
            plots / "curves.png", title="loss and accuracy", xlabel="epoch", ylabel="value",
        )
    )  # fmt: skip
    return written


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments(
        "training_history", __doc__.splitlines()[0], "3 epochs on a 600-sample subset"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default 15 (3 with --fast)")
    args = parse_demo_arguments(parser, argv)
    epochs = args.epochs or (3 if args.fast else 15)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    data = digits(args.seed, fast=args.fast)
    model = mlp((128, 64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    engine = NeuronEngine(model)
    # example_inputs: the layout (which weight columns belong to which unit) is known from the
    # first snapshot on, before the engine has seen a batch; trajectories follow units by ID.
    tracker = WeightTracker(engine, fresh_run_dir(out / "weights"), example_inputs=data.x_train[:2])
    engine.add_listener(tracker)  # snapshots around surgery too, if a plan were applied
    grads = engine.gradient_tracker(eps=1e-5, every=1)
    averages = MovingAverages(model, beta=0.9, eps=1e-5)  # EMAs; weights at zero gradient
    dynamics = probe_dynamics(engine, data.x_test, data.y_test, out / "dynamics")
    dynamics.record(0)
    shuffle = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = -(-len(data.x_train) // 64)

    tracker.on_epoch(0, step=0)  # the initial weights
    curves: dict[str, list[float]] = {"loss": [], "train accuracy": [], "test accuracy": []}
    for epoch in range(1, epochs + 1):
        with engine.tracking(), engine.gradient_tracking(opt), averages.tracking(opt):
            loss, train_acc = train_epoch(model, opt, data.x_train, data.y_train, generator=shuffle)
        test_acc = accuracy(model, data.x_test, data.y_test)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc)
        tracker.on_epoch(epoch, step=epoch * steps_per_epoch, loss=loss)
        dynamics.record(epoch)
        for key, value in zip(curves, (loss, train_acc, test_acc)):
            curves[key].append(value)
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  acc {train_acc:.3f}  test {test_acc:.3f}")

    history = engine.history.save(out / "history.json")
    change = tracker.compare(0, -1)
    change_path = out / "weight_change.json"
    change_path.write_text(json.dumps(change.to_json(), indent=2) + "\n")
    gradient_history = grads.history()
    gradients = gradient_history.save(out / "gradients.json")
    averages.history().save(out / "moving_averages.json")
    layers = list(engine.layers)[: 1 if args.fast else None]  # --fast: fewer figures
    plots = draw(engine, tracker, list(range(1, epochs + 1)), curves, out / "plots", layers)
    plots += plot_gradient_dynamics(gradient_history, out / "plots" / "gradients")

    print()
    print(f"weights, first → last snapshot: total L2 {change.total.l2:.3f}, relative "
          f"{change.total.relative:.3f}")  # fmt: skip
    for module, sums in change.by_module().items():
        moved = change.neurons.get(module)
        top = "" if moved is None else f", most-changed neuron {int(moved.ids[moved.l2.argmax()])}"
        print(f"  {module:>7}: relative change {sums.relative:.3f}{top}")
    near_zero = gradient_history.column("*", "near_zero")
    flips = gradient_history.column("*", "sign_flip_fraction")
    print(
        f"gradients: {len(gradient_history.steps)} steps recorded; near-zero components "
        f"{int(near_zero[0])} → {int(near_zero[-1])}; sign-flip fraction in the last epoch "
        f"{np.nanmean(flips[-steps_per_epoch:]):.3f}"
    )
    print()
    print(f"history:   {history}")
    print(f"weights:   {tracker.run_dir} ({len(tracker.snapshots())} snapshots)")
    print(f"change:    {change_path}")
    print(f"gradients: {gradients}")
    print(f"plots:     {len(plots)} PNGs under {out / 'plots'}")
    write_dashboard(out)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
