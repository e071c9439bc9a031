"""Under Lightning's DDP strategy (two CPU ranks, gloo) the callback cuts both ranks the same
way, rebuilds the DDP wrapper, and training goes on with identical parameters."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning.pytorch")

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_agree_on_the_surgery(tmp_path):
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")  # fmt: skip
        command = [sys.executable, str(WORKER), str(tmp_path)]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))  # fmt: skip
    outs = [p.communicate(timeout=240)[0].decode()[-3000:] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["width"] == r1["width"] == 24  # the 8 planted dead units cut on both ranks
    assert r0["params"] == r1["params"]  # bitwise the same model after the rewrapped training
    assert r0["in_optimizer"] and r1["in_optimizer"]
    assert r0["wrapper_module_is_ours"] and r1["wrapper_module_is_ours"]
    assert r0["losses"][-1] < r0["losses"][1]  # epochs after the cut at the end of epoch 1
