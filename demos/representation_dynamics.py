"""Representation dynamics: how a fixed probe set's neighbourhoods settle while a CNN trains.

Trains the small CNN (conv 16-32, fc 64) on scikit-learn's digits. After every epoch,
``RepresentationDynamics`` captures the tracked layers' outputs for a fixed probe set (64 test
images), stores them, and records the linear CKA and mean |cross-correlation| between every
two layers. At the end it writes the training fingerprint (each sample's k-nearest-neighbour
overlap with the previous epoch), the epoch × epoch overlap heatmap and the distance and
correlation heatmaps of one layer, and the run's dashboard, where a click on a heatmap cell
shows a sample's nearest neighbours at every epoch with their confidence (softmax entropy).

    python demos/representation_dynamics.py            # 12 epochs on the full data set
    python demos/representation_dynamics.py --fast     # 3 epochs on a subset (smoke test)
    python demos/representation_dynamics.py --out DIR  # default: outputs/representation_dynamics

Writes, under the output folder:

* ``history.json``                      per-epoch statistics, loss and accuracies
* ``dynamics/representations/``         the probe's representations, one file per epoch
* ``dynamics/probe.safetensors``        the probe images and labels
* ``dynamics/layer_similarity.json``    CKA and mean |cross-correlation| between all layers
* ``dynamics/neighbours_fc1.json``, ``fingerprint_fc1.png``, ``epoch_overlap_fc1.png``,
  ``distances_fc1.png``, ``features_correlation_fc1.png``, ``samples_correlation_fc1.png``,
  ``cka.png``                           the report of layer ``fc1``
* ``report.html``                       the dashboard (``python -m engine dashboard DIR``)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import demo_utils as du
import torch

from engine import NeuronEngine


def main(argv: list[str] | None = None) -> int:
    parser = du.demo_arguments(
        "representation_dynamics", __doc__.splitlines()[0], "3 epochs on a 600-sample subset"
    )
    parser.add_argument("--epochs", type=du.positive, help="default 12 (3 with --fast)")
    parser.add_argument("--k", type=du.positive, default=10, help="neighbours per sample")
    args = du.parse_demo_arguments(parser, argv)
    epochs = args.epochs or (3 if args.fast else 12)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    data = du.digits(args.seed, fast=args.fast, images=True)
    model = du.small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    engine = NeuronEngine(model)
    dynamics = du.probe_dynamics(engine, data.x_test, data.y_test, out / "dynamics")
    shuffle = torch.Generator().manual_seed(args.seed)
    dynamics.record(0)  # before training: the first row of the fingerprint
    for epoch in range(1, epochs + 1):
        with engine.tracking():
            loss, train_acc = du.train_epoch(model, opt, data.x_train, data.y_train,
                                             generator=shuffle)  # fmt: skip
        test_acc = du.accuracy(model, data.x_test, data.y_test)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc)
        dynamics.record(epoch)
        _, overlap = dynamics.fingerprint("fc1", k=args.k)
        print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  test {test_acc:.3f}  fc1 neighbours "
              f"kept from the previous epoch {overlap[-1].mean():.2f}")  # fmt: skip
    history = engine.history.save(out / "history.json")
    figures = dynamics.write_report("fc1", k=args.k)
    print()
    print(f"history:  {history}")
    print(f"dynamics: {out / 'dynamics'} ({len(figures)} files for fc1)")
    du.write_dashboard(out)
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
