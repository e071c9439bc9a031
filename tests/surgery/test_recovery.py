"""Recovery steps and a reused baseline: the parts of a trial a schedule repeats."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import recovery_steps
from engine.errors import ConfigurationError
from engine.plan import Plan, PruneAction
from engine.surgery import held_out_loss, run_trial


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    x = torch.randn(64, 4)
    return model, x, model(x).detach() + 0.1 * torch.randn(64, 1)


def test_recovery_steps_train_in_train_mode_and_restore_the_mode():
    model, x, y = model_and_data()
    model.eval()
    modes = []
    model.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    before = [p.detach().clone() for p in model.parameters()]
    recovery_steps(x, y, nn.MSELoss(), 3, batch_size=8)(
        model, torch.optim.SGD(model.parameters(), 0.1)
    )
    assert modes == [True] * 3 and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    recovery_steps(x, y, nn.MSELoss(), 3)(model, None)  # no optimizer: nothing trains
    assert len(modes) == 3


def test_recovery_steps_draw_from_the_global_generator():
    """So a trial, which restores the generator, gives its baseline the same batches."""
    model, x, y = model_and_data()
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    recover = recovery_steps(x, y, nn.MSELoss(), 2, batch_size=4)
    torch.manual_seed(5)
    recover(model, torch.optim.SGD(model.parameters(), 0.0))
    torch.manual_seed(5)
    recover(model, torch.optim.SGD(model.parameters(), 0.0))
    assert all(torch.equal(a, b) for a, b in zip(seen[:2], seen[2:], strict=True))


@pytest.mark.parametrize(("steps", "batch"), [(-1, 4), (2, 0)])
def test_recovery_steps_check_their_settings(steps, batch):
    _, x, y = model_and_data()
    with pytest.raises(ConfigurationError, match="steps"):
        recovery_steps(x, y, nn.MSELoss(), steps, batch_size=batch)
    with pytest.raises(ConfigurationError, match="inputs"):
        recovery_steps(x, y[:3], nn.MSELoss(), 1)


def test_a_reference_loss_replaces_the_baseline_measurement():
    model, x, y = model_and_data()
    calls = []
    judge = held_out_loss((x, y), nn.MSELoss())

    def evaluate(m):
        calls.append(m[0].out_features)
        return judge(m)

    plan = Plan.create([PruneAction(layer="0", local_indices=[0], neuron_ids=[0], reason="t")],
                       [("0", 6), ("2", 1)])  # fmt: skip
    trial = run_trial(model, plan, None, x[:8], evaluate=evaluate, reference_loss=123.0)
    assert calls == [5] and trial.loss_before == 123.0 and trial.accepted
    with pytest.raises(ConfigurationError, match="reference_loss"):
        run_trial(model, plan, None, x[:8], evaluate=evaluate, reference_loss=float("nan"))
