"""The demos write run folders the dashboard reads: the representation-dynamics demo (in this
process, ``--fast``) leaves a page whose representation panel matches its store."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.dynamics import RepresentationStore, knn_sets

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("plotly_installed")


def test_representation_dynamics_demo_writes_a_dashboard(tmp_path, monkeypatch) -> None:
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(REPO / "demos"))
    path = REPO / "demos" / "representation_dynamics.py"
    spec = importlib.util.spec_from_file_location("demo_representation_dynamics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert module.main(["--fast", "--epochs", "2", "--out", str(out)]) == 0
    assert f"dashboard: {out / 'report.html'}" in printed.getvalue()
    html = (out / "report.html").read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    reps = data["panels"]["representations"]
    assert reps["images"]["height"] == 8 and len(reps["labels"]) == 64
    store = RepresentationStore(out / "dynamics" / "representations")
    assert reps["per_layer"]["fc1"]["epochs"] == store.epochs == [0, 1, 2]
    expected = knn_sets(store.load(2, "fc1"), 10)
    assert np.array_equal(reps["per_layer"]["fc1"]["neighbours"]["2"], expected)
    assert data["panels"]["similarity"]["epochs"] == [0, 1, 2]
    assert (out / "dynamics" / "fingerprint_fc1.png").stat().st_size > 0
