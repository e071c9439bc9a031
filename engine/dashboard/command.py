"""The ``dashboard`` command of ``python -m engine`` (argument handling lives here, so that
``engine/cli.py`` only registers it).

    python -m engine dashboard outputs/self_modifying/cnn -o report.html

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_dashboard_parser(parser.add_subparsers(dest="command"))
>>> parser.parse_args(["dashboard", "run", "-o", "r.html", "--k", "5"]).k
5
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def run_dashboard_command(args: argparse.Namespace) -> int:
    """Write the page; print where it went and which panels have no data."""
    from engine.dashboard import write_dashboard
    from engine.dashboard.files import locate

    out = Path(args.output) if args.output else Path(args.path) / "report.html"
    page = write_dashboard(
        args.path, out, strict=args.strict, compress=not args.no_compress, k=args.k,
        max_samples=args.max_samples, confidence_layer=args.confidence_layer,
    )  # fmt: skip
    size = page.stat().st_size / 1e6
    print(f"dashboard written to {page} ({size:.1f} MB)")
    for name, what in locate(args.path).missing():
        print(f"  no {name}: {what}")
    return 0


def add_dashboard_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dashboard RUN_DIR [-o FILE] …`` on the CLI's subparsers."""
    p = sub.add_parser(
        "dashboard",
        help="one self-contained HTML page (opens offline) of a run folder: surgery timeline, "
        "units, statistics, weight change, gradients, representation dynamics",
    )
    p.add_argument("path", metavar="RUN_DIR", help="the run folder a demo or your script wrote")
    p.add_argument("-o", "--output", metavar="FILE", help="the page (default RUN_DIR/report.html)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="a missing file is an error (default: its panel says what is missing)",
    )
    p.add_argument(
        "--no-compress",
        action="store_true",
        help="embed the chart library uncompressed (browsers without "
        "DecompressionStream; the page is about 3 MB larger)",
    )
    p.add_argument("--k", type=_positive, default=10, help="neighbours per sample (default 10)")
    p.add_argument(
        "--max-samples", type=_positive, default=200, help="probe samples shown (default 200)"
    )
    p.add_argument(
        "--confidence-layer",
        metavar="LAYER",
        help="layer whose softmax entropy is the confidence (default: the last)",
    )
    p.set_defaults(func=run_dashboard_command)  # fmt: skip


def run_weights_command(args: argparse.Namespace) -> int:
    from engine.dashboard.weight_stats import weight_change_report

    print(weight_change_report(args.path, top=args.top))
    return 0


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``weights RUN_DIR [--top N]``: print a weight-tracking folder's change."""
    p = sub.add_parser(
        "weights",
        help="change statistics of a weight-tracking folder: first → last per layer, and per epoch",
    )
    p.add_argument("path", metavar="RUN_DIR", help="a WeightTracker folder (or a run folder "
                   "with weights/)")  # fmt: skip
    p.add_argument("--top", type=_positive, default=8, help="layers in the per-epoch table")
    p.set_defaults(func=run_weights_command)


def run_representations_command(args: argparse.Namespace) -> int:
    from engine.dashboard.representation_stats import representation_report

    print(representation_report(args.path, k=args.k, top=args.top, max_samples=args.max_samples))
    return 0


def add_representations_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``representations RUN_DIR [--k N] [--top N]``: print representation dynamics."""
    p = sub.add_parser(
        "representations",
        help="representation dynamics of a run's probe samples: neighbour overlap between "
        "epochs per layer, the samples that moved most, confidence per epoch",
    )
    p.add_argument("path", metavar="RUN_DIR", help="a run folder with dynamics/representations/")
    p.add_argument("--k", type=_positive, default=10, help="neighbours per sample (default 10)")
    p.add_argument("--top", type=_positive, default=5, help="samples listed as moved most")
    p.add_argument(
        "--max-samples", type=_positive, default=200, help="probe samples used (default 200)"
    )
    p.set_defaults(func=run_representations_command)
