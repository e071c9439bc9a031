"""``import engine`` stays light: plotting, kNN and JIT libraries load only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_engine_does_not_load_matplotlib_scipy_spatial_or_numba():
    code = (
        "import sys, engine, engine.dynamics, engine.weights\n"
        "heavy = [m for m in ('matplotlib', 'scipy.spatial', 'numba') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from engine.dynamics import plot_gradient_dynamics\n"  # still reachable on demand
        "assert 'matplotlib' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
