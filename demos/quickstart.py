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

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.report import full_report, layer_summary_report, save_report

REPO = Path(__file__).resolve().parents[1]
SEED = 0


def load_digits_tensors(fast: bool) -> tuple[torch.Tensor, ...]:
    """Digits (1797 8×8 images, bundled with scikit-learn) scaled to [0, 1], split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this demo needs scikit-learn: pip install -e '.[demos]'")
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    if fast:
        order = order[:600]
    split = int(0.8 * len(order))
    train, test = order[:split], order[split:]
    return x[train], y[train], x[test], y[test]


def build_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(64, 128),
            relu1=nn.ReLU(),
            fc2=nn.Linear(128, 64),
            relu2=nn.ReLU(),
            fc_out=nn.Linear(64, 10),
        )
    )


def train_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int
) -> tuple[float, float]:
    model.train()
    order = torch.randperm(len(x))
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch):
        idx = order[start : start + batch]
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
    return loss_sum / len(x), correct / len(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="2 epochs on a subset")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "quickstart")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (2 with --fast)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.fast else 10)

    torch.manual_seed(SEED)
    x_train, y_train, x_test, y_test = load_digits_tensors(args.fast)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    engine = NeuronEngine(model, correlation=True)

    test_acc = 0.0
    for epoch in range(epochs):
        with engine.tracking():  # only the training forwards are observed
            loss, train_acc = train_epoch(model, opt, x_train, y_train, batch=64)
        test_acc = accuracy(model, x_test, y_test)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc)
        print(
            f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  acc {train_acc:.3f}  test {test_acc:.3f}"
        )

    out: Path = args.out
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
