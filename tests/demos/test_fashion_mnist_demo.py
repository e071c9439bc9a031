"""demos/fashion_mnist.py on small IDX files written here; and its exit when data is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.data import write_idx
from engine.data.fashion_mnist import FILES, SOURCE
from engine.plan import Plan

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "demos" / "fashion_mnist.py"


def demo(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
        timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def write_small_fashion(folder: Path) -> None:
    """60 train / 20 test random 28×28 images; images gzip-compressed, labels plain."""
    rng = np.random.default_rng(0)
    for part, n in (("train", 60), ("test", 20)):
        write_idx(folder / f"{FILES[part + '_images']}.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))  # fmt: skip
        write_idx(folder / FILES[part + "_labels"], rng.integers(0, 10, n, dtype=np.uint8))


def test_fast_run_on_small_files_writes_every_output(tmp_path: Path) -> None:
    data, out = tmp_path / "fashion", tmp_path / "out"
    write_small_fashion(data)
    done = demo(["--fast", "--data", str(data), "--out", str(out)], cwd=tmp_path)
    assert done.returncode == 0, f"demo failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert "60 train, 20 test" in done.stdout
    for name in ("surgeries.json", "history.json", "stats/summary.json", "report.txt",
                 "plan.json", "summary.json", "training.png"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 4 and len(summary["per_epoch"]) == 4
    assert summary["train_samples"] == 60 and summary["test_samples"] == 20
    assert summary["params_initial"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    plans = sorted((out / "plans").glob("plan-epoch*.json"))
    assert [p.name for p in plans] == ["plan-epoch001.json"]  # every 2 epochs, stop before 2
    Plan.load(plans[0])
    surgeries = json.loads((out / "surgeries.json").read_text())
    assert [s["epoch"] for s in surgeries] == summary["surgery_epochs"]
    if surgeries:  # the widths after the last surgery are the final ones
        assert surgeries[-1]["params_after"] == summary["params_final"]
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history["epochs"]] == [0, 1, 2, 3]


def test_missing_data_exits_2_with_the_file_names_and_no_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train-images-idx3-ubyte.gz").write_bytes(b"")  # present: not listed as missing
    done = demo(["--fast", "--out", str(tmp_path / "out")], cwd=tmp_path,
                env={"FASHION_MNIST_DIR": str(empty)})  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"3 of 4 files missing in {empty}" in done.stderr
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in done.stderr
    assert SOURCE in done.stderr
    assert not (tmp_path / "out").exists()
