"""Sparsity pressure (group lasso over units, BatchNorm-γ L1): values against float64 references
computed unit by unit, gradients against the analytic formula and gradcheck, MLPs and CNNs, the
same after surgery resizes the layers, exact zero at strength 0, typed errors, no hooks and no
host sync."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import ConfigurationError, NeuronEngine, SparsityPressure, sparsity_penalty
from engine.plan import Plan, PruneAction
from engine.sparsity import (
    bn_l1_penalty,
    group_lasso_penalty,
    incoming_rows,
    unit_group_norms,
)

SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def num(value: torch.Tensor) -> float:
    return float(value.detach())


def mlp(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    layers = OrderedDict(fc1=nn.Linear(6, 10), relu1=nn.ReLU(), fc2=nn.Linear(10, 8),
                         relu2=nn.ReLU(), fc_out=nn.Linear(8, 3))  # fmt: skip
    return nn.Sequential(layers).to(dtype)


def cnn(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 6, 3, padding=1), bn1=nn.BatchNorm2d(6), relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 5, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(5), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc_out=nn.Linear(5, 3),
    )).to(dtype)  # fmt: skip
    with torch.no_grad():  # γ away from 1 and of both signs
        for bn in (model.bn1, model.bn2):
            bn.weight.copy_(torch.randn_like(bn.weight))
    return model


def reference_group_lasso(model, names, strength, bias=True, consumers=None):
    """Σ over layers and units, one unit at a time, in float64 Python arithmetic."""
    total = 0.0
    for name in names:
        module = model.get_submodule(name)
        w = module.weight.detach().double()
        b = module.bias.detach().double() if bias and module.bias is not None else None
        reader = model.get_submodule(consumers[name]) if consumers else None
        for u in range(w.shape[0]):
            values = w[u].flatten().tolist()
            values += [float(b[u])] if b is not None else []
            values += reader.weight.detach()[:, u].double().tolist() if reader else []
            total += math.sqrt(len(values)) * math.sqrt(sum(v * v for v in values))
    return strength * total


def test_mlp_penalty_equals_the_unit_by_unit_reference():
    model = mlp()
    pressure = SparsityPressure(model, strength=3e-3)
    assert pressure.layers == ("fc1", "fc2")  # the output layer is left out by default
    assert pressure.skipped == {"fc_out": "output layer (pass outputs=() to penalise it)"}
    value = pressure()
    assert value.dtype == torch.float64 and value.shape == () and value.requires_grad
    expected = reference_group_lasso(model, ["fc1", "fc2"], 3e-3)
    assert num(value) == pytest.approx(expected, rel=1e-12)
    groups = {g.layer: g for g in pressure.groups}
    assert (groups["fc1"].units, groups["fc1"].group_size) == (10, 7)
    assert groups["fc2"].weight == pytest.approx(math.sqrt(11))


def test_without_bias_and_with_outgoing_columns():
    model = mlp()
    no_bias = SparsityPressure(model, strength=1.0, bias=False)
    assert num(no_bias()) == pytest.approx(
        reference_group_lasso(model, ["fc1", "fc2"], 1.0, bias=False), rel=1e-12
    )
    out = SparsityPressure(model, strength=1.0, outgoing=True)
    assert out.consumers == {"fc1": "fc2", "fc2": "fc_out"}  # found by tracing the model
    assert [g.group_size for g in out.groups] == [6 + 1 + 8, 10 + 1 + 3]
    assert num(out()) == pytest.approx(
        reference_group_lasso(model, ["fc1", "fc2"], 1.0, consumers=out.consumers), rel=1e-12
    )


def test_cnn_group_lasso_and_bn_l1_equal_their_references():
    model = cnn()
    gl = SparsityPressure(model, strength=0.5)
    assert gl.layers == ("conv1", "conv2")
    assert num(gl()) == pytest.approx(
        reference_group_lasso(model, ["conv1", "conv2"], 0.5), rel=1e-12
    )
    assert [g.group_size for g in gl.groups] == [2 * 9 + 1, 6 * 9]  # conv2 has no bias
    bn = SparsityPressure(model, "bn_l1", strength=0.25)
    assert bn.layers == ("bn1", "bn2")
    gammas = model.bn1.weight.tolist() + model.bn2.weight.tolist()
    assert num(bn()) == pytest.approx(0.25 * sum(abs(g) for g in gammas), rel=1e-12)
    assert [(g.layer, g.units, g.group_size) for g in bn.groups] == [("bn1", 6, 1), ("bn2", 5, 1)]


def test_layer_selection_by_pattern_type_and_layout():
    model = mlp()
    assert SparsityPressure(model, layers="fc*").layers == ("fc1", "fc2")  # fc_out skipped
    assert SparsityPressure(model, layers=["fc2"]).layers == ("fc2",)
    assert SparsityPressure(model, layers=iter(["fc2"])).layers == ("fc2",)  # read once
    assert SparsityPressure(model, layers=nn.Linear, outputs=()).layers == ("fc1", "fc2", "fc_out")
    assert SparsityPressure(model, outputs="fc2").layers == ("fc1", "fc_out")
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(8, 6, dtype=torch.float64))
    layout = engine.model_layout()
    assert SparsityPressure(model, outputs=layout).layers == ("fc1", "fc2")
    assert SparsityPressure(cnn(), "bn_l1", layers="bn2").layers == ("bn2",)


def test_gradient_matches_the_analytic_formula_and_gradcheck():
    model = mlp()
    with torch.no_grad():
        model.fc1.weight[2].zero_()
        model.fc1.bias[2] = 0.0  # an all-zero group: subgradient 0, never NaN
    s = 0.7
    SparsityPressure(model, strength=s)().backward()
    for name in ("fc1", "fc2"):
        m = model.get_submodule(name)
        rows = torch.cat([m.weight, m.bias[:, None]], 1).detach()
        norms = rows.norm(dim=1, keepdim=True)
        grad = s * math.sqrt(rows.shape[1]) * torch.where(norms > 0, rows / norms, 0.0)
        torch.testing.assert_close(m.weight.grad, grad[:, :-1], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m.bias.grad, grad[:, -1], rtol=1e-12, atol=1e-14)
    assert torch.all(model.fc1.weight.grad[2] == 0)
    assert model.fc_out.weight.grad is None  # the output layer is not penalised

    conv = nn.Conv2d(2, 3, 3).double()
    reader = nn.Linear(3, 4).double()

    inputs = tuple(torch.randn(*p.shape, dtype=torch.float64, requires_grad=True)
                   for p in (conv.weight, conv.bias, reader.weight))  # fmt: skip
    assert torch.autograd.gradcheck(lambda *t: _functional(conv, reader, *t), inputs)


def _functional(conv, reader, w, b, v):
    """The penalty as a function of tensors (gradcheck needs graph-connected inputs)."""
    saved = conv._parameters.copy(), reader._parameters.copy()
    conv._parameters["weight"], conv._parameters["bias"], reader._parameters["weight"] = w, b, v
    try:
        return group_lasso_penalty([conv], 0.3) + group_lasso_penalty([reader], 0.1, bias=False)
    finally:
        conv._parameters.update(saved[0])
        reader._parameters.update(saved[1])


def test_bn_l1_gradient_is_strength_times_sign():
    model = cnn()
    SparsityPressure(model, "bn_l1", strength=0.2)().backward()
    for bn in (model.bn1, model.bn2):
        torch.testing.assert_close(bn.weight.grad, 0.2 * bn.weight.detach().sign())
        assert bn.bias.grad is None
    assert model.conv1.weight.grad is None


def test_incoming_rows_of_every_conv_flavour_match_a_loop():
    torch.manual_seed(2)
    for module in (nn.Conv1d(4, 6, 3, groups=2), nn.Conv3d(2, 3, 2),
                   nn.ConvTranspose2d(4, 6, 3, groups=2), nn.ConvTranspose1d(3, 5, 2),
                   nn.Bilinear(3, 4, 5)):  # fmt: skip
        rows = incoming_rows(module)
        w = module.weight.detach()
        units = rows.shape[0]
        for o in range(units):
            if getattr(module, "transposed", False):
                g, out_g = module.groups, w.shape[1]
                in_g = w.shape[0] // g
                expected = w[(o // out_g) * in_g : (o // out_g + 1) * in_g, o % out_g].flatten()
            else:
                expected = w[o].flatten()
            torch.testing.assert_close(rows[o].detach(), expected)
        assert units == getattr(module, "out_channels", getattr(module, "out_features", None))


def test_still_correct_after_engine_surgery_prunes_units():
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pressure = SparsityPressure(model, strength=1e-2, outgoing=True)
    engine = NeuronEngine(model)
    with engine.tracking():
        model(torch.randn(32, 6, dtype=torch.float64))
    plan = Plan.create([
        PruneAction(layer="fc1", local_indices=[0, 3, 5], neuron_ids=[0, 3, 5], reason="test"),
        PruneAction(layer="fc2", local_indices=[7], neuron_ids=[17], reason="test"),
    ], engine.layout)  # fmt: skip
    engine.apply(plan, opt)
    assert model.fc1.out_features == 7 and model.fc2.weight.shape == (7, 7)
    assert [(g.units, g.group_size) for g in pressure.groups] == [(7, 6 + 1 + 7), (7, 7 + 1 + 3)]
    value = pressure()
    expected = reference_group_lasso(model, ["fc1", "fc2"], 1e-2, consumers=pressure.consumers)
    assert num(value) == pytest.approx(expected, rel=1e-12)
    loss = F.cross_entropy(
        model(torch.randn(4, 6, dtype=torch.float64)), torch.tensor([0, 1, 2, 0])
    )
    opt.zero_grad()
    (loss + value).backward()
    opt.step()  # the remapped optimizer takes the penalised gradients
    assert model.fc1.weight.grad.shape == (7, 6)


def test_bn_l1_after_pruning_conv_channels_by_hand():
    model = cnn()
    pressure = SparsityPressure(model, "bn_l1", strength=1.0)
    keep = torch.tensor([0, 2, 5])
    with torch.no_grad():  # shrink conv1 → bn1 → conv2 by hand, as surgery would
        model.conv1.weight = nn.Parameter(model.conv1.weight[keep].clone())
        model.conv1.bias = nn.Parameter(model.conv1.bias[keep].clone())
        model.bn1.weight = nn.Parameter(model.bn1.weight[keep].clone())
        model.bn1.bias = nn.Parameter(model.bn1.bias[keep].clone())
        model.conv2.weight = nn.Parameter(model.conv2.weight[:, keep].clone())
    gammas = model.bn1.weight.tolist() + model.bn2.weight.tolist()
    assert num(pressure()) == pytest.approx(sum(abs(g) for g in gammas), rel=1e-12)
    assert [g.units for g in pressure.groups] == [3, 5]
    gl = SparsityPressure(model, strength=1.0)
    assert [g.group_size for g in gl.groups] == [2 * 9 + 1, 3 * 9]


def test_zero_strength_is_an_exact_zero_on_the_parameters_device():
    model = mlp(torch.float32)
    pressure = SparsityPressure(model, strength=0.0)
    value = pressure()
    assert torch.equal(value, torch.zeros((), dtype=torch.float32)) and value.device.type == "cpu"
    assert num(sparsity_penalty(cnn(), "bn_l1", strength=0)) == 0.0
    pressure.strength = 1e-3  # switched on later (a warm-up)
    assert num(pressure()) > 0
    assert num(group_lasso_penalty([], 1.0)) == 0.0 and num(bn_l1_penalty([], 1.0)) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SparsityPressure(mlp(), layers=["fc9"]), "layers='fc9' matches no trackable"),
        (lambda: SparsityPressure(mlp(), layers="fc_out"), "'fc_out' cannot be penalised: output"),
        (lambda: SparsityPressure(mlp(), outputs="head"), "outputs='head' matches no trackable"),
        (lambda: SparsityPressure(mlp(), kind="l1"), "kind='l1' is not one of group_lasso, bn_l1"),
        (lambda: SparsityPressure(mlp(), strength=-1e-4), "strength must be a finite number ≥ 0"),
        (lambda: SparsityPressure(mlp(), strength=float("nan")), "got nan"),
        (lambda: SparsityPressure(mlp(), strength=float("inf")), "got inf"),
        (lambda: SparsityPressure(mlp(), strength="1e-4"), "strength must be a number"),
        (lambda: SparsityPressure(mlp(), strength=True), "strength must be a number"),
        (lambda: SparsityPressure(mlp(), "bn_l1"), "bn_l1: Sequential has no BatchNorm layer"),
        (lambda: SparsityPressure(cnn(), "bn_l1", layers="bn3"), "layers='bn3' matches no Batch"),
        (lambda: SparsityPressure(cnn(), "bn_l1", outgoing=True), "outgoing=True is for kind="),
        (lambda: SparsityPressure(mlp(), bias=1), "bias must be True or False, got 1"),
        (lambda: SparsityPressure(nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2)), layers="0"),
         "'0' cannot be penalised: LSTM"),
        (lambda: SparsityPressure(nn.Sequential(nn.Linear(3, 2))), "nothing to penalise"),
        (lambda: SparsityPressure(nn.Sequential(nn.BatchNorm1d(3, affine=False)), "bn_l1",
                                  layers="0"), "BatchNorm '0' has affine=False"),
        (lambda: bn_l1_penalty([nn.Linear(2, 2)]), "bn_l1 needs affine BatchNorm layers"),
        (lambda: unit_group_norms(nn.LSTM(2, 3)), "group lasso acts on Linear, Bilinear"),
        (lambda: unit_group_norms(nn.Linear(2, 3), consumer=nn.Linear(4, 1)),
         "consumer reads 4 features but the layer has 3 units"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_configuration_errors_naming_the_item(call, message):
    with pytest.raises(ConfigurationError) as info:
        call()
    assert message in str(info.value)


def test_a_removed_layer_is_named():
    model = mlp()
    pressure = SparsityPressure(model)
    del model.fc2
    with pytest.raises(ConfigurationError, match="layer 'fc2' is no longer in the model"):
        pressure()


def test_no_hooks_and_no_host_sync(monkeypatch):
    model = cnn(torch.float32)
    pressures = [SparsityPressure(model, strength=1e-3, outgoing=True),
                 SparsityPressure(model, "bn_l1", strength=1e-3)]  # fmt: skip

    def hooks(m):
        return sum(len(d) for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks))

    assert all(hooks(m) == 0 for m in model.modules())
    x = torch.randn(4, 2, 5, 5)

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name}")

        return method

    with monkeypatch.context() as patch:
        for name in SYNCING:
            patch.setattr(torch.Tensor, name, refuse(name))
        loss = model(x).square().mean() + sum(p() for p in pressures)
        loss.backward()
    assert all(hooks(m) == 0 for m in model.modules())
    assert all(p.grad is not None for p in (model.conv1.weight, model.bn1.weight))


def test_removable_units_and_group_norms():
    model = mlp()
    with torch.no_grad():
        model.fc1.weight[[1, 4]] = 1e-9
        model.fc1.bias[[1, 4]] = 0.0
    pressure = SparsityPressure(model)
    assert pressure.removable() == {"fc1": [1, 4], "fc2": []}
    norms = pressure.group_norms()
    assert not norms["fc1"].requires_grad and norms["fc1"].shape == (10,)
    assert "SparsityPressure(kind='group_lasso'" in repr(pressure)


def test_training_with_pressure_shrinks_group_norms():
    torch.manual_seed(0)
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))

    def train(strength):
        model = mlp(torch.float32)
        pressure = SparsityPressure(model, strength=strength)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            (F.cross_entropy(model(x), y) + pressure()).backward()
            opt.step()
        return sum(num(n.sum()) for n in pressure.group_norms().values())

    assert train(3e-2) < 0.5 * train(0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_penalty_stays_on_device_without_sync():
    model = cnn(torch.float32).cuda()
    pressure = SparsityPressure(model, strength=1e-3, outgoing=True)
    bn = SparsityPressure(model, "bn_l1", strength=1e-3)
    (pressure() + bn()).backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value = pressure() + bn()
        value.backward()
        zero = SparsityPressure(model, strength=0.0)()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert value.device.type == "cuda" and zero.device.type == "cuda"
    cpu = cnn(torch.float32)
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    expected = (
        SparsityPressure(cpu, strength=1e-3)() + SparsityPressure(cpu, "bn_l1", strength=1e-3)()
    )
    torch.testing.assert_close(value.cpu(), expected.detach(), rtol=1e-5, atol=1e-7)
