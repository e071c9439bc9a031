"""From statistics to an optimization plan: policies → plan.json → summary → what it would do.

Trains an MLP 64-128-64-10 on scikit-learn's digits, gathers the statistics of the trained
model in one pass over the training set (correlation on), saves them with the model layout,
and runs two policy configurations on them: ``policies/default.yaml`` (dead, dormant,
redundant and saturated units) and a compensated budget (remove a share of every hidden layer
and fold the removed units onto the kept ones by least squares). Each plan is saved, summarised,
and applied to a deep copy of the model to show the parameters and test accuracy before and
after surgery (no fine-tuning). The trained model is left untouched.

    python demos/optimization_plan.py               # 30 epochs on the full data set
    python demos/optimization_plan.py --fast        # 3 epochs on a subset (smoke test)
    python demos/optimization_plan.py --remove 0.7  # budget: share of hidden units removed
    python demos/optimization_plan.py --out DIR     # default: outputs/optimization_plan

Writes, under the output folder:

* ``stats/``             the statistics snapshot with the model layout (the CLI plans from it)
* ``budget.yaml``        the budget policy configuration (``--config`` of the CLI)
* ``plan_default.json``  the plan of ``policies/default.yaml``
* ``plan.json``          the budget plan (the compensated removal)
* ``model.safetensors``  the trained model with its spec (``python -m engine apply`` reads it)
* ``summary.txt``        both plan summaries, the before/after table, the CLI equivalents
* ``results.json``       per plan: units and parameters before/after, test accuracy
                         before/after, measured output change on the probe batch
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml
from demo_utils import (
    REPO,
    accuracy,
    count_parameters,
    demo_arguments,
    digits,
    mlp,
    parse_demo_arguments,
    train_epoch,
    write_dashboard,
)

from engine import NeuronEngine
from engine.checkpoint import ModelSpec
from engine.checkpoint import save as save_checkpoint
from engine.plan import Plan
from engine.surgery import SurgeryRecord, apply_plan

WIDTHS = (128, 64)
FACTORY = "demos.demo_utils:mlp"  # importable from the repository root


def budget_config(remove: float) -> dict:
    """Dead units first (exact), then a compensated removal of ``remove`` of each layer."""
    return {
        "version": 1,
        "guards": {"min_width": 4},
        "policies": [
            {"name": "dead"},
            {"name": "budget", "settings": {"remove_fraction": remove, "ridge": 1.0e-6}},
        ],
    }


def try_plan(
    model: torch.nn.Module, plan: Plan, probe: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[SurgeryRecord, float]:
    """Apply ``plan`` to a deep copy of ``model``: the record and the copy's test accuracy."""
    trial = copy.deepcopy(model)
    record = apply_plan(trial, plan, example_inputs=probe)
    return record, accuracy(trial, x, y)


def result_row(
    name: str, plan: Plan, record: SurgeryRecord, acc_before: float, acc: float
) -> dict[str, object]:
    """One plan's effect as plain data (``results.json``)."""
    return {
        "plan": name,
        "actions": len(record.actions),
        "widths_before": record.widths_before,
        "widths_after": record.widths_after,
        "params_before": record.params_before,
        "params_after": record.params_after,
        "test_accuracy_before": acc_before,
        "test_accuracy_after": acc,
        "max_output_change": record.max_output_change,
        "plan_statistics": plan.statistics.model_dump(mode="json"),
    }


def table(rows: list[dict]) -> str:
    """Widths, parameters and test accuracy before → after, one line per plan."""
    lines = [
        f"{'plan':<9} {'actions':>7}  {'widths':<22} {'params':<17} test accuracy",
        "-" * 76,
    ]
    for r in rows:
        hidden = [k for k in r["widths_before"] if r["widths_before"][k] != r["widths_after"][k]]
        widths = ", ".join(f"{r['widths_before'][k]}→{r['widths_after'][k]}" for k in hidden)
        lines.append(
            f"{r['plan']:<9} {r['actions']:>7}  {widths or 'unchanged':<22} "
            f"{r['params_before']:>6} → {r['params_after']:<6}   "
            f"{r['test_accuracy_before']:.3f} → {r['test_accuracy_after']:.3f}"
        )
    return "\n".join(lines)


