"""Accuracy right after compensated pruning (no fine-tuning) on scikit-learn's digits.

MLP 64-128-64-10 trained with Adam; then 50 % and 70 % of both hidden layers are removed with
the compensated budget policy (units folded onto the kept ones by least squares) and, for
comparison, by plain magnitude pruning (smallest incoming-weight L2 norm, no compensation).
Accuracy is measured on the held-out split with ``engine.preview`` (the function the plan gives).
Also times plan generation for an MLP 784-256-128-10 with correlation (policies only, and with
the layout build).

    python benchmarks/compensated_pruning.py [--seeds 3] [--epochs 30] [--fast]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from engine import NeuronEngine
from engine.plan.actions import PruneAction
from engine.preview import preview_plan
from policies import BudgetPolicy, PolicyConfig, propose_actions
from policies.guards import GuardSettings


def data(seed: int):
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.3, random_state=seed, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(xtr), torch.tensor(ytr), f(xte), torch.tensor(yte)


def train(seed: int, epochs: int, widths=(128, 64)):
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = data(seed)
    model = nn.Sequential(
        nn.Linear(64, widths[0]), nn.ReLU(), nn.Linear(widths[0], widths[1]), nn.ReLU(),
        nn.Linear(widths[1], 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr)).split(64):
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, (xtr, ytr, xte, yte)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean()) * 100


def compensated(model, xtr, fraction: float):
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        model(xtr)
    layout = engine.model_layout()
    config = PolicyConfig([BudgetPolicy(remove_fraction=fraction)], GuardSettings())
    actions = propose_actions(engine.snapshot(), layout, config)
    return preview_plan(model, actions, layout)


def magnitude(model, xtr, fraction: float):
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        model(xtr[:8])
    layout = engine.model_layout()
    actions = []
    for name in ("0", "2"):
        w = model.get_submodule(name).weight
        k = round(fraction * w.shape[0])
        idx = torch.argsort(w.norm(dim=1))[:k].tolist()
        actions.append(PruneAction(layer=name, local_indices=idx, neuron_ids=idx,
                                   constant_values=[0.0] * k, reason="magnitude"))  # fmt: skip
    return preview_plan(model, actions, layout)


def plan_timing(repeats: int = 5) -> tuple[float, float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))  # fmt: skip
    engine = NeuronEngine(model, correlation=True)
    with engine.tracking(), torch.no_grad():
        for _ in range(20):
            model(torch.randn(256, 784))
    snap, layout = engine.snapshot(), engine.model_layout()
    only, full = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        propose_actions(snap, layout, None)
        only.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.propose()
        full.append(time.perf_counter() - t)
    return statistics.median(only) * 1e3, statistics.median(full) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--fast", action="store_true", help="1 seed, 5 epochs")
    args = ap.parse_args()
    seeds, epochs = (1, 5) if args.fast else (args.seeds, args.epochs)
    torch.set_num_threads(2)
    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        model, (xtr, _, xte, yte) = train(seed, epochs)
        rows.setdefault("unpruned", []).append(accuracy(model, xte, yte))
        for f in (0.5, 0.7):
            rows.setdefault(f"compensated, remove {f:.0%}", []).append(
                accuracy(compensated(model, xtr, f), xte, yte)
            )
            rows.setdefault(f"magnitude, remove {f:.0%}", []).append(
                accuracy(magnitude(model, xtr, f), xte, yte)
            )
    print(f"digits test accuracy (%), MLP 64-128-64-10, {epochs} epochs, {seeds} seed(s), "
          "no fine-tuning")  # fmt: skip
    for name, vals in rows.items():
        spread = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        print(f"  {name:<26} {statistics.mean(vals):6.2f}  ± {spread:.2f}   {vals}")
    only, full = plan_timing()
    print(
        f"plan generation, MLP 784-256-128-10 with correlation: policies {only:.1f} ms, "
        f"with layout build and snapshot {full:.1f} ms (median of 5)"
    )


if __name__ == "__main__":
    main()
