"""Self-modifying training: the engine sizes an MLP and a CNN while they train.

An MLP (64-128-64-10) and a small CNN (conv 16-32, fc 64) learn scikit-learn's digits. Every
few epochs the engine runs the policies of ``policies/autosize.yaml`` on the statistics it
gathered since the last surgery (GradMax growth where the loss says more units would help, a
budget fold of what the loss can spare), writes the plan, and applies it to the live model and
its Adam optimizer as a *trial*: after a few recovery steps the held-out loss (a part of the
training split the model never trains on) is compared with the unmodified model's, and a plan
that made it worse is rolled back bitwise, then retried with a smaller removal step. A weight
tracker snapshots every epoch and every surgery and keeps the change log. The same
architecture is trained unchanged beside it for comparison.

    python demos/self_modifying.py             # 30 epochs each (about a minute on one thread)
    python demos/self_modifying.py --fast      # a subset, 8 epochs (smoke test)
    python demos/self_modifying.py --scale 0.25   # start at a quarter of the widths: it grows
    python demos/self_modifying.py --config demos/self_modifying.yaml --no-trials  # activity

Writes, under the output folder (default outputs/self_modifying), for each model:

* ``MODEL/changes.jsonl``        the change log: one line per applied action (what, which neuron
                                 IDs, shapes and parameters before/after, measured output change)
* ``MODEL/plans/``               every proposed plan as JSON (``python -m engine inspect`` reads it)
* ``MODEL/architecture.png``     units per layer over training, one mark per action
* ``MODEL/accuracy.png``         test accuracy and parameters per epoch, against the fixed model
* ``MODEL/history.json``         per-epoch per-neuron statistics with loss and accuracies
* ``MODEL/weights/``             weight snapshots (safetensors) and their index
* ``MODEL/dynamics/``            the probe set's representations per epoch (64 test samples)
* ``MODEL/report.html``          the run's dashboard: timeline, units, statistics, weight change,
                                 representation dynamics (``python -m engine dashboard MODEL``)
* ``MODEL/summary.json``         widths before/after, actions by kind, accuracies, and the check
                                 that final widths = initial widths ± the logged actions
* ``summary.md``                 both models side by side
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import demo_utils as du
import torch
import torch.nn.functional as F
from self_modifying_report import plot_accuracy, widths_from_log, write_summary_table

from engine import NeuronEngine, SurgerySchedule, recovery_steps
from engine.weights import WeightTracker
from engine.weights.plots import plot_architecture_timeline

CONFIG = Path(__file__).resolve().parents[1] / "policies" / "autosize.yaml"
HELD_OUT_FRACTION = 0.15  # of the training split: the trials' judge, never trained on
RECOVERY_STEPS = 10  # training steps inside each trial before it is judged
MODELS = {
    "mlp": dict(build=lambda k: du.mlp((du.scaled(128, k), du.scaled(64, k))), images=False,
                lr=1e-3),
    "cnn": dict(build=lambda k: du.small_cnn((du.scaled(16, k), du.scaled(32, k)),
                                             du.scaled(64, k)), images=True, lr=3e-3),
}  # fmt: skip


def tracked_widths(engine: NeuronEngine) -> dict[str, int]:
    """Units per tracked layer, read from the modules themselves (not from the log)."""
    return {name: layer.kind.units(layer.module) for name, layer in engine.layers.items()}


def train_fixed(name: str, split, epochs: int, seed: int, scale: float) -> list[float]:
    """The same architecture trained without modification: test accuracy per epoch."""
    torch.manual_seed(seed)
    model = MODELS[name]["build"](scale)
    opt = torch.optim.Adam(model.parameters(), lr=MODELS[name]["lr"])
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(epochs):
        du.train_epoch(model, opt, split.x_train, split.y_train, generator=generator)
        curve.append(du.accuracy(model, split.x_test, split.y_test))
    return curve


def run_model(name: str, args, out: Path) -> dict:
    """Train ``name`` with surgery every ``args.every`` epochs; write its outputs under ``out``."""
    du.fresh_run_dir(out / "weights")  # a re-run starts afresh (only our own files go)
    for old_plan in (out / "plans").glob("plan-epoch*.json"):
        old_plan.unlink()
    split, held_out = du.held_out_part(
        du.digits(args.seed, fast=args.fast, images=MODELS[name]["images"]), HELD_OUT_FRACTION
    )
    torch.manual_seed(args.seed)
    model = MODELS[name]["build"](args.scale)
    opt = torch.optim.Adam(model.parameters(), lr=MODELS[name]["lr"])
    engine = NeuronEngine(model, correlation=True, growth_signal=True)
    tracker = WeightTracker(engine, out / "weights", example_inputs=split.x_train[:8])
    engine.add_listener(tracker)
    probe = du.probe_dynamics(engine, split.x_test, split.y_test, out / "dynamics")
    trials = {} if args.no_trials else dict(
        held_out=held_out, loss_fn=F.cross_entropy,
        recover=recovery_steps(split.x_train, split.y_train, F.cross_entropy, RECOVERY_STEPS),
        trial_options={"baseline": "recovered"}, min_growth_gain=0.002, underfit_margin=0.2,
        cut_budget=0.02, shrink_start=args.epochs // 3,
    )  # fmt: skip
    schedule = SurgerySchedule(
        engine, opt, args.config, every=args.every, stop=args.epochs - args.every,
        plans_dir=out / "plans", measure="plan", **trials,
    )  # fmt: skip
    initial = tracked_widths(engine)
    params = [du.count_parameters(model)]
    tracker.snapshot("initial", epoch=-1)
    generator = torch.Generator().manual_seed(args.seed)
    surgeries, curve = [], []
    started = time.perf_counter()
    for epoch in range(args.epochs):
        with engine.tracking():
            loss, train_acc = du.train_epoch(
                model, opt, split.x_train, split.y_train, generator=generator
            )
        test_acc = du.accuracy(model, split.x_test, split.y_test)
        curve.append(test_acc)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc, test_accuracy=test_acc,
                         parameters=du.count_parameters(model))  # fmt: skip
        tracker.on_epoch(epoch, loss=loss)
        probe.record(epoch)  # before this epoch's surgery: the representations trained
        tried = len(schedule.trials)
        record = schedule.epoch_end(epoch)
        line = f"[{name}] epoch {epoch + 1:>2}/{args.epochs}  loss {loss:.4f}  test {test_acc:.3f}"
        refused = [t for t in schedule.trials[tried:] if not t.accepted]
        if refused:
            line += f"  | {len(refused)} trial(s) rolled back ({refused[-1].reason})"
        if record is not None:
            after = du.accuracy(model, split.x_test, split.y_test)
            kinds = Counter(a.kind for a in record.actions)
            surgeries.append(dict(epoch=epoch, before=test_acc, after=after,
                                  params=record.params_after, actions=dict(kinds)))  # fmt: skip
            line += (
                f"  | surgery: {dict(kinds)} → widths {record.widths_after}, "
                f"{record.params_before} → {record.params_after} params, test {after:.3f}"
            )
        params.append(du.count_parameters(model))
        print(line)
    seconds = time.perf_counter() - started

    changes = tracker.changes()
    final = tracked_widths(engine)
    from_log = widths_from_log(initial, changes)
    plot_architecture_timeline(tracker.snapshots(), changes, path=out / "architecture.png")
    engine.history.save(out / "history.json")
    fixed = [] if args.no_baseline else train_fixed(name, split, args.epochs, args.seed, args.scale)
    plot_accuracy(name, curve, fixed, params[1:], surgeries, out / "accuracy.png")
    shutil.copyfile(tracker.run_dir / "changes.jsonl", out / "changes.jsonl")
    summary = {
        "model": name,
        "epochs": args.epochs,
        "every": args.every,
        "config": str(args.config),
        "width_scale": args.scale,
        "trials": {
            "tried": len(schedule.trials),
            "kept": sum(t.accepted for t in schedule.trials),
            "rolled_back": sum(not t.accepted for t in schedule.trials),
        },
        "initial_widths": initial,
        "final_widths": final,
        "widths_from_change_log": from_log,
        "widths_match_change_log": from_log == final,
        "actions": dict(Counter(c.kind for c in changes if c.trial != "rolled_back")),
        "surgeries": surgeries,
        "parameters": {"initial": params[0], "final": params[-1]},
        "test_accuracy": {"final": curve[-1], "fixed_architecture": fixed[-1] if fixed else None},
        "seconds": round(seconds, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if from_log != final:
        raise SystemExit(f"[{name}] widths {final} differ from the change log's {from_log}")
    du.write_dashboard(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = du.demo_arguments(
        "self_modifying", __doc__.splitlines()[0], "a 600-sample subset, 8 epochs, surgery every 2"
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (8 with --fast)")
    parser.add_argument("--every", type=int, default=None, help="epochs between surgeries")
    parser.add_argument("--config", type=Path, default=CONFIG, help="policy YAML")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fixed model")
    parser.add_argument("--scale", type=float, default=1.0, help="start at this × the widths")
    parser.add_argument(
        "--no-trials", action="store_true", help="apply every plan without a held-out judge"
    )
    args = du.parse_demo_arguments(parser, argv)
    args.epochs = args.epochs or (8 if args.fast else 30)
    args.every = args.every or (2 if args.fast else 3)
    summaries = [run_model(name, args, args.out / name) for name in args.models]
    table = write_summary_table(summaries, args.out / "summary.md")
    print()
    print(table)
    print(f"outputs: {args.out}  (change logs: {args.out}/*/changes.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
