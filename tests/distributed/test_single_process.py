"""The distributed pieces that need no second process: packing, rank-order merging, wrapper
detection, rank-0 writes, and the engine without a process group."""

from __future__ import annotations

import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.distributed import check_trackable, merge_rows, pack, rewrap, sharding_of, unpack
from engine.errors import ConfigurationError, LayoutMismatchError
from engine.io import atomic_write_text, writes_here
from engine.stats import CoMoments, Moments
from engine.stats.growth import GradientCross

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shards import make_model, observe, shard


def _snapshot(rank: int):
    model = make_model().double()
    engine = NeuronEngine(model, correlation=True, growth_signal=True)
    observe(engine, model, shard(rank, dtype=torch.float64))
    return engine.snapshot()


def test_pack_round_trip_is_bitwise_and_covers_every_state():
    snap = _snapshot(0)
    flat, structure = pack(snap)
    back = unpack(snap, flat)
    assert torch.equal(pack(back)[0], flat) and pack(back)[1] == structure
    for name, layer in snap.layers.items():
        assert back.layers[name].count == layer.count
        assert back.layers[name].growth.rows == layer.growth.rows if layer.growth else True
    with pytest.raises(LayoutMismatchError, match="statistics values"):
        unpack(snap, flat[:-1])


def test_every_field_of_every_state_travels():
    """Whatever fields the stats package adds to its states, the payload carries them."""
    structure = pack(_snapshot(0))[1]
    for state, cls in (("moments", Moments), ("comoments", CoMoments), ("growth", GradientCross)):
        for f in fields(cls):
            assert f"0.{state}.{f.name} " in structure, (state, f.name)


def test_rank_order_merge_is_the_stats_merge():
    a, b = _snapshot(0), _snapshot(1)
    rows = torch.stack([pack(a)[0], pack(b)[0]])
    merged = merge_rows(a, rows)
    expected = a.merge(b)
    assert torch.equal(pack(merged)[0], pack(expected)[0])  # the same operations, same bits
    assert merged.metadata["ranks"] == 2


def test_wrappers_and_shards_are_named():
    model = make_model()
    with pytest.raises(ConfigurationError, match=r"pass|DistributedDataParallel"):
        check_trackable(nn.DataParallel(model))

    class FullyShardedDataParallel(nn.Module):  # the class name is what is detected
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    assert sharding_of(nn.Sequential(FullyShardedDataParallel(model))) == (
        "module '0' is a FullyShardedDataParallel"
    )
    zero3 = make_model()
    zero3[0].weight.ds_id = 7  # what DeepSpeed ZeRO-3 puts on its parameters
    assert "0.weight" in sharding_of(zero3) and "ds_id" in sharding_of(zero3)
    with pytest.raises(ConfigurationError, match="sharded"):
        NeuronEngine(zero3)
    assert sharding_of(make_model()) is None


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 get_rank=lambda: 1)  # fmt: skip
    monkeypatch.setitem(sys.modules, "torch.distributed", fake)
    assert not writes_here()
    atomic_write_text(tmp_path / "plan.json", "{}")
    assert not (tmp_path / "plan.json").exists()
    atomic_write_text(tmp_path / "cache.bin", "x", every_rank=True)
    assert (tmp_path / "cache.bin").read_text() == "x"
    fake.get_rank = lambda: 0
    atomic_write_text(tmp_path / "plan.json", "{}")
    assert (tmp_path / "plan.json").is_file()


def test_without_a_process_group_nothing_changes():
    model = make_model()
    engine = NeuronEngine(model)
    observe(engine, model, shard(0))
    assert engine.process_group is None
    assert "ranks" not in engine.snapshot().metadata  # no merge, no collective
    engine.process_group = object()
    with pytest.raises(ConfigurationError, match="not initialised"):
        engine.snapshot()


def test_rewrap_wants_the_ddp_wrapper():
    with pytest.raises(ConfigurationError, match="DistributedDataParallel"):
        rewrap(make_model())
