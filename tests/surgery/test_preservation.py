"""Function preservation: exact actions change the probe's outputs by float error only.

Each case plants the structure that makes an action exact (dead ReLU units, exact or
positively scaled duplicates), applies a plan with ``apply_plan`` and compares the model's
outputs before and after on a probe batch, in eval mode and (with BatchNorm) in batch-
statistics mode, against an independent forward; the surgery's own record must agree.
"""

from __future__ import annotations

import pytest
import torch
from surgery_models import (
    FunctionalMLP,
    LayerNormMLP,
    ResidualCNN,
    Transformer,
    cnn_bn,
    inputs_for,
    make_dead,
    make_duplicate,
    mlp,
    plan_for,
    seeded_model,
)
from torch import nn

from engine.plan import ExpandAction, MergeAction, PruneAction
from engine.surgery import apply_plan

TOL = 1e-5


def outputs(model: nn.Module, x: torch.Tensor, batch_stats: bool = False) -> torch.Tensor:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    if batch_stats:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.train()
                m.momentum = 0.0  # keep running statistics where they are
    try:
        with torch.no_grad():
            return model(x).double()
    finally:
        for m, mode in modes:
            m.training = mode


def check_preserved(model, layers, actions, *, batch_stats=False, tol=TOL):
    x = inputs_for(model)
    ref = outputs(model, x)
    ref_b = outputs(model, x, True) if batch_stats else None
    record = apply_plan(model, plan_for(model, layers, actions), example_inputs=x)
    assert (outputs(model, x) - ref).abs().max().item() <= tol
    if batch_stats:
        assert (outputs(model, x, True) - ref_b).abs().max().item() <= tol
    assert record.max_output_change_eval <= tol
    assert all(a.exact_expected for a in record.actions), [a.note for a in record.actions]
    return record


def prune(layer, units, ids=None):
    return PruneAction(layer=layer, local_indices=units, neuron_ids=ids or units, reason="dead",
                       constant_values=[0.0] * len(units))  # fmt: skip


def merge(layer, keep, remove, alpha=1.0, base=0):
    return MergeAction(layer=layer, keep=keep, remove=remove, keep_id=base + keep,
                       remove_id=base + remove, alpha=alpha, beta=0.0, correlation=1.0,
                       reason="duplicate")  # fmt: skip


def grow(layer, sources, base=0, noise=0.0):
    return ExpandAction(layer=layer, count=len(sources), init="net2net", source_indices=sources,
                        source_ids=[base + s for s in sources], noise=noise,
                        reason="saturated")  # fmt: skip


MLP_LAYERS = ["0", "2", "4"]


def test_mlp_prune_dead_and_merge_duplicates():
    model = seeded_model(mlp)
    make_dead(model[0], [1, 7])
    make_duplicate(model[0], keep=2, remove=5)  # exact duplicate
    make_duplicate(model[2], keep=0, remove=3, scale=2.5)  # positively scaled
    record = check_preserved(model, MLP_LAYERS, [
        prune("0", [1, 7]), merge("0", 2, 5), merge("2", 0, 3, alpha=2.5, base=10),
    ])  # fmt: skip
    assert model[0].weight.shape == (7, 6) and model[2].weight.shape == (7, 7)
    assert model[4].weight.shape == (3, 7)
    assert record.params_after == sum(p.numel() for p in model.parameters())
    assert [a.width_after for a in record.actions] == [8, 7, 7]


def test_mlp_net2net_expand_is_exact():
    model = seeded_model(mlp)
    record = check_preserved(model, MLP_LAYERS, [grow("0", [3, 3, 4]), grow("2", [0], base=10)])
    assert model[0].out_features == 13 and model[2].in_features == 13
    assert model[2].out_features == 9 and model[4].in_features == 9
    assert record.actions[0].added_ids == [21, 22, 23] and record.actions[0].parents == [3, 3, 4]


def test_functional_activations():
    model = seeded_model(FunctionalMLP)
    make_dead(model.fc1, [0])
    make_duplicate(model.fc2, keep=1, remove=6, scale=0.5)
    check_preserved(model, ["fc1", "fc2", "fc3"], [
        prune("fc1", [0]), merge("fc2", 1, 6, alpha=0.5, base=10), grow("fc1", [2], ),
    ])  # fmt: skip


