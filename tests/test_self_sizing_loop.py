"""The self-sizing loop as a researcher relies on it: deterministic under a seed, and tracking
alone (statistics, correlation, growth signal) changes nothing in the training results."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine, SurgerySchedule, recovery_steps

AUTOSIZE = Path(__file__).resolve().parents[1] / "policies" / "autosize.yaml"


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(640, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()
    return x[:512], y[:512], x[512:], y[512:]


def train(tracked: bool, sized: bool, seed: int = 0, epochs: int = 8):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y, xv, yv = data()
    engine = NeuronEngine(model, correlation=True, growth_signal=True) if tracked else None
    schedule = None
    if sized:
        schedule = SurgerySchedule(
            engine, opt, AUTOSIZE, every=2, held_out=(xv, yv), loss_fn=F.cross_entropy,
            recover=recovery_steps(x, y, F.cross_entropy, 3, 32),
            trial_options={"tolerance": 0.01, "baseline": "recovered"},
            min_growth_gain=0.0, cut_budget=0.02, shrink_start=4,
        )  # fmt: skip
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        with engine.tracking() if engine is not None else torch.enable_grad():
            for idx in torch.randperm(512, generator=order).split(32):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        if engine is not None:
            engine.log_epoch(epoch, loss=loss.item())
        if schedule is not None:
            schedule.epoch_end(epoch)
    return model, opt, schedule


def test_tracking_without_surgery_changes_no_result():
    plain, plain_opt, _ = train(tracked=False, sized=False)
    watched, watched_opt, _ = train(tracked=True, sized=False)
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    states = zip(plain_opt.state.values(), watched_opt.state.values(), strict=True)
    assert all(torch.equal(p["exp_avg"], q["exp_avg"]) for p, q in states)


def test_the_self_sizing_loop_is_deterministic_under_a_seed():
    first, _, schedule = train(tracked=True, sized=True)
    second, _, again = train(tracked=True, sized=True)
    assert len(schedule.trials) > 0 and any(t.accepted for t in schedule.trials)
    assert [t.accepted for t in schedule.trials] == [t.accepted for t in again.trials]
    assert [t.loss_after for t in schedule.trials] == [t.loss_after for t in again.trials]
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
