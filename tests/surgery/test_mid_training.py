"""Surgery in the middle of training: the same optimizer and engine keep going."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from surgery_models import Transformer, inputs_for, mlp, plan_for, seeded_model
from torch import nn

from engine import NeuronEngine
from engine.plan import ExpandAction, MergeAction, PruneAction
from engine.surgery import apply_plan, gradmax_gradient

LAYERS = ["0", "2", "4"]


def step(model, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + (x[:, 3] > 1).long()
    return x, y


def test_adam_moments_follow_surviving_units():
    model = seeded_model(mlp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    for _ in range(3):
        step(model, opt, x, y)
    w0, w2 = model[0].weight, model[2].weight
    m0, v0 = opt.state[w0]["exp_avg"].clone(), opt.state[w0]["exp_avg_sq"].clone()
    m2 = opt.state[w2]["exp_avg"].clone()
    plan = plan_for(model, LAYERS, [
        PruneAction(layer="0", local_indices=[1, 6], neuron_ids=[1, 6], reason="dead"),
        ExpandAction(layer="0", count=1, init="net2net", source_indices=[3], source_ids=[3],
                     reason="saturated"),
    ])  # fmt: skip
    apply_plan(model, plan, opt, example_inputs=x[:8])
    keep = [0, 2, 3, 4, 5, 7, 8, 9]
    new0 = opt.state[model[0].weight]
    assert torch.equal(new0["exp_avg"][:8], m0[keep]) and torch.equal(new0["exp_avg_sq"][:8],
                                                                     v0[keep])  # fmt: skip
    assert not new0["exp_avg"][8].any() and int(new0["step"]) == 3
    assert torch.equal(opt.state[model[2].weight]["exp_avg"][:, :8], m2[:, keep])
    assert w0 not in opt.state and len(opt.state) == 6
    assert opt.param_groups[0]["params"][0] is model[0].weight
    step(model, opt, x, y)  # the same optimizer object keeps training


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
        lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5, centered=True),
    ],
    ids=["sgd-momentum", "adamw", "rmsprop"],
)
def test_optimizers_keep_training(make_opt):
    model = seeded_model(mlp)
    model[4].weight.requires_grad_(False)  # frozen parameters stay frozen
    opt = make_opt([p for p in model.parameters() if p.requires_grad])
    x, y = data()
    for _ in range(2):
        step(model, opt, x, y)
    plan = plan_for(model, LAYERS, [
        PruneAction(layer="2", local_indices=[0], neuron_ids=[10], reason="dead"),
    ])  # fmt: skip
    apply_plan(model, plan, opt, example_inputs=x[:8])
    assert not model[4].weight.requires_grad and model[4].weight.shape == (3, 7)
    for p in opt.param_groups[0]["params"]:
        for v in opt.state[p].values():
            if torch.is_tensor(v) and v.dim():
                assert v.shape == p.shape
    step(model, opt, x, y)


def test_training_with_surgery_every_few_epochs_converges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                          nn.Linear(16, 3))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    engine = NeuronEngine(model, correlation=True)
    x, y = data(512)
    config = {"policies": [{"name": "dead"}, {"name": "redundancy", "settings": {
        "threshold": 0.9}}, {"name": "saturation"}]}  # fmt: skip
    first = None
    for epoch in range(12):
        with engine.tracking():
            for i in range(0, 512, 64):
                loss = step(model, opt, x[i : i + 64], y[i : i + 64])
        first = first if first is not None else loss
        if epoch % 3 == 2:
            engine.apply(engine.propose(config), opt, epoch=epoch)
            engine.reset()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.85 and loss < first
    assert len(engine.surgeries) == 4
    assert sum(len(r.actions) for r in engine.surgeries) >= 2, [r.widths_after for r in
                                                                 engine.surgeries]  # fmt: skip


def test_engine_follows_the_surgery():
    model = seeded_model(mlp)
    engine = NeuronEngine(model, correlation=True)
    x, _ = data()
    with engine.tracking():
        model(x)
    before = engine.layer_stats("0")
    events = []

    class Listener:
        def before_surgery(self, model, plan, *, step, epoch):
            events.append(("before", model[0].out_features, step))

        def after_surgery(self, model, record):
            events.append(("after", model[0].out_features, record.step))

    engine.add_listener(Listener())
    plan = engine.propose([])  # an empty plan from the engine, then a hand-made one
    plan = plan_for(model, LAYERS, [
        MergeAction(layer="0", keep=2, remove=5, keep_id=2, remove_id=5, alpha=1.0, beta=0.0,
                    correlation=0.5, reason="redundant"),
        ExpandAction(layer="0", count=2, init="zero_outgoing", reason="saturated"),
    ])  # fmt: skip
    record = engine.apply(plan, step=7)
    assert events == [("before", 10, 7), ("after", 11, 7)]
    assert engine.neurons.ids("0") == [0, 1, 2, 3, 4, 6, 7, 8, 9, 21, 22]
    assert engine.neurons.lineage[5] == {"event": "merged", "layer": "0", "into": 2}
    assert engine.neurons.lineage[21]["event"] == "grown"
    assert record.actions[0].merged_into == {2: [5]} and record.actions[1].added_ids == [21, 22]
    after = engine.layer_stats("0")
    keep = [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert torch.equal(after.moments.mean[:9], before.moments.mean[keep])
    assert torch.isnan(after.moments.mean[9:]).all()
    with engine.tracking():  # tracking goes on at the new width
        model(x)
    assert engine.layer_stats("0").moments.mean.shape == (11,)
    assert engine.fingerprint() == record.fingerprint_after


def test_transformer_attention_embed_prune_runs_and_measures():
    model = seeded_model(Transformer)
    layers = [("embed", 16), ("block.linear1", 32), ("block.linear2", 16), ("head", 3)]
    from engine.plan import Plan

    plan = Plan.create([PruneAction(layer="block.linear2", local_indices=[0, 5],
                                    neuron_ids=[48, 53], reason="dead")], layers)  # fmt: skip
    x = inputs_for(model)
    record = apply_plan(model, plan, example_inputs=x)
    assert model.block.self_attn.embed_dim == 14 and model.block.self_attn.head_dim == 7
    assert model.embed.out_features == 14 and model.block.norm1.normalized_shape == (14,)
    assert record.actions[0].max_output_change is not None
    model(x)


def test_gradmax_growth_gets_gradients():
    model = seeded_model(mlp)
    x, y = data()
    grad = gradmax_gradient(model, "2", "4", x, y, F.cross_entropy)
    plan = plan_for(model, LAYERS, [
        ExpandAction(layer="2", count=2, init="gradmax", reason="saturated"),
    ])  # fmt: skip
    ref = model(x).detach()
    record = apply_plan(model, plan, example_inputs=x[:8], gradients={"2": grad})
    assert (model(x) - ref).abs().max() < 1e-2  # only the tiny bias that lets ReLU pass
    assert not model[2].weight[8:].any()
    cols = model[4].weight[:, 8:].detach().double()
    assert torch.allclose(cols.T @ cols / cols[:, 0].norm() ** 2, torch.eye(2, dtype=cols.dtype),
                          atol=1e-5)  # fmt: skip
    F.cross_entropy(model(x), y).backward()
    assert model[2].weight.grad[8:].abs().sum() > 0
    assert "gradmax" in record.actions[0].note
