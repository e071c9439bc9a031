"""SurgerySchedule: plans on a schedule, applied directly or as held-out trials."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine, SurgerySchedule
from engine.errors import ConfigurationError

PRUNE_HALF = {"policies": [{"name": "budget", "settings": {"remove_fraction": 0.75}}]}


def run(**schedule_options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model, correlation=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > x[:, 2]).long()
    schedule = SurgerySchedule(engine, opt, PRUNE_HALF, every=2, **schedule_options)
    for epoch in range(4):
        with engine.tracking():
            for i in range(0, 384, 64):
                opt.zero_grad()
                F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
                opt.step()
        schedule.epoch_end(epoch)
    return model, schedule, (x[384:], y[384:])


def test_without_a_judge_every_plan_is_applied():
    model, schedule, _ = run()
    assert [r.epoch for r in schedule.records] == [1, 3]
    assert schedule.trials == [] and model[0].out_features < 32


def test_with_held_out_data_a_harmful_plan_is_rolled_back_and_a_smaller_one_tried():
    _, _, held_out = run()  # the same data's last quarter, never trained on
    model, schedule, _ = run(held_out=held_out, loss_fn=F.cross_entropy)
    removed = [len(a.remove) for _, plan in schedule.plans for a in plan.actions()]
    accepted = [t.accepted for t in schedule.trials]
    assert removed[:2] == [24, 12] and accepted[:2] == [False, True]  # 75 % of units needed
    assert not any(accepted[2:])  # the second surgery finds nothing more to spare
    assert [r.epoch for r in schedule.records] == [1] and model[0].out_features == 20
    loose, _, _ = run(held_out=held_out, loss_fn=F.cross_entropy,
                      trial_options={"tolerance": 10.0})  # fmt: skip
    assert loose[0].out_features < 32


def test_trial_settings_without_a_judge_are_refused():
    with pytest.raises(ConfigurationError, match="need a judge"):
        run(recover=lambda m, o: None)
    with pytest.raises(ConfigurationError, match="needs a loss_fn"):
        run(held_out=(torch.zeros(2, 6), torch.zeros(2).long()))
