"""Tied weights (issue #19, item 3): surgery keeps a tie (both ends resized as one tensor, one
optimizer entry) or refuses the plan with TiedWeightsError naming the tie, changing nothing."""

from __future__ import annotations

import pytest
import torch
from surgery_models import assert_same_state, state_of
from tied_models import (
    ParallelTied,
    SequentialTied,
    TiedLM,
    assert_all_in_optimizer,
    plan,
    trained,
)

from engine.errors import PlanValidationError, SurgeryError, TiedWeightsError
from engine.plan import ExpandAction, MergeAction, PruneAction
from engine.surgery import apply_plan

LM_LAYERS = ["emb", "fc1", "fc2", "head"]


def lm():
    torch.manual_seed(0)
    model = TiedLM()
    x = torch.randint(0, 11, (8, 5), generator=torch.Generator().manual_seed(1))
    return model, trained(model, x), x


def prune(layer, units, values=None):
    return PruneAction(layer=layer, local_indices=units, neuron_ids=units,
                       constant_values=values, reason="dead")  # fmt: skip


def check_kept(model, opt, x, before, atol=1e-5):
    assert model.head.weight is model.emb.weight
    assert_all_in_optimizer(model, opt)
    torch.testing.assert_close(model(x), before, rtol=0, atol=atol)
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()  # trains on: the tied tensor's state has its new shape
    assert model.head.weight is model.emb.weight


@torch.no_grad()
def dead_hidden(model, units):
    model.fc1.weight[units] = 0.0
    model.fc1.bias[units] = -5.0


def test_pruning_and_growing_the_hidden_layer_keeps_the_tie():
    model, opt, x = lm()
    dead_hidden(model, [1, 4])
    before = model(x).detach()
    apply_plan(model, plan(model, LM_LAYERS, [prune("fc1", [1, 4])]), opt, x)
    assert model.fc1.out_features == 6
    check_kept(model, opt, x, before)
    before = model(x).detach()
    grow = ExpandAction(layer="fc1", count=2, init="net2net", source_indices=[0, 3],
                        source_ids=[0, 3], reason="saturated")  # fmt: skip
    apply_plan(model, plan(model, LM_LAYERS, [grow]), opt, x)
    assert model.fc1.out_features == 8
    check_kept(model, opt, x, before)


def test_pruning_the_tied_dim_resizes_both_ends_as_one_tensor():
    model, opt, x = lm()
    with torch.no_grad():  # residual unit 2 is the constant 0.3 everywhere
        model.emb.weight[:, 2] = 0.3
        model.fc2.weight[2] = 0.0
        model.fc2.bias[2] = 0.0
    old = model.emb.weight
    exp_avg = opt.state[old]["exp_avg"].clone()
    before = model(x).detach()
    apply_plan(model, plan(model, LM_LAYERS, [prune("emb", [2], [0.3])]), opt, x)
    assert model.emb.weight.shape == (11, 5) and model.emb.embedding_dim == 5
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(opt.state[model.emb.weight]["exp_avg"], exp_avg[:, keep])
    assert model.head.bias is not None  # the constant's logits shift, in a created bias
    check_kept(model, opt, x, before)


def test_zero_outgoing_growth_of_the_tied_dim_keeps_the_tie_and_the_function():
    model, opt, x = lm()
    before = model(x).detach()
    grow = ExpandAction(layer="emb", count=2, init="zero_outgoing", reason="saturated")
    apply_plan(model, plan(model, LM_LAYERS, [grow]), opt, x)
    assert model.emb.weight.shape == (11, 8)
    assert torch.count_nonzero(model.emb.weight[:, 6:]) == 0
    assert torch.count_nonzero(model.fc2.weight[6:]) > 0  # the new units do get an input
    check_kept(model, opt, x, before)


@pytest.mark.parametrize(
    ("action", "allow", "found"),
    [
        (ExpandAction(layer="emb", count=1, init="net2net", source_indices=[0], source_ids=[0],
                      reason="saturated"), False, "net2net growth"),
        (MergeAction(layer="emb", keep=0, remove=1, keep_id=0, remove_id=1, alpha=1.0,
                     beta=0.0, correlation=1.0, reason="duplicate"), False, "merge rewrites"),
        (prune("head", [3]), True, "not as emb.weight"),
    ],
    ids=["net2net_emb", "merge_emb", "prune_vocab"],
)  # fmt: skip
def test_a_plan_that_would_untie_the_embedding_is_refused(action, allow, found):
    model, opt, x = lm()
    before = state_of(model, opt)
    with pytest.raises(TiedWeightsError) as info:
        apply_plan(model, plan(model, LM_LAYERS, [action]), opt, x, allow_output_changes=allow)
    message = str(info.value)
    assert "emb.weight and head.weight are one tensor" in message and found in message
    assert isinstance(info.value, PlanValidationError) and isinstance(info.value, SurgeryError)
    assert_same_state(before, state_of(model, opt))
    assert model.head.weight is model.emb.weight


def tied_pair(factory):
    torch.manual_seed(0)
    model = factory()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    return model, trained(model, x), x


def test_parallel_tied_linears_are_resized_as_one():
    model, opt, x = tied_pair(ParallelTied)
    layers = ["p", "a", "b", "out"]
    with torch.no_grad():
        model.p.weight[1] = 0.0
        model.p.bias[1] = -5.0  # p's unit 1 is dead
        model.p.weight[4] = model.p.weight[3]
        model.p.bias[4] = model.p.bias[3]  # p's unit 4 duplicates unit 3
        model.a.weight[2] = 0.0
        model.a.bias[2] = model.b.bias[2] = -5.0  # the summed unit 2 of a and b is dead
    before = model(x).detach()
    merge = MergeAction(layer="p", keep=3, remove=4, keep_id=3, remove_id=4, alpha=1.0,
                        beta=0.0, correlation=1.0, reason="duplicate")  # fmt: skip
    actions = [prune("p", [1]), prune("a", [2]), merge]
    apply_plan(model, plan(model, layers, actions), opt, x)
    assert model.a.weight is model.b.weight and model.a.weight.shape == (4, 4)
    assert_all_in_optimizer(model, opt)
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("layer", "found"), [("a", "differently"), ("b", "not as a.weight")])
def test_sequential_tied_linears_are_refused(layer, found):
    model, opt, x = tied_pair(SequentialTied)
    with torch.no_grad():
        model.get_submodule(layer).bias[0] = -5.0
    before = state_of(model, opt)
    layers = ["p", "a", "b", "out"]
    with pytest.raises(TiedWeightsError, match=r"a\.weight and b\.weight are one tensor") as info:
        apply_plan(model, plan(model, layers, [prune(layer, [0])]), opt, x)
    assert found in str(info.value)
    assert_same_state(before, state_of(model, opt))
    assert model.a.weight is model.b.weight