def cli_equivalents(out: Path) -> list[str]:
    """The command lines that redo this demo's planning from its saved files."""
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    stats, budget, plan = q(out / "stats"), q(out / "budget.yaml"), q(out / "plan.json")
    default = q(REPO / "policies" / "default.yaml")
    return [
        f"python -m engine inspect {stats}",
        f"python -m engine plan {stats} --config {default} -o {q(out / 'plan_default.json')}",
        f"python -m engine plan {stats} --config {budget} -o {plan}",
        f"python -m engine inspect {plan}",
        f"cd {q(REPO)} && python -m engine apply {plan} {q(out / 'model.safetensors')} "
        f"--model {FACTORY} -o {q(out / 'pruned.safetensors')}   # --dry-run writes nothing",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments(
        "optimization_plan", __doc__.splitlines()[0], "3 epochs on a 600-sample subset"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (3 with --fast)")
    parser.add_argument("--remove", type=float, default=0.5, help="budget: share removed")
    args = parse_demo_arguments(parser, argv)
    if not 0.0 < args.remove < 1.0:
        parser.error(f"--remove must be in (0, 1), got {args.remove}")
    epochs = args.epochs or (3 if args.fast else 30)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    data = digits(args.seed, fast=args.fast)
    model = mlp(WIDTHS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    shuffle = torch.Generator().manual_seed(args.seed)
    engine = NeuronEngine(model, correlation=True)
    for epoch in range(epochs):
        with engine.tracking():
            loss, train_acc = train_epoch(model, opt, data.x_train, data.y_train, generator=shuffle)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc)
    test_acc = accuracy(model, data.x_test, data.y_test)
    print(f"trained {epochs} epochs: loss {loss:.4f}, train {train_acc:.3f}, test {test_acc:.3f}")

    # The statistics of the model as it is now: the training-time statistics mix every epoch's
    # weights, and a fold fitted on them would compensate for a model that no longer exists.
    history = engine.history.save(out / "history.json")  # the run folder of the dashboard
    engine.reset()
    model.eval()
    with engine.tracking(), torch.no_grad():
        for batch in data.x_train.split(256):
            model(batch)
    snapshot = engine.snapshot(with_layout=True, demo="optimization_plan", epochs=epochs)
    stats = snapshot.save(out / "stats")

    budget_path = out / "budget.yaml"
    budget_path.write_text(yaml.safe_dump(budget_config(args.remove), sort_keys=False))
    plans = {"default": engine.propose(), "budget": engine.propose(budget_path)}
    plans["default"].save(out / "plan_default.json")
    plans["budget"].save(out / "plan.json")
    spec = ModelSpec(factory=FACTORY, kwargs={"widths": list(WIDTHS)})
    save_checkpoint(out / "model.safetensors", model, spec, [], input_shape=[2, 64])

    probe = data.x_train[:256]
    rows = []
    for name, plan in plans.items():
        record, acc = try_plan(model, plan, probe, data.x_test, data.y_test)
        rows.append(result_row(name, plan, record, test_acc, acc))
    if count_parameters(model) != rows[0]["params_before"]:
        raise RuntimeError("surgery on the copy changed the trained model")

    summaries = [f"plan '{name}':\n{plan.summary()}" for name, plan in plans.items()]
    cli = cli_equivalents(out)
    text = "\n\n".join([*summaries, table(rows), "CLI equivalents:\n" + "\n".join(cli)]) + "\n"
    (out / "summary.txt").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"epochs": epochs, "seed": args.seed, "plans": rows}, indent=2) + "\n"
    )

    print()
    print(plans["budget"].summary())
    print()
    print(f"after surgery on a copy (no fine-tuning), test set of {len(data.x_test)}:")
    print(table(rows))
    print()
    print("the same from the command line:")
    for line in cli:
        print(f"  {line}")
    print()
    print(f"snapshot: {stats}")
    print(f"history:  {history}")
    write_dashboard(out)
    print(f"plans:    {out / 'plan.json'} (budget), {out / 'plan_default.json'}")
    print(f"summary:  {out / 'summary.txt'}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
