"""Size and render time of the run dashboard for a large synthetic run, in headless chromium.

    python benchmarks/dashboard_render.py [--layers 50] [--epochs 100] [--repeats 5]
                                          [--json outputs/dashboard_render.json] [--strict]

Builds ``engine.dashboard.synthetic_run`` (50 Linear layers, 100 epochs, 64 probe samples of
8×8 images, a surgery every 3 epochs, gradient records), writes its page with
``write_dashboard`` and loads it in headless Debian chromium ``--repeats`` times, each in a
fresh browser (nothing cached), then once more in the same browser (reported beside).
Reported: page size, the time to write it, and per load the time from navigation start until
plotly.js is running (``library``: unpacking and evaluating it) and until every chart is
drawn (``render``); medians over the loads. Target: render ≤ 2 s; ``--strict`` exits 1 when
the median misses it. Times move with the machine (a busy 2-core VM can double them); the
page size does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.dashboard import write_dashboard  # noqa: E402
from engine.dashboard.browser import headless_chromium, open_dashboard  # noqa: E402
from engine.dashboard.page import library_path  # noqa: E402
from engine.dashboard.synthetic import synthetic_run  # noqa: E402

TARGET_MS = 2000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when render > 2 s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = synthetic_run(
            Path(tmp) / "run", layers=args.layers, epochs=args.epochs, samples=args.samples
        )
        built = time.perf_counter() - started
        started = time.perf_counter()
        page = write_dashboard(run, Path(tmp) / "report.html")
        written = time.perf_counter() - started
        size = page.stat().st_size
        cold, warm = [], []
        for _ in range(args.repeats):  # a fresh browser each time: nothing cached
            with headless_chromium() as driver:
                cold.append(open_dashboard(driver, page))
                warm.append(open_dashboard(driver, page))  # reloaded: code caches warm
        for timings in cold + warm:
            if timings["errors"]:
                raise SystemExit(f"the page reported errors: {timings['errors']}")
    loads = cold
    library = statistics.median(t["library"] for t in loads)
    render = statistics.median(t["renderMs"] for t in loads)
    result = {
        "layers": args.layers, "epochs": args.epochs, "samples": args.samples,
        "page_bytes": size, "synthetic_run_s": round(built, 2),
        "write_dashboard_s": round(written, 2), "library_ms": round(library),
        "render_ms": round(render), "render_ms_all": [round(t["renderMs"]) for t in loads],
        "render_ms_reload": round(statistics.median(t["renderMs"] for t in warm)),
        "target_ms": TARGET_MS, "pass": render <= TARGET_MS, "library": str(library_path()),
    }  # fmt: skip
    print(f"synthetic run: {args.layers} layers × {args.epochs} epochs, {args.samples} probe "
          f"samples (built in {built:.1f} s)")  # fmt: skip
    print(f"page: {size / 1e6:.2f} MB, written in {written:.2f} s; chart library "
          f"{library_path().name}")  # fmt: skip
    print(f"headless chromium, first load in a fresh browser, median of {len(loads)}: Plotly "
          f"ready {library:.0f} ms, every chart drawn {render:.0f} ms (target ≤ "
          f"{TARGET_MS:.0f} ms: {'PASS' if result['pass'] else 'MISS'}); reloaded: "
          f"{result['render_ms_reload']} ms")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if args.strict and not result["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
