"""Two CPU processes (gloo, a ``file://`` rendezvous in tmp_path) run ``worker.py``'s
scenarios; the tests compare what each rank wrote with each other and with one process that
saw both shards. The whole run is bounded (a hang fails the fixture, it does not block)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine import NeuronEngine
from engine.distributed import pack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shards import make_model, observe, shard

WORKER = Path(__file__).resolve().parent / "worker.py"
TIMEOUT = 150  # seconds for both ranks, every scenario


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ranks")
    init = out / "rendezvous"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(init), str(out)],
            cwd=out,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the two ranks did not finish within {TIMEOUT} s (a hang)")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for r, result in enumerate(results):
        crashed = {k: v["crash"] for k, v in result.items() if "crash" in v}
        assert not crashed, f"rank {r}: {crashed}"
    return out, results


def test_merged_statistics_equal_one_process_on_the_concatenated_data(ranks):
    out, results = ranks
    flat = [load_file(str(out / f"merge-rank{r}.safetensors"))["flat"] for r in range(2)]
    assert torch.equal(flat[0], flat[1])  # the same bits on every rank
    model = make_model().double()  # float64 end to end: float64 rounding is all that differs
    reference = NeuronEngine(model, correlation=True, growth_signal=True)
    both = shard(0, nan=True, dtype=torch.float64) + shard(1, nan=True, dtype=torch.float64)
    observe(reference, model, both)
    expected, structure = pack(reference.snapshot())
    assert results[0]["merge"]["structure"] == structure
    for field in ("moments.nonfinite", "comoments.c", "growth.total", "growth.rows"):
        assert field in structure  # every state and field travelled
    torch.testing.assert_close(flat[0], expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    local = [results[r]["merge"]["local_count"] for r in range(2)]
    assert local[0] > 0 and local[0] != reference.snapshot().layers["0"].count


def test_every_rank_gets_the_same_plan_and_the_same_model_after_rewrap(ranks):
    out, results = ranks
    a, b = (results[r]["surgery"] for r in range(2))
    assert a["digest"] == b["digest"] and a["pruned"] == 1 and a["actions"] == 1
    assert a["width"] == b["width"] == 13 and a["ids"] == b["ids"]
    assert a["options_kept"] and b["options_kept"] and a["hooks"] == b["hooks"] == 1
    states = [load_file(str(out / f"surgery-rank{r}.safetensors")) for r in range(2)]
    assert states[0].keys() == states[1].keys()
    assert any(k.startswith("opt.") for k in states[0])
    # trained on different data after the rewrap: equal only if gradients were synchronised
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert states[0]["param.0.weight"].shape == (13, 6)


def test_a_different_plan_on_one_rank_raises_on_every_rank(ranks):
    _, results = ranks
    for r in range(2):
        err = results[r]["disagree"]
        assert err["type"] == "RankMismatchError" and err["what"] == "plan"
        assert err["ranks"] == [1] and "rank 1 differs from rank 0" in err["message"]


def test_a_stale_plan_on_one_rank_changes_nothing_anywhere(ranks):
    _, results = ranks
    for r in range(2):
        err = results[r]["stale"]
        assert err["type"] == "RankMismatchError" and err["ranks"] == [1]
        assert err["unchanged"]


def test_another_model_or_a_late_rank_is_named(ranks):
    _, results = ranks
    for r in range(2):
        late = results[r]["late"]
        assert late["other_model"]["what"] == "layout" and late["other_model"]["ranks"] == [1]
        assert late["other_ids"]["what"] == "neuron_ids" and late["other_ids"]["ranks"] == [1]


def test_a_refusal_on_one_rank_rolls_back_every_rank(ranks):
    _, results = ranks
    zero, one = results[0]["outcome"], results[1]["outcome"]
    assert one["type"] == "SurgeryError" and "injected" in one["message"]
    assert zero["type"] == "RankMismatchError" and zero["what"] == "outcome"
    assert zero["ranks"] == [1]
    assert zero["unchanged"] and one["unchanged"]  # bitwise: parameters, Adam state, IDs
    assert zero["checksum"] == one["checksum"]


def test_wrappers_sharding_and_trials_are_refused(ranks):
    _, results = ranks
    for r in range(2):
        got = results[r]["refused"]
        assert got["ddp"]["type"] == "ConfigurationError" and "ddp.module" in got["ddp"]["message"]
        fsdp = got["fsdp"]
        if fsdp["type"] == "skipped":  # fully_shard needs CPU support in this torch
            pytest.skip(f"fully_shard on CPU: {fsdp['message']}")
        assert fsdp["type"] == "ConfigurationError" and "sharded" in fsdp["message"]
        assert got["trial"]["type"] == "ConfigurationError"


def test_only_rank_zero_writes(ranks):
    out, _ = ranks
    assert (out / "plan-rank0.json").is_file() and (out / "snapshot-rank0").is_dir()
    assert not (out / "plan-rank1.json").exists() and not (out / "snapshot-rank1").exists()
