"""Command-line interface: ``python -m engine COMMAND …`` or the ``neuron-engine`` script.

Commands report bad input with exit code 2 and one message naming the problem (no traceback).

    neuron-engine inspect outputs/quickstart/stats
    neuron-engine plan outputs/quickstart/stats --config policies/default.yaml -o plan.json
    neuron-engine inspect plan.json
    neuron-engine inspect pruned.safetensors
    neuron-engine report outputs/quickstart/stats --top 5 --threshold 0.95 -o report.txt
    neuron-engine apply plan.json model.pt --model mypkg.models:make_mlp -o pruned.safetensors
    neuron-engine dashboard outputs/self_modifying/cnn -o report.html
    neuron-engine weights outputs/self_modifying/cnn/weights
    neuron-engine representations outputs/representation_dynamics

>>> build_parser().parse_args(["inspect", "outputs/quickstart/stats"]).command
'inspect'
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from engine._version import __version__
from engine.errors import ConfigurationError, EngineError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from engine.plan import Plan
    from engine.report import layer_summary_report
    from engine.stats.snapshot import StatsSnapshot

    if Path(args.path).suffix in CHECKPOINT_SUFFIXES:
        from engine.checkpoint import checkpoint_summary

        print(checkpoint_summary(args.path))
        return 0
    if Path(args.path).is_file():  # a plan (ours or SelfModifyingSLM's)
        print(Plan.load(args.path).summary())
        return 0
    snapshot = StatsSnapshot.load(args.path)
    print(layer_summary_report(snapshot))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from engine.planning import make_plan
    from engine.stats.snapshot import StatsSnapshot

    snapshot = StatsSnapshot.load(args.stats)
    layout = snapshot.planning_layout()
    notes = []
    if snapshot.model_layout is None:
        notes.append(
            "no model layout was saved with the statistics (engine.snapshot(with_layout=True)): "
            "consumer weights are unknown and the last tracked layer is treated as the output"
        )
    plan = make_plan(snapshot, layout, args.config, notes=notes)
    if args.output is None:
        print(plan.dumps())
    else:
        plan.save(args.output)
        print(plan.summary())
        print(f"plan written to {args.output}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from engine.report import full_report, save_report
    from engine.stats.snapshot import StatsSnapshot

    snapshot = StatsSnapshot.load(args.path)
    text = full_report(snapshot, top=args.top, threshold=args.threshold, limit=args.limit)
    if args.output is None:
        print(text, end="")
    else:
        print(f"report written to {save_report(args.output, text)}")
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    import importlib

    from engine.checkpoint import apply_to_checkpoint, load_probe
    from engine.checkpoint_factories import resolve_factory

    for module in args.imports or ():  # the user's own modules, named on the command line
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"--import {module}: {exc}") from None
    # The factory is the user's choice (--model), or one their --import registered under the
    # name the checkpoint holds; never a module the checkpoint names.
    factory = resolve_factory(args.model) if args.model else None
    kwargs = None
    if args.kwargs:
        try:
            kwargs = json.loads(args.kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"--kwargs is not JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise ConfigurationError(
                f"--kwargs: expected a JSON object, got {type(kwargs).__name__}"
            )
    if not args.dry_run and not args.output:
        raise ConfigurationError("give -o OUT (or --dry-run)")
    try:
        _, record = apply_to_checkpoint(
            args.plan, args.checkpoint, None, None if args.dry_run else args.output,
            factory=factory, kwargs=kwargs, input_shape=args.input_shape,
            input_dtype=args.input_dtype or "float32", dry_run=args.dry_run,
            probe=load_probe(args.probe) if args.probe else None,
        )  # fmt: skip
    except RuntimeError as exc:  # torch: the model cannot run on the probe batch the user chose
        if args.input_shape is None and args.input_dtype is None:
            raise
        given = [
            f"{flag} {value}"
            for flag, value in (
                ("--input-shape", ",".join(map(str, args.input_shape or ()))),
                ("--input-dtype", args.input_dtype),
            )
            if value
        ]
        first = " ".join(str(exc).split())[:300]
        raise ConfigurationError(
            f"{' '.join(given)}: the model cannot run on this probe batch ({first}); give the "
            f"shape and dtype of the model's input"
        ) from None
    print(surgery_summary(record, dry_run=args.dry_run, out=args.output))
    return 0


def surgery_summary(record, *, dry_run: bool = False, out: str | None = None) -> str:
    """A few lines per applied action: widths, parameters, output change."""
    head = "DRY RUN (nothing written)" if dry_run else f"wrote {out}"
    lines = [
        f"{head}: parameters {record.params_before} → {record.params_after}, "
        f"max output change {record.max_output_change_eval}"
    ]
    for a in record.actions:
        lines.append(
            f"  {a.label:<10} {a.layer!r}: width {a.width_before} → {a.width_after}, params "
            f"{a.params_before} → {a.params_after}, Δout {a.max_output_change_eval:.3g}"
            + (f" ({a.note})" if a.note else "")
        )
    return "\n".join(lines)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text}")
    return value


def _shape(text: str) -> list[int]:
    """``--input-shape``: positive integers separated by commas (a probe needs rows)."""
    parts = text.replace(" ", "").split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"expected sizes ≥ 1 separated by commas, e.g. 2,3,32,32, got {text!r}"
        )
    return dims


def _dtype(text: str) -> str:
    """``--input-dtype``: the name of a torch dtype (float32, float16, bfloat16, int64, …)."""
    import torch

    if not re.fullmatch(r"[a-z][a-z0-9_]*", text) or not isinstance(
        getattr(torch, text, None), torch.dtype
    ):
        raise argparse.ArgumentTypeError(
            f"expected a torch dtype name (float32, float64, float16, bfloat16, int64, …), "
            f"got {text!r}"
        )
    return text


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        one_line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="neuron-engine",
        description="Self-modifying network engine: inspect statistics, plans and checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "inspect",
        help="summarise a statistics snapshot (a folder), a plan (a JSON file) or a checkpoint",
    )
    p.add_argument("path", help="snapshot folder, plan.json (also SelfModifyingSLM's format), "
                   "or a checkpoint (.safetensors, .pt, .pth, .bin, .ckpt)")  # fmt: skip
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("plan", help="run policies on a saved statistics snapshot: a JSON plan")
    p.add_argument("stats", help="snapshot folder (summary.json + stats.safetensors)")
    p.add_argument("--config", help="policy YAML (default: policies/default.yaml)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the plan here (atomically)")
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser(
        "report",
        help="full text report of a snapshot: layers, dead units, activity ranking, redundancy",
    )
    p.add_argument("path", help="snapshot folder (summary.json + stats.safetensors)")
    p.add_argument("--top", type=_count, default=10, help="neurons per ranking (default 10)")
    p.add_argument(
        "--threshold",
        type=_unit_interval,
        default=0.9,
        help="|Pearson r| at or above which a pair is redundant (default 0.9)",
    )
    p.add_argument(
        "--limit", type=_count, default=200, help="rows of the per-neuron table (default 200)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here (atomically)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("apply", help="apply a saved plan to a checkpoint (input never modified)")
    p.add_argument("plan", help="plan.json")
    p.add_argument("checkpoint", help="safetensors or PyTorch state dict (loaded weights_only)")
    p.add_argument(
        "--model", metavar="MODULE:FUNCTION",
        help="your function that builds the unmodified model (imported), or the name of a "
        "factory registered by an --import module; needed unless an --import module "
        "registered the factory the checkpoint names (a checkpoint never chooses code)",
    )  # fmt: skip
    p.add_argument(
        "--import", dest="imports", action="append", metavar="MODULE",
        help="import this module of yours first (repeatable): it may register model factories "
        "with engine.checkpoint.register_model_factory",
    )  # fmt: skip
    p.add_argument(
        "--kwargs", metavar="JSON",
        help="keyword arguments of the factory (default: the checkpoint's, or none)",
    )  # fmt: skip
    p.add_argument(
        "--input-shape", metavar="N,…", type=_shape,
        help="probe batch shape, sizes ≥ 1, e.g. 2,3,32,32",
    )  # fmt: skip
    p.add_argument(
        "--probe", metavar="FILE",
        help="real inputs to measure the output change on: safetensors (one tensor, or one "
        "named 'inputs') or .npy; default: random N(0, 1) data of --input-shape",
    )  # fmt: skip
    p.add_argument(
        "--input-dtype", type=_dtype, metavar="DTYPE",
        help="probe dtype, a torch dtype name (default: the checkpoint's, or float32)",
    )  # fmt: skip
    p.add_argument("-o", "--output", metavar="OUT", help="modified checkpoint (safetensors)")
    p.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    p.set_defaults(func=_cmd_apply)
    from engine.dashboard.command import (
        add_dashboard_parser,
        add_representations_parser,
        add_weights_parser,
    )

    add_dashboard_parser(sub)
    add_weights_parser(sub)
    add_representations_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from pydantic import ValidationError
    from torch.linalg import LinAlgError

    where = (
        getattr(args, "path", None) or getattr(args, "stats", None)
        or getattr(args, "checkpoint", None) or "input"
    )  # fmt: skip
    # Bad input reaches these as ordinary exceptions; anything else is a bug and keeps its
    # traceback (no bare ``except Exception``).
    try:
        return int(args.func(args))
    except (EngineError, OSError) as exc:
        message = str(exc)
    except UnicodeDecodeError as exc:  # a binary file where text was expected
        message = f"{where}: not UTF-8 text ({exc.reason})"
    except ValidationError as exc:  # values the input led to that a model refuses
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = f"{where}: invalid {exc.title}: {loc + ': ' if loc else ''}{err['msg']}{more}"
    except LinAlgError as exc:
        message = f"{where}: numerical failure on these statistics ({exc})"
    except RecursionError:
        message = f"{where}: input nested too deeply"
    except (OverflowError, ValueError) as exc:
        message = f"{where}: {type(exc).__name__}: {exc}"
    one_line = " ".join(message.splitlines())
    print(f"neuron-engine {args.command}: error: {one_line}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
