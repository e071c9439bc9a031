"""Gradient, representation and similarity tracking keep working across ``engine.apply``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.plan import ExpandAction, Plan, PruneAction


def test_dynamics_across_real_surgery(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                          nn.Linear(12, 3))  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = NeuronEngine(model)
    probe = torch.randn(32, 8)
    reprs = engine.representation_dynamics(probe, directory=tmp_path)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    engine.gradient_tracker(eps=1e-6)  # options on first use

    def train(steps):
        with engine.tracking(), engine.gradient_tracking(opt):
            for _ in range(steps):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

    train(3)
    reprs.record(0)
    plan = Plan.create([
        PruneAction(layer="0", local_indices=[0, 3, 5], neuron_ids=[0, 3, 5], reason="test"),
        ExpandAction(layer="2", count=2, init="net2net", source_indices=[1, 2],
                     source_ids=[17, 18], reason="test"),
    ], engine.layout)  # fmt: skip
    engine.apply(plan, opt)
    train(3)
    reprs.record(1)
    history = engine.gradient_tracker().history()
    changed = history.column("0.weight", "near_zero")
    assert len(changed) == 6 and all(not math.isnan(v) for v in changed)
    assert any(r["parameter"] == "0.weight" for r in engine.gradient_tracker().resets)
    assert reprs.store.widths("0") == {0: 16, 1: 13} and reprs.store.widths("2") == {0: 12, 1: 14}
    _, overlap = reprs.fingerprint("0", k=3)
    assert overlap.shape == (1, 32) and (overlap >= 0).all() and (overlap <= 1).all()
