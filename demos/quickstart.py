"""Quick start: train a small MLP on scikit-learn's digits while the engine watches every neuron.

    python demos/quickstart.py            # 10 epochs on the full data set (a few seconds)
    python demos/quickstart.py --fast     # 2 epochs on a subset (smoke test)
    python demos/quickstart.py --out DIR  # default: outputs/quickstart in the repository

Writes, under the output folder:

* ``stats/``       the statistics snapshot (``neuron-engine inspect``/``report`` read it)
* ``history.json`` per-epoch per-neuron mean/variance/firing rate with loss and accuracy
* ``report.txt``   the full text report: layers, dead units, activity ranking, redundancy
* ``plan.json``    what the default policies (``policies/default.yaml``) would change, as a
                   versioned plan (``neuron-engine inspect plan.json`` prints its summary)
"""

from __future__ import annotations

import sys

import demo_utils as du
import torch

from engine import NeuronEngine
from engine.report import full_report, layer_summary_report, save_report


def main(argv: list[str] | None = None) -> int:
    parser = du.demo_arguments("quickstart", __doc__.splitlines()[0], "2 epochs on a subset")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --fast)")
    args = du.parse_demo_arguments(parser, argv)
    epochs = args.epochs or (2 if args.fast else 10)

    torch.manual_seed(args.seed)
    data = du.digits(args.seed, fast=args.fast)
    model = du.mlp((128, 64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    engine = NeuronEngine(model, correlation=True)

    test_acc = 0.0
    for epoch in range(epochs):
        with engine.tracking():  # only the training forwards are observed
            loss, train_acc = du.train_epoch(model, opt, data.x_train, data.y_train)
        test_acc = du.accuracy(model, data.x_test, data.y_test)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc)
        print(
            f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  acc {train_acc:.3f}  test {test_acc:.3f}"
        )

    out = args.out
    snapshot = engine.snapshot(
        with_layout=True, demo="quickstart", epochs=epochs, test_accuracy=round(test_acc, 4)
    )
    stats = snapshot.save(out / "stats")
    history = engine.history.save(out / "history.json")
    report = save_report(out / "report.txt", full_report(snapshot, top=10, threshold=0.9))
    plan = engine.propose()  # policies/default.yaml
    plan_path = plan.save(out / "plan.json")

    print()
    print(layer_summary_report(snapshot))
    print()
    print(plan.summary())
    print()
    print(f"snapshot: {stats}")
    print(f"history:  {history}")
    print(f"report:   {report}")
    print(f"plan:     {plan_path}")
    print(f"next:     python -m engine report {stats} --top 5")
    print(f"          python -m engine plan {stats} --config policies/default.yaml")
    du.write_dashboard(out)  # per-layer statistics and metrics per epoch: report.html
    return 0


if __name__ == "__main__":
    sys.exit(main())