@pytest.mark.parametrize("flatten", [False, True])
def test_cnn_bn_prune_merge_expand(flatten):
    model = seeded_model(lambda: cnn_bn(flatten))
    make_dead(model[0], [2], norm=model[1])
    make_duplicate(model[0], keep=0, remove=6, norm=model[1])
    make_duplicate(model[3], keep=1, remove=4, norm=model[4])
    check_preserved(model, ["0", "3", "7" if flatten else "8"], [
        prune("0", [2]), merge("0", 0, 6), merge("3", 1, 4, base=8),
        grow("0", [3, 5]), grow("3", [0, 0], base=8),
    ], batch_stats=True)  # fmt: skip
    assert model[1].running_mean.shape == (8,) and model[4].num_features == 7
    if flatten:
        assert model[7].in_features == 7 * 16


@pytest.mark.parametrize("init", ["zero_outgoing", "random"])
def test_growth_through_flatten_adds_every_position(init):
    # Regression: non-copy growth sized the new slices count·P·P instead of count·P when the
    # consumer reads each channel at P = H·W flattened positions.
    model = seeded_model(lambda: cnn_bn(flatten=True))
    x = inputs_for(model)
    ref = outputs(model, x)
    action = ExpandAction(layer="3", count=2, init=init, reason="saturated")
    record = apply_plan(model, plan_for(model, ["0", "3", "7"], [action]), example_inputs=x)
    assert model[3].out_channels == 8 and model[7].weight.shape == (4, 8 * 16)
    change = (outputs(model, x) - ref).abs().max().item()
    if init == "zero_outgoing":  # new channels reach the head through zero columns
        assert change <= TOL and record.actions[0].exact_expected
        assert torch.count_nonzero(model[7].weight[:, 6 * 16 :]) == 0


def test_residual_cnn_internal_and_coupled_stream():
    model = seeded_model(ResidualCNN)
    make_dead(model.conv1, [3], norm=model.bn1)
    make_duplicate(model.conv1, keep=0, remove=5, norm=model.bn1)
    layers = ["stem", "conv1", "conv2", "fc"]
    record = check_preserved(model, layers, [
        prune("conv1", [3], ids=[9]), merge("conv1", 0, 5, base=6),
        grow("stem", [1, 4]),  # the residual stream: stem, conv2 and their norms grow together
    ], batch_stats=True)  # fmt: skip
    assert model.stem.out_channels == model.conv2.out_channels == model.fc.in_features == 8
    assert model.conv1.in_channels == 8 and model.bn2.num_features == 8
    assert record.widths_after == {"stem": 8, "conv1": 6, "conv2": 8, "fc": 4}
    assert len(record.actions[2].added_ids) == 4  # two for stem, two for conv2


def test_transformer_feed_forward_width():
    model = seeded_model(Transformer)
    block = model.block
    make_duplicate(block.linear1, keep=3, remove=9)
    layers = ["embed", "block.linear1", "block.linear2", "head"]
    check_preserved(model, layers, [merge("block.linear1", 3, 9, base=16),
                                    grow("block.linear1", [0, 1], base=16)])  # fmt: skip
    assert block.linear1.out_features == 33 and block.linear2.in_features == 33


def test_layernorm_is_measured_not_claimed():
    model = seeded_model(LayerNormMLP)
    x = inputs_for(model)
    ref = outputs(model, x)
    plan = plan_for(model, ["fc1", "fc2"], [grow("fc1", [0, 1])])
    record = apply_plan(model, plan, example_inputs=x)
    action = record.actions[0]
    assert not action.exact_expected
    measured = (outputs(model, x) - ref).abs().max().item()
    assert action.max_output_change == pytest.approx(measured, rel=1e-4, abs=1e-7)
    assert measured > TOL  # duplicating units moves LayerNorm's statistics


def test_noise_breaks_symmetry_and_is_recorded():
    model = seeded_model(mlp)
    torch.manual_seed(3)
    plan = plan_for(model, MLP_LAYERS, [grow("0", [1], noise=0.1)])
    record = apply_plan(model, plan, example_inputs=inputs_for(model))
    assert not torch.equal(model[0].weight[10], model[0].weight[1])
    assert not record.actions[0].exact_expected and "noise" in record.actions[0].note


def test_layernorm_prune_is_not_claimed_exact():
    model = seeded_model(LayerNormMLP)
    make_dead(model.fc1, [4])  # dead before the norm is not dead after it
    plan = plan_for(model, ["fc1", "fc2"], [prune("fc1", [4])])
    record = apply_plan(model, plan, example_inputs=inputs_for(model))
    assert not record.actions[0].exact_expected and "LayerNorm" in record.actions[0].note
    assert record.actions[0].max_output_change is not None
