"""Command-line interface: ``python -m engine COMMAND …`` or the ``neuron-engine`` script.

Commands report bad input with exit code 2 and one message naming the problem (no traceback).

>>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine import __version__
from engine.errors import EngineError


def _cmd_inspect(args: argparse.Namespace) -> int:
    from engine.report import layer_summary_report
    from engine.snapshot import StatsSnapshot

    snapshot = StatsSnapshot.load(args.path)
    print(layer_summary_report(snapshot))
    return 0


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
        print(f"neuron-engine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
