"""Apply a saved plan to a checkpoint from the command line, and load the result back.

    python demos/checkpoint_cli.py            # 20 epochs on the digits data (seconds)
    python demos/checkpoint_cli.py --fast     # 8 epochs on a subset (smoke test)
    python demos/checkpoint_cli.py --out DIR  # default: outputs/checkpoint_cli in the repository

What it does: trains an MLP 64-128-64-10 on scikit-learn's digits while the engine watches,
saves the trained weights as an ordinary state dict (``torch.save`` and safetensors), asks the
engine for a plan (dead units, then the compensated budget policy removing ``--remove`` of each
hidden layer), saves ``plan.json`` and then runs the real CLI in a subprocess, exactly as a
user would type it:

    cd REPO && PYTHONPATH=demos python -m engine apply plan.json model.pt \\
        --model demo_utils:mlp --kwargs '{"widths": [128, 64], ...}' --probe probe.safetensors \\
        --dry-run
    cd REPO && PYTHONPATH=demos python -m engine apply ... -o model-pruned.safetensors

The CLI rebuilds the unmodified model with the **model factory** you name on its command line,
``--model package.module:callable``, plus JSON keyword arguments. Here the factory is
``demo_utils.mlp``, the plain function every demo builds its MLPs with: ``PYTHONPATH=demos``
makes ``demo_utils`` importable in the CLI's process. Your own models work the same way: a
function in an importable module. The output records the factory's *name* only: a checkpoint
never chooses code, so :func:`engine.checkpoint.load` is given the factory again
(``factory=mlp``, or one registered with ``engine.checkpoint.register_model_factory``).

The demo then loads the CLI's output with ``engine.checkpoint.load`` (no pickle: the spec and
the plan are in the safetensors header), checks that its outputs equal the same plan applied
in-process with ``engine.apply_plan``, and prints the accuracy before and after and the exact
commands to repeat by hand.

Writes, under the output folder:

* ``model.pt``, ``model.safetensors`` the trained weights, a plain state dict in both formats
                                 the CLI reads (the demo passes ``model.pt``; either works)
* ``plan.json``                  the plan the engine proposed (``python -m engine inspect`` it)
* ``probe.safetensors``          256 held-out images: ``--probe`` measures Δout on them
* ``model-pruned.safetensors``   the CLI's output: weights + model spec + applied plan
* ``cli-dry-run.txt``, ``cli-apply.txt``  what the two CLI runs printed
* ``commands.sh``                the commands, to repeat them by hand
* ``summary.json``, ``summary.txt``  accuracies, parameter counts, widths, output differences
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
from demo_utils import (
    REPO,
    accuracy,
    count_parameters,
    demo_arguments,
    digits,
    mlp,
    parse_demo_arguments,
    positive,
    train_epoch,
    write_dashboard,
)
from safetensors.torch import save as safetensors_bytes

from engine import NeuronEngine, apply_plan, checkpoint
from engine.io import atomic_write_bytes, atomic_write_text

FACTORY = "demo_utils:mlp"  # demos/demo_utils.py, importable with PYTHONPATH=demos
WIDTHS = [128, 64]


def cli_command(args: list[str]) -> list[str]:
    """``python -m engine ARGS`` with this interpreter."""
    return [sys.executable, "-m", "engine", *args]


def shell_line(command: list[str]) -> str:
    """The command as one line to paste into a shell, run from the repository root."""
    return f"cd {shlex.quote(str(REPO))} && PYTHONPATH=demos {shlex.join(command)}"


def run_cli(command: list[str], log: Path) -> str:
    """Run the CLI as a user would (from the repository root, ``PYTHONPATH=demos``); its output
    goes to ``log``. A failure ends the demo with the CLI's own message."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "demos"), env.get("PYTHONPATH", "")) if p
    )
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    atomic_write_text(log, done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"the CLI failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = demo_arguments(
        "checkpoint_cli", __doc__.splitlines()[0], "8 epochs on a subset (smoke test)"
    )
    parser.add_argument("--epochs", type=positive, help="default 20 (8 with --fast)")
    parser.add_argument(
        "--remove", type=fraction, default=0.5, help="share of each hidden layer the budget "
        "policy removes and folds onto the kept units (default 0.5)",
    )  # fmt: skip
    args = parse_demo_arguments(parser, argv)
    epochs = args.epochs or (8 if args.fast else 20)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    # 1. Train while the engine watches (correlation feeds the budget policy's fold).
    torch.manual_seed(args.seed)
    data = digits(args.seed, fast=args.fast)
    kwargs = {"widths": WIDTHS, "inputs": data.x_train.shape[1], "classes": data.num_classes}
    model = mlp(**kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    engine = NeuronEngine(model, correlation=True)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(epochs):
        with engine.tracking():
            loss, train_acc = train_epoch(model, opt, data.x_train, data.y_train, generator=gen)
        engine.log_epoch(epoch, loss=loss, accuracy=train_acc)
    engine.history.save(out / "history.json")  # the run's dashboard reads it
    model.eval()
    acc_before = accuracy(model, data.x_test, data.y_test)
    print(f"trained {epochs} epochs: test accuracy {acc_before:.4f}, "
          f"{count_parameters(model)} parameters")  # fmt: skip

    # 2. An ordinary checkpoint: the state dict, in both formats the CLI reads.
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    ckpt = atomic_write_bytes(out / "model.pt", buffer.getvalue())
    atomic_write_bytes(out / "model.safetensors", safetensors_bytes(state))

    # 3. The plan, as data.
    config = {
        "policies": [
            {"name": "dead"},
            {"name": "budget", "settings": {"remove_fraction": args.remove}},
        ]
    }
    plan = engine.propose(config)
    plan_path = plan.save(out / "plan.json")
    counts = Counter(a.kind for a in plan.actions())
    print(f"plan: {dict(counts)} → {plan_path} (`python -m engine inspect` it for details)")

    # 4. The real CLI, in a subprocess: a dry run, then the surgery written to OUT.
    pruned = out / "model-pruned.safetensors"
    pruned.unlink(missing_ok=True)  # a failed rerun must not leave an old output looking new
    probe = out / "probe.safetensors"  # held-out digits: the CLI measures Δout on real inputs
    atomic_write_bytes(probe, safetensors_bytes({"inputs": data.x_test[:256].contiguous()}))
    base = ["apply", str(plan_path), str(ckpt), "--model", FACTORY,
            "--kwargs", json.dumps(kwargs), "--probe", str(probe)]  # fmt: skip
    dry_cmd = cli_command([*base, "--dry-run"])
    apply_cmd = cli_command([*base, "-o", str(pruned)])
    print(f"\n$ {shell_line(dry_cmd)}")
    print(run_cli(dry_cmd, out / "cli-dry-run.txt"), end="")
    print(f"\n$ {shell_line(apply_cmd)}")
    print(run_cli(apply_cmd, out / "cli-apply.txt"), end="")

    # 5. Load the CLI's output and compare with the same plan applied in-process.
    loaded = checkpoint.load(pruned, factory=mlp).eval()  # the header names it; we provide it
    reference = copy.deepcopy(model)
    apply_plan(reference, plan, example_inputs=data.x_train[:64])
    reference.eval()
    with torch.no_grad():
        original_logits = model(data.x_test)
        loaded_logits = loaded(data.x_test)
        cli_vs_inprocess = float((loaded_logits - reference(data.x_test)).abs().max())
        change = float((loaded_logits - original_logits).abs().max())
    acc_after = accuracy(loaded, data.x_test, data.y_test)
    agree = float((loaded_logits.argmax(1) == original_logits.argmax(1)).float().mean())
    if cli_vs_inprocess > 1e-5:
        sys.exit(f"the CLI's model differs from the in-process surgery by {cli_vs_inprocess:.3g}")

    summary = {
        "epochs": epochs,
        "seed": args.seed,
        "fast": args.fast,
        "test_samples": len(data.x_test),
        "accuracy_before": round(acc_before, 4),
        "accuracy_after": round(acc_after, 4),
        "prediction_agreement": round(agree, 4),
        "max_logit_change_on_test": change,
        "max_diff_cli_vs_in_process": cli_vs_inprocess,
        "params_before": count_parameters(model),
        "params_after": count_parameters(loaded),
        "widths_before": {n: getattr(model, n).out_features for n in ("fc1", "fc2")},
        "widths_after": {n: getattr(loaded, n).out_features for n in ("fc1", "fc2")},
        "factory": FACTORY,
        "kwargs": kwargs,
        "commands": [shell_line(dry_cmd), shell_line(apply_cmd)],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "commands.sh", "#!/bin/sh\nset -e\n" + "\n".join(
        [shell_line(dry_cmd), shell_line(apply_cmd)]) + "\n")  # fmt: skip
    text = "\n".join([
        f"test accuracy: {acc_before:.4f} before, {acc_after:.4f} after the CLI's surgery "
        f"({len(data.x_test)} test samples; predictions agree on {agree:.1%})",
        f"parameters: {summary['params_before']} → {summary['params_after']}; widths "
        f"{summary['widths_before']} → {summary['widths_after']}",
        f"max |Δlogit| on the test data vs the trained model: {change:.3g} (the budget fold is a "
        f"least-squares fit, not exact)",
        f"CLI output vs the same plan applied in-process: max |Δ| = {cli_vs_inprocess:.3g}",
        "(the CLI's own 'max output change' is measured on --probe probe.safetensors, the "
        "first 256 test images; without --probe it uses random N(0, 1) data)",
    ])  # fmt: skip
    atomic_write_text(out / "summary.txt", text + "\n")

    print()
    print(text)
    print(f"\noutputs in {out}:")
    for name in ("model.pt", "model.safetensors", "plan.json", pruned.name, "summary.json",
                 "commands.sh"):  # fmt: skip
        print(f"  {name}")
    print("\nrepeat by hand:")
    print(f"  {shell_line(dry_cmd)}")
    print(f"  {shell_line(apply_cmd)}")
    print("load in Python (PYTHONPATH=demos, for the factory; the file only names it):")
    print(f"  from demo_utils import mlp; from engine import checkpoint; "
          f"model = checkpoint.load({str(pruned)!r}, factory=mlp)")  # fmt: skip
    write_dashboard(out)  # the training epochs' statistics and metrics
    return 0


if __name__ == "__main__":
    sys.exit(main())
