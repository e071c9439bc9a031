"""A constant folded into a bias-free consumer (issue #19, item 2): into the running mean of the
BatchNorm that reads its output (exact in eval and train mode), or into a new bias that is in
the optimizer, moves at the next step and is rolled back with the rest."""

from __future__ import annotations

import copy

import pytest
import torch
from surgery_models import assert_same_state, state_of
from tied_models import ConvBlock, assert_all_in_optimizer, optimizer_ids, plan, trained
from torch import nn

import engine.surgery.transaction as transaction
from engine.errors import SurgeryError
from engine.plan import ExpandAction, PruneAction
from engine.surgery import apply_plan

OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
}


def linear_no_norm():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3, bias=False))


def linear_bn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
        nn.Linear(5, 3),
    )  # fmt: skip


@torch.no_grad()
def constant_unit(producer: nn.Module, unit: int, value: float, norm: nn.Module | None = None):
    """Unit ``unit`` outputs ``value`` after its ReLU, in eval and in train mode."""
    producer.weight[unit] = 0.0
    if norm is None:
        producer.bias[unit] = value
    else:  # zero input: batch and running statistics both give the shift
        norm.running_mean[unit] = 0.0
        norm.bias[unit] = value


def prune_constant(model, layers, layer, unit, value):
    action = PruneAction(layer=layer, local_indices=[unit], neuron_ids=[unit],
                         constant_values=[value], reason="constant")  # fmt: skip
    return plan(model, layers, [action])


def outputs(model, x):
    """(eval-mode outputs, train-mode outputs of a copy: the model's statistics stay put)."""
    model.eval()
    with torch.no_grad():
        ev = model(x)
        tr = copy.deepcopy(model).train()(x)
    return ev, tr


@pytest.mark.parametrize("make", [ConvBlock, linear_bn], ids=["conv_bn", "linear_bn"])
def test_fold_into_the_batchnorm_after_a_bias_free_consumer(make):
    torch.manual_seed(0)
    model = make()
    x = torch.randn(16, 3, 4, 4) if make is ConvBlock else torch.randn(16, 4)
    opt = trained(model, x)
    first, consumer, norm = (
        (model.conv1, model.conv2, model.bn2)
        if make is ConvBlock
        else (model[0], model[2], model[3])
    )
    layers = ["conv1", "conv2", "fc"] if make is ConvBlock else ["0", "2", "5"]
    constant_unit(first, 2, 0.7, model.bn1 if make is ConvBlock else None)
    reference = copy.deepcopy(model)
    before_eval, before_train = outputs(model, x)
    mean_before = norm.running_mean.clone()
    apply_plan(model, prune_constant(model, layers, layers[0], 2, 0.7), opt, x)

    assert consumer.bias is None  # no bias created: the constant went into the norm
    assert not torch.equal(norm.running_mean, mean_before)
    after_eval, after_train = outputs(model, x)
    torch.testing.assert_close(after_eval, before_eval, rtol=0, atol=1e-5)
    torch.testing.assert_close(after_train, before_train, rtol=0, atol=1e-5)
    assert_all_in_optimizer(model, opt)
    # Training on goes on in step: the running mean moves as the unpruned model's does.
    x2 = x + 0.5 * torch.randn_like(x)
    for m in (model, reference):
        m.train()
        with torch.no_grad():
            m(x2)
    torch.testing.assert_close(outputs(model, x)[0], outputs(reference, x)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_created_bias_is_in_the_optimizer_and_moves(name):
    model = linear_no_norm()
    x = torch.randn(16, 4)
    opt = trained(model, x, OPTIMIZERS[name](model.parameters()))
    constant_unit(model[0], 2, 0.5)
    before = model(x).detach()
    apply_plan(model, prune_constant(model, ["0", "2"], "0", 2, 0.5), opt, x)

    bias = model[2].bias
    assert isinstance(bias, nn.Parameter) and bias.requires_grad
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
    assert_all_in_optimizer(model, opt)
    group = next(g for g in opt.param_groups if any(p is model[2].weight for p in g["params"]))
    assert any(p is bias for p in group["params"])
    assert bias not in opt.state  # created lazily at the first step, as for any new parameter
    value = bias.detach().clone()
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()
    assert not torch.equal(bias.detach(), value)
    assert bias in opt.state


def _failing_plan(model):
    prune = PruneAction(layer="0", local_indices=[2], neuron_ids=[2], constant_values=[0.5],
                        reason="constant")  # fmt: skip
    grow = ExpandAction(layer="0", count=1, init="zero_outgoing", reason="saturated")
    return plan(model, ["0", "2"], [prune, grow])


def test_failure_after_the_bias_is_created_rolls_everything_back(monkeypatch):
    model = linear_no_norm()
    x = torch.randn(16, 4)
    opt = trained(model, x)
    constant_unit(model[0], 2, 0.5)
    before, groups = state_of(model, opt), optimizer_ids(opt)
    real, calls = transaction.apply_action, []

    def second_fails(action, ctx):
        calls.append(action.kind)
        if len(calls) == 2:
            assert model[2].bias is not None  # the first action created it
            raise RuntimeError("injected")
        return real(action, ctx)

    monkeypatch.setattr(transaction, "apply_action", second_fails)
    with pytest.raises(SurgeryError, match="injected"):
        apply_plan(model, _failing_plan(model), opt, x)
    assert model[2].bias is None
    assert_same_state(before, state_of(model, opt))
    assert optimizer_ids(opt) == groups


def test_failure_after_the_bias_joined_the_optimizer_rolls_it_out(monkeypatch):
    model = linear_no_norm()
    x = torch.randn(16, 4)
    opt = trained(model, x)
    constant_unit(model[0], 2, 0.5)
    before, groups = state_of(model, opt), optimizer_ids(opt)
    real = transaction.add_params

    def add_then_fail(optimizer, created):
        added = real(optimizer, created)
        assert len(added) == 1 and id(added[0]) in optimizer_ids(optimizer)
        raise RuntimeError("injected after add_params")

    monkeypatch.setattr(transaction, "add_params", add_then_fail)
    with pytest.raises(SurgeryError, match="injected after add_params"):
        apply_plan(model, prune_constant(model, ["0", "2"], "0", 2, 0.5), opt, x)
    assert model[2].bias is None
    assert_same_state(before, state_of(model, opt))
    assert optimizer_ids(opt) == groups


def test_a_norm_without_running_statistics_drops_the_constant_itself():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5, bias=False),
        nn.BatchNorm1d(5, track_running_stats=False), nn.Linear(5, 3),
    )  # fmt: skip
    x = torch.randn(16, 4)
    opt = trained(model, x)
    constant_unit(model[0], 2, 0.5)
    before = model(x).detach()
    apply_plan(model, prune_constant(model, ["0", "2", "4"], "0", 2, 0.5), opt, x)
    assert model[2].bias is None and model[3].running_mean is None
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)
    assert_all_in_optimizer(model, opt)
