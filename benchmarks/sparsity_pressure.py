"""Sparsity pressure on and off: accuracy, and how many units it makes removable.

Digits (scikit-learn), MLP 64-128-64-10 (``demo_utils.mlp``), Adam lr 1e-3, batch 64, the same
epochs and the same batch order for every strength of one seed. The loss is cross-entropy plus
``engine.SparsityPressure(model, strength=s)`` (group lasso over the units of fc1 and fc2:
incoming row and bias, each group weighted by √(group size); fc_out is left out), with
``s = 0`` (off) and a few strengths. After training, per run:

* ``test``: held-out accuracy;
* ``tiny``: units whose group norm is below 1e-3 × their layer's median (``removable()``), and
  ``tiny@1e-2`` with a 1e-2 bar;
* ``pruned``: accuracy after the engine prunes the ``tiny`` units (a plan of prune actions, each
  unit's mean activation over the training set folded into the consumer's bias; at least 4
  units kept per layer), and the parameters left;
* ``policy``: units the engine's own ``dead`` + ``low_activity`` policies (default settings
  and guards) remove after a pass over the training set, and the accuracy after that plan.

Medians over the seeds are printed, one row per strength; ``--json`` writes every number.

    python benchmarks/sparsity_pressure.py                    # 3 seeds, 30 epochs, ~1 min
    python benchmarks/sparsity_pressure.py --fast             # smoke test: 1 seed, 3 epochs
    python benchmarks/sparsity_pressure.py --strengths 0 1e-4 1e-3 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "demos"))

import demo_utils as du  # noqa: E402

from engine import NeuronEngine, SparsityPressure  # noqa: E402
from engine.plan import Plan, PruneAction  # noqa: E402

WIDTHS = (128, 64)
HIDDEN = ("fc1", "fc2")
MIN_KEEP = 4
POLICIES = {"policies": [{"name": "dead"}, {"name": "low_activity"}]}


def train(split, seed: int, strength: float, epochs: int, batch: int = 64):
    torch.manual_seed(seed)
    model = du.mlp(WIDTHS)
    pressure = SparsityPressure(model, strength=strength)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)  # same batches for every strength
    x, y = split.x_train, split.y_train
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=order).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx]) + pressure()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, pressure


def calibrated_engine(model, x) -> NeuronEngine:
    engine = NeuronEngine(model)
    model.eval()
    with engine.tracking(), torch.no_grad():
        for xb in x.split(256):
            model(xb)
    return engine


def prune_small(model, split, bar: float) -> tuple[int, float, int]:
    """Prune the units whose group norm is below ``bar`` × their layer's median with the
    engine; returns (units removed, test accuracy, parameters left)."""
    pressure = SparsityPressure(model)  # the strength does not matter for reading norms
    engine = calibrated_engine(model, split.x_train)
    snap = engine.snapshot()
    norms = pressure.group_norms()
    actions = []
    for name, units in pressure.removable(bar).items():
        if len(units) > len(norms[name]) - MIN_KEEP:  # keep the largest MIN_KEEP units
            keep = set(norms[name].argsort(descending=True)[:MIN_KEEP].tolist())
            units = [u for u in units if u not in keep]
        if not units:
            continue
        ids = engine.neurons.ids(name)
        actions.append(PruneAction(
            layer=name, local_indices=units, neuron_ids=[ids[u] for u in units],
            constant_values=[float(snap.layers[name].mean[u]) for u in units],
            reason=f"group norm below {bar:g} × the layer's median",
        ))  # fmt: skip
    removed = sum(len(a.local_indices) for a in actions)
    if actions:
        engine.apply(Plan.create(actions, engine.layout))
    return removed, du.accuracy(model, split.x_test, split.y_test), du.count_parameters(model)


def prune_by_policies(model, split) -> tuple[int, float]:
    engine = calibrated_engine(model, split.x_train)
    plan = engine.propose(POLICIES)
    removed = sum(len(a.local_indices) for a in plan.prune)
    if removed:
        engine.apply(plan)
    return removed, du.accuracy(model, split.x_test, split.y_test)


def run(seed: int, strength: float, epochs: int, fast: bool) -> dict:
    split = du.digits(seed, fast=fast)
    start = time.perf_counter()
    model, pressure = train(split, seed, strength, epochs)
    seconds = time.perf_counter() - start
    norms = pressure.group_norms()
    test = du.accuracy(model, split.x_test, split.y_test)
    out = dict(seed=seed, strength=strength, train_seconds=seconds, test=test,
               params=du.count_parameters(model),
               median_norm={n: float(v.median()) for n, v in norms.items()})  # fmt: skip
    for key, bar in (("1e-3", 1e-3), ("1e-2", 1e-2)):
        out[f"small_{key}_per_layer"] = {n: len(u) for n, u in pressure.removable(bar).items()}
        units, acc, params = prune_small(copy_model(model), split, bar)
        out.update({f"pruned_{key}_units": units, f"pruned_{key}_acc": acc,
                    f"pruned_{key}_params": params})  # fmt: skip
    out["policy_units"], out["policy_acc"] = prune_by_policies(copy_model(model), split)
    return out


def copy_model(model):
    clone = du.mlp(WIDTHS)
    clone.load_state_dict(model.state_dict())
    return clone


COLUMNS = [  # (JSON key, header, format, width)
    ("strength", "strength", "{:g}", 8), ("test", "test %", "{:.1f}", 6),
    ("units_1e-3", "<1e-3 units", "{:.0f}", 11), ("acc_1e-3", "→ %", "{:.1f}", 5),
    ("units_1e-2", "<1e-2 units", "{:.0f}", 11), ("acc_1e-2", "→ %", "{:.1f}", 5),
    ("params_1e-2", "params", "{:.0f}", 6),
    ("policy_units", "policy units", "{:.0f}", 12), ("policy_acc", "→ %", "{:.1f}", 5),
    ("median_fc1", "median ‖g‖ fc1", "{:.3f}", 14), ("median_fc2", "fc2", "{:.3f}", 5),
]  # fmt: skip


def summary_row(runs: list[dict]) -> list[float]:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return [
        runs[0]["strength"], 100 * med("test"),
        med("pruned_1e-3_units"), 100 * med("pruned_1e-3_acc"),
        med("pruned_1e-2_units"), 100 * med("pruned_1e-2_acc"), med("pruned_1e-2_params"),
        med("policy_units"), 100 * med("policy_acc"),
        statistics.median(r["median_norm"]["fc1"] for r in runs),
        statistics.median(r["median_norm"]["fc2"] for r in runs),
    ]  # fmt: skip


def table(rows: list[list[float]]) -> str:
    head = "  ".join(f"{name:>{w}}" for _, name, _, w in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append("  ".join(f"{fmt.format(v):>{w}}" for (_, _, fmt, w), v in zip(COLUMNS, row)))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    ap.add_argument("--epochs", type=int, default=None, help="default 30 (3 with --fast)")
    ap.add_argument("--strengths", type=float, nargs="+", default=None,
                    help="default 0 1e-4 3e-4 1e-3 3e-3 (0 and 1e-3 with --fast)")  # fmt: skip
    ap.add_argument("--fast", action="store_true", help="1 seed, 3 epochs, a 600-image subset")
    ap.add_argument("--threads", type=du.positive, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    epochs = args.epochs or (3 if args.fast else 30)
    strengths = args.strengths or ([0.0, 1e-3] if args.fast else [0.0, 1e-4, 3e-4, 1e-3, 3e-3])
    runs = [[run(seed, s, epochs, args.fast) for seed in seeds] for s in strengths]
    units = sum(WIDTHS)
    print(f"digits, MLP 64-{WIDTHS[0]}-{WIDTHS[1]}-10 ({units} hidden units, "
          f"{runs[0][0]['params']} parameters), Adam 1e-3, {epochs} epochs, median of seeds "
          f"{seeds}; group lasso on fc1, fc2 (strength 0 = off)")  # fmt: skip
    print(table([summary_row(r) for r in runs]))
    print("<1e-3 / <1e-2 units: units whose group norm is below 1e-3 / 1e-2 × their layer's "
          "median, pruned by the engine (→ % the test accuracy after, params the parameters "
          "left); policy: the dead + low_activity policies' plan")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        keys = [c[0] for c in COLUMNS]
        record = dict(settings=dict(seeds=seeds, epochs=epochs, strengths=strengths,
                                    fast=args.fast, widths=list(WIDTHS)),
                      runs=[r for group in runs for r in group],
                      summary=[dict(zip(keys, summary_row(r))) for r in runs])  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
