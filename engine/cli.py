"""Command-line interface: ``python -m engine COMMAND …`` or the ``neuron-engine`` script.

Commands report bad input with exit code 2 and one message naming the problem (no traceback).

    neuron-engine inspect outputs/quickstart/stats
    neuron-engine report outputs/quickstart/stats --top 5 --threshold 0.95 -o report.txt

>>> build_parser().parse_args(["inspect", "outputs/quickstart/stats"]).command
'inspect'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__
from engine.errors import EngineError


def _cmd_inspect(args: argparse.Namespace) -> int:
    from engine.report import layer_summary_report
    from engine.snapshot import StatsSnapshot

    snapshot = StatsSnapshot.load(args.path)
    print(layer_summary_report(snapshot))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from engine.report import full_report, save_report
    from engine.snapshot import StatsSnapshot

    snapshot = StatsSnapshot.load(args.path)
    text = full_report(snapshot, top=args.top, threshold=args.threshold, limit=args.limit)
    if args.output is None:
        print(text, end="")
    else:
        print(f"report written to {save_report(args.output, text)}")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuron-engine",
        description="Self-modifying network engine: inspect statistics, plans and checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("inspect", help="print the layer summary of a saved statistics snapshot")
    p.add_argument("path", help="snapshot folder (summary.json + stats.safetensors)")
    p.set_defaults(func=_cmd_inspect)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (EngineError, OSError) as exc:
        message = str(exc)
    except UnicodeDecodeError as exc:  # StatsSnapshot.load reads a binary summary.json as text
        message = f"{Path(args.path) / 'summary.json'}: not UTF-8 text ({exc.reason})"
    one_line = " ".join(message.splitlines())
    print(f"neuron-engine {args.command}: error: {one_line}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
