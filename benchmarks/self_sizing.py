"""Self-sizing benchmark: does the autosize loop end with a right-sized network?

For each task (digits MLP, digits CNN, a generated 1-D signal set with an MLP) and seed, with
the same optimizer, batch size and epochs everywhere:

* **fixed wide**: 2× the demo's widths, trained unchanged (the reference);
* **start wide**: the same 2× model under ``policies/autosize.yaml`` in trial mode;
* **start narrow**: ¼ of the demo's widths under the same loop;
* **Torch-Pruning**: the 2× model trained for half the epochs, pruned by ``MagnitudePruner`` to
  the widths the start-wide run ended with, fine-tuned for the other half;
* **fixed narrow**: the ¼ model trained unchanged (what growth has to beat).

The targets (issue #14): start wide ends at ≤ 0.3× the fixed wide model's parameters with
accuracy ≥ fixed − 0.3 points; start narrow ends within 1 point of the fixed wide model with no
more parameters. Accuracies are on the test split, which no run trains or judges on; trials
are judged on a held-out part of the training split. The table gives the mean over seeds.

    python benchmarks/self_sizing.py                 # 3 seeds, 30 epochs (a few minutes)
    python benchmarks/self_sizing.py --fast          # 1 seed, 6 epochs, small data (smoke)

Writes ``outputs/self_sizing/results.md``, ``results.json`` and ``accuracy_vs_params.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from self_sizing_runs import (
    REPO,
    TASKS,
    Settings,
    du,
    train_fixed,
    train_peer,
    train_self_sizing,
)
from versions import versions, versions_line

ROWS = ("fixed wide", "start wide", "Torch-Pruning", "start narrow", "fixed narrow")
WIDE, NARROW = 2.0, 0.25


def run_task(name: str, seeds: list[int], s: Settings, fast: bool) -> dict[str, list[dict]]:
    task = TASKS[name]
    out: dict[str, list[dict]] = {row: [] for row in ROWS}
    for seed in seeds:
        data, held_out = du.held_out_part(task.data(seed, fast), s.held_out_fraction)
        wide = train_self_sizing(task, WIDE, data, held_out, seed, s)
        runs = {
            "fixed wide": train_fixed(task, WIDE, data, seed, s),
            "start wide": wide,
            "Torch-Pruning": train_peer(task, WIDE, data, seed, s, wide.widths),
            "start narrow": train_self_sizing(task, NARROW, data, held_out, seed, s),
            "fixed narrow": train_fixed(task, NARROW, data, seed, s),
        }
        for row, run in runs.items():
            out[row].append({"seed": seed, **run.to_json()})
        print(f"[{name} seed {seed}] " + "  ".join(
            f"{row}: {r.accuracy:.1f}% {r.params}p {r.widths}" for row, r in runs.items()
        ), flush=True)  # fmt: skip
    return out


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def verdicts(rows: dict[str, list[dict]]) -> dict[str, Any]:
    """The two targets of the issue, on the seed means."""
    acc = {row: mean([r["accuracy"] for r in runs]) for row, runs in rows.items()}
    params = {row: mean([r["params"] for r in runs]) for row, runs in rows.items()}
    wide_ratio = params["start wide"] / params["fixed wide"]
    return {
        "start_wide_params_ratio": round(wide_ratio, 3),
        "start_wide_accuracy_gap": round(acc["start wide"] - acc["fixed wide"], 2),
        "start_wide_met": wide_ratio <= 0.3 and acc["start wide"] >= acc["fixed wide"] - 0.3,
        "start_narrow_accuracy_gap": round(acc["start narrow"] - acc["fixed wide"], 2),
        "start_narrow_params_ratio": round(params["start narrow"] / params["fixed wide"], 3),
        "start_narrow_met": acc["start narrow"] >= acc["fixed wide"] - 1.0
        and params["start narrow"] <= params["fixed wide"],
    }


def table(results: dict[str, dict[str, list[dict]]], s: Settings, seeds: list[int]) -> str:
    lines = [
        f"Mean over seeds {seeds}; {s.epochs} epochs, surgery every {s.every} (trials: "
        f"{s.recovery} recovery steps, cut budget {s.cut_budget:g}, growth must gain "
        f"{s.min_growth_gain:g} unless underfitting (margin {s.underfit_margin}), cuts from "
        f"epoch {s.epochs // 3}); {versions_line()}.",
        "",
        "| task | run | test accuracy % | parameters | × fixed wide | final widths "
        "| steps × fixed |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, rows in results.items():
        ref_params = mean([r["params"] for r in rows["fixed wide"]])
        ref_steps = mean([r["steps"] for r in rows["fixed wide"]])
        for row in ROWS:
            runs = rows[row]
            accs = [r["accuracy"] for r in runs]
            spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
            p = mean([r["params"] for r in runs])
            widths = " / ".join(str(r["widths"]) for r in runs)
            steps = mean([r["steps"] for r in runs]) / ref_steps
            lines.append(
                f"| {task} | {row} | {mean(accs):.2f}{spread} | {p:,.0f} | "
                f"{p / ref_params:.3f} | {widths} | {steps:.2f} |"
            )
        v = verdicts(rows)
        met = {k: "met" if v[f"{k}_met"] else "NOT met" for k in ("start_wide", "start_narrow")}
        lines.append(
            f"| {task} | **targets** | start wide: {v['start_wide_params_ratio']}× params, "
            f"{v['start_wide_accuracy_gap']:+.2f} pt → {met['start_wide']}"
            f" | start narrow: {v['start_narrow_accuracy_gap']:+.2f} pt at "
            f"{v['start_narrow_params_ratio']}× params → {met['start_narrow']} | | | |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict[str, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    markers = dict(zip(ROWS, "os^vD", strict=True))
    for ax, (task, rows) in zip(axes[0], results.items(), strict=True):
        for row in ROWS:
            xs = [r["params"] for r in rows[row]]
            ys = [r["accuracy"] for r in rows[row]]
            ax.scatter(xs, ys, marker=markers[row], label=row, alpha=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis collide
        ax.set_xlabel("parameters (log)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (6 with --fast)")
    parser.add_argument("--fast", action="store_true", help="1 seed, 6 epochs, small data")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "self_sizing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Settings()
    s.epochs = args.epochs or (6 if args.fast else s.epochs)
    if args.fast:
        s.every, s.recovery = 2, 3
    seeds = list(range(1 if args.fast else args.seeds))
    results = {name: run_task(name, seeds, s, args.fast) for name in args.tasks}
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(results, s, seeds)
    (args.out / "results.md").write_text(text + "\n")
    summary: dict[str, Any] = {
        name: {"verdicts": verdicts(rows), "runs": rows} for name, rows in results.items()
    }
    summary["versions"] = versions()
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(results, args.out / "accuracy_vs_params.png")
    print()
    print(text)
    print(f"\nwritten: {args.out}/results.md, results.json, accuracy_vs_params.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
