"""Planted cases: the engine must find what was put there on purpose ("Must show").

* dead ReLU units (large negative bias), with ``nn.ReLU``, ``F.relu`` and ``x.relu()``;
* exact and positively scaled duplicate units, with their fitted merge coefficients;
* Conv → BN → ReLU channels judged after the norm and the activation;
* a shared ``nn.ReLU`` instance that must not mix two layers' signals;
* saturation of bounded activations;
* models that ``torch.fx`` cannot trace still track, with the fallback recorded.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from engine_models import (
    ConvBNFunctional,
    FunctionalMLP,
    SharedReLUMLP,
    SmallResNet,
    UntraceableBlock,
    UntraceableChildNet,
    UntraceableMLP,
    make_cnn_bn,
    seeded,
)
from torch import nn

from engine import NeuronEngine
from engine.stats import Moments, saturation_mask

DEAD = [13, 14, 15]  # local indices of the planted dead units in a 16-unit hidden layer


def _inputs(*shape: int, seed: int = 0, batches: int = 4) -> list[torch.Tensor]:
    with seeded(seed):
        return [torch.randn(*shape) for _ in range(batches)]


def _run(engine: NeuronEngine, model: nn.Module, batches: list[torch.Tensor]) -> None:
    with engine.tracking(), torch.no_grad():
        for x in batches:
            model(x)


def _assert_matches_reference(stats, ref: torch.Tensor, atol: float = 1e-5) -> None:
    """Tracked per-unit statistics equal a float64 two-pass reference on ``(samples, N)``."""
    ref = ref.double()
    assert stats.count == ref.shape[0]
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=atol, rtol=0)
    torch.testing.assert_close(stats.variance, ref.var(0, correction=0), atol=atol, rtol=0)
    torch.testing.assert_close(stats.minimum, ref.amin(0), atol=atol, rtol=0)
    torch.testing.assert_close(stats.maximum, ref.amax(0), atol=atol, rtol=0)
    torch.testing.assert_close(stats.mean_abs, ref.abs().mean(0), atol=atol, rtol=0)


# --- dead ReLU units -----------------------------------------------------------------------
class _SeqMLP(nn.Module):
    """``nn.Sequential``-based: ``Linear → nn.ReLU → Linear`` (names fc1/fc2 via a wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        with seeded(2):
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    @property
    def fc1(self) -> nn.Linear:
        return self.net[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _dead_model(style: str) -> tuple[nn.Module, str, str]:
    """(model, name of the first layer, expected hook module of the first layer)."""
    if style == "sequential":
        return _SeqMLP(), "net.0", "net.1"
    return FunctionalMLP(style=style), "fc1", "fc1"


@pytest.mark.parametrize("style", ["sequential", "functional", "method", "torch"])
def test_planted_dead_relu_units(style: str) -> None:
    model, first, hook = _dead_model(style)
    with torch.no_grad():
        model.fc1.bias[DEAD] = -1e4
    engine = NeuronEngine(model)
    _run(engine, model, _inputs(32, 6))
    obs = engine.observation_points()[first]
    assert obs["hook"] == hook
    assert obs["fallback"] is None
    if style != "sequential":
        assert obs["replayed"] == ["relu"]
    stats = engine.layer_stats(first)
    assert stats.count == 128
    assert engine.dead_neurons()[first] == DEAD
    assert torch.nonzero(stats.dead).flatten().tolist() == DEAD
    assert (stats.firing_rate[DEAD] == 0).all()
    # post-activation: a dead ReLU unit is exactly 0, not -1e4
    assert (stats.maximum[DEAD] == 0).all()
    assert (stats.minimum[DEAD] == 0).all()
    assert (stats.mean[DEAD] == 0).all()
    alive = [i for i in range(16) if i not in DEAD]
    assert (stats.firing_rate[alive] > 0).all()
    assert not stats.dead[alive].any()
    for i in DEAD:
        nid = engine.neurons.id_of(first, i)
        record = engine.neuron_stats(nid)
        assert record["dead"] is True
        assert record["firing_rate"] == 0.0
        assert record["saturation"] is None


def test_dead_units_with_firing_threshold() -> None:
    model = FunctionalMLP()
    with torch.no_grad():
        model.fc1.bias[DEAD] = -1e4
        model.fc1.bias[2] = 0.5  # unit 2 fires above 0 but never above 1e6
    engine = NeuronEngine(model, firing_threshold=1e6)
    _run(engine, model, _inputs(16, 6, batches=2))
    assert engine.dead_neurons()["fc1"] == list(range(16))
    assert engine.layer_stats("fc1").maximum[2] > 0


# --- planted duplicates --------------------------------------------------------------------
@pytest.mark.parametrize("style", ["sequential", "functional"])
@pytest.mark.parametrize("scale", [1.0, 3.0, 0.37])
def test_planted_duplicate_units_correlate_and_fit(style: str, scale: float) -> None:
    model, first, _ = _dead_model(style)
    i, j = 1, 6
    with torch.no_grad():
        model.fc1.bias[i] = 0.3  # make sure unit i fires often and varies
        model.fc1.weight[j] = scale * model.fc1.weight[i]
        model.fc1.bias[j] = scale * model.fc1.bias[i]
    engine = NeuronEngine(model, correlation=True, flush_every=2)
    _run(engine, model, _inputs(32, 6, seed=3, batches=5))
    snap = engine.snapshot()
    layer = snap.layers[first]
    assert layer.variance[i] > 0
    r = layer.pearson()
    assert r[i, j] >= 0.999
    assert r[j, i] >= 0.999
    alpha, beta = layer.comoments.fit(i, j)
    assert alpha == pytest.approx(scale, abs=1e-5)
    assert beta == pytest.approx(0.0, abs=1e-5)
    back_alpha, back_beta = layer.comoments.fit(j, i)
    assert back_alpha == pytest.approx(1.0 / scale, abs=1e-5)
    assert back_beta == pytest.approx(0.0, abs=1e-5)
    # the other pairs are not near-perfectly correlated
    off = r.clone()
    off.fill_diagonal_(0)
    off[i, j] = off[j, i] = 0
    assert torch.nan_to_num(off).abs().max() < 0.999


def test_duplicates_after_relu_not_before() -> None:
    """Row j = s·row i with s > 0 is a duplicate only after the ReLU: check the fit is exact
    on the observed post-activation signal, including the samples where both are 0."""
    model = FunctionalMLP()
    with torch.no_grad():
        model.fc1.bias[0] = 0.0
        model.fc1.weight[5] = 2.0 * model.fc1.weight[0]
        model.fc1.bias[5] = 0.0
    engine = NeuronEngine(model, correlation=["fc1"])
    batches = _inputs(64, 6, seed=4, batches=2)
    _run(engine, model, batches)
    stats = engine.layer_stats("fc1")
    ref = F.relu(model.fc1(torch.cat(batches))).detach()
    assert 0 < (ref[:, 0] > 0).float().mean() < 1  # ReLU clips part of the samples
    _assert_matches_reference(stats, ref)
    assert stats.comoments.fit(0, 5) == pytest.approx((2.0, 0.0), abs=1e-5)
    assert engine.layer_stats("fc2").comoments is None


# --- Conv → BN → ReLU ----------------------------------------------------------------------
def _plant_bn(bn: nn.BatchNorm2d, channel: int) -> None:
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.bias[channel] = -100.0


@pytest.mark.parametrize("train", [False, True])
def test_conv_bn_relu_channel_dead_after_bn(train: bool) -> None:
    model = make_cnn_bn()
    _plant_bn(model[1], channel=2)
    model.train(train)
    batches = _inputs(4, 3, 5, 5, seed=5, batches=2)
    engine = NeuronEngine(model)
    assert engine.observation_points()["0"]["hook"] == "2"  # the nn.ReLU module
    assert engine.observation_points()["0"]["chain"] == ["1:batchnorm2d", "2:relu"]
    assert engine.observation_points()["3"]["hook"] == "5"
    _run(engine, model, batches)
    assert engine.dead_neurons()["0"] == [2]
    raw = torch.cat([model[0](x) for x in batches]).detach()
    assert raw[:, 2].max() > 0  # the raw conv output of the channel does fire
    assert engine.layer_stats("0").count == 2 * 4 * 25


def test_conv_bn_relu_statistics_match_float64_reference() -> None:
    model = make_cnn_bn().eval()
    with seeded(6), torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    batches = _inputs(3, 3, 6, 6, seed=7, batches=3)
    engine = NeuronEngine(model, flush_every=2)
    _run(engine, model, batches)
    ref64 = copy.deepcopy(model).double()
    x = torch.cat(batches).double()
    with torch.no_grad():
        a1 = F.relu(ref64[1](ref64[0](x)))
        a2 = F.relu(ref64[4](ref64[3](a1)))
        out = ref64[8](ref64[7](ref64[6](a2)))
    _assert_matches_reference(engine.layer_stats("0"), a1.movedim(1, -1).reshape(-1, 8))
    _assert_matches_reference(engine.layer_stats("3"), a2.movedim(1, -1).reshape(-1, 6))
    _assert_matches_reference(engine.layer_stats("8"), out)
    # firing counts are exact against the float32 forward
    with torch.no_grad():
        a1_32 = F.relu(model[1](model[0](torch.cat(batches))))
    fire = (a1_32 > 0).double().movedim(1, -1).reshape(-1, 8).mean(0)
    torch.testing.assert_close(engine.layer_stats("0").firing_rate, fire, atol=0, rtol=0)


@pytest.mark.parametrize("train", [False, True])
def test_functional_relu_after_bn_replayed(train: bool) -> None:
    model = ConvBNFunctional()
    _plant_bn(model.bn1, channel=4)
    model.train(train)
    engine = NeuronEngine(model)
    obs = engine.observation_points()["conv1"]
    assert obs["hook"] == "bn1"
    assert obs["replayed"] == ["relu"]
    assert obs["fallback"] is None
    batches = _inputs(2, 3, 5, 5, seed=8, batches=2)
    _run(engine, model, batches)
    assert engine.dead_neurons()["conv1"] == [4]
    stats = engine.layer_stats("conv1")
    assert (stats.maximum[4] == 0).all()
    assert stats.minimum.min() >= 0  # observed after the ReLU


def test_functional_relu_after_bn_matches_reference_eval() -> None:
    model = ConvBNFunctional().eval()
    with seeded(9), torch.no_grad():
        model.bn1.running_mean.uniform_(-0.3, 0.3)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.bias.uniform_(-0.5, 0.5)
    batches = _inputs(2, 3, 5, 5, seed=10, batches=3)
    engine = NeuronEngine(model)
    _run(engine, model, batches)
    ref = copy.deepcopy(model).double()
    with torch.no_grad():
        a = F.relu(ref.bn1(ref.conv1(torch.cat(batches).double())))
    _assert_matches_reference(engine.layer_stats("conv1"), a.movedim(1, -1).reshape(-1, 6))


# --- shared nn.ReLU ------------------------------------------------------------------------
def test_shared_relu_does_not_mix_layers() -> None:
    model = SharedReLUMLP()
    engine = NeuronEngine(model, correlation=True)
    points = engine.observation_points()
    assert points["fc1"]["hook"] == "fc1"
    assert points["fc1"]["replayed"] == ["relu"]
    assert points["fc2"]["hook"] == "fc2"
    assert points["fc2"]["replayed"] == ["relu"]
    assert points["fc3"]["replayed"] == []
    batches = _inputs(16, 6, seed=11, batches=3)
    _run(engine, model, batches)
    ref = copy.deepcopy(model).double()
    x = torch.cat(batches).double()
    with torch.no_grad():
        h1 = F.relu(ref.fc1(x))
        h2 = F.relu(ref.fc2(h1))
        out = ref.fc3(h2)
    _assert_matches_reference(engine.layer_stats("fc1"), h1)
    _assert_matches_reference(engine.layer_stats("fc2"), h2)
    _assert_matches_reference(engine.layer_stats("fc3"), out)
    assert engine.layer_stats("fc1").count == engine.layer_stats("fc2").count == 48


@pytest.mark.parametrize("train", [False, True])
def test_resnet_block_shared_inplace_relu(train: bool) -> None:
    model = SmallResNet()
    with seeded(12), torch.no_grad():
        for bn in (model.bn, model.block.bn1, model.block.bn2):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.3, 0.3)
    model.train(train)
    engine = NeuronEngine(model)
    points = engine.observation_points()
    assert points["stem"]["hook"] == "relu"
    assert points["block.conv1"]["hook"] == "block.bn1"
    assert points["block.conv1"]["replayed"] == ["relu"]
    assert points["block.conv2"]["hook"] == "block.bn2"  # the residual add ends the chain
    assert points["block.conv2"]["replayed"] == []
    x = _inputs(3, 3, 4, 4, seed=13, batches=1)[0]
    ref = copy.deepcopy(model).double()
    _run(engine, model, [x])
    with torch.no_grad():
        s = F.relu(ref.bn(ref.stem(x.double())))
        b1 = F.relu(ref.block.bn1(ref.block.conv1(s)))
        b2 = ref.block.bn2(ref.block.conv2(b1))
        out = ref.fc(F.relu(b2 + s).mean(dim=(2, 3)))

    def per_channel(t: torch.Tensor) -> torch.Tensor:
        return t.movedim(1, -1).reshape(-1, t.shape[1])

    _assert_matches_reference(engine.layer_stats("stem"), per_channel(s))
    _assert_matches_reference(engine.layer_stats("block.conv1"), per_channel(b1))
    _assert_matches_reference(engine.layer_stats("block.conv2"), per_channel(b2))
    _assert_matches_reference(engine.layer_stats("fc"), out)


# --- bounded activations -------------------------------------------------------------------
class _Bounded(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        with seeded(14):
            self.fc1 = nn.Linear(6, 10)
        with torch.no_grad():
            self.fc1.weight.mul_(4.0)  # push a good part of the mass to the bounds
        self.act = act
        with seeded(15):
            self.fc2 = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


BOUNDED = {
    "sigmoid_module": (lambda: _Bounded(nn.Sigmoid()), torch.sigmoid, (0.0, 1.0)),
    "tanh_module": (lambda: _Bounded(nn.Tanh()), torch.tanh, (-1.0, 1.0)),
    "hardtanh_module": (
        lambda: _Bounded(nn.Hardtanh(-2.0, 2.0)),
        lambda t: F.hardtanh(t, -2.0, 2.0),
        (-2.0, 2.0),
    ),
    "relu6_module": (lambda: _Bounded(nn.ReLU6()), F.relu6, (0.0, 6.0)),
    "sigmoid_method": (lambda: FunctionalMLP(style="sigmoid_method"), torch.sigmoid, (0.0, 1.0)),
    "tanh_function": (lambda: FunctionalMLP(style="tanh"), torch.tanh, (-1.0, 1.0)),
}


@pytest.mark.parametrize("tolerance", [0.02, 0.1])
@pytest.mark.parametrize("case", list(BOUNDED))
def test_saturation_fraction_matches_reference(case: str, tolerance: float) -> None:
    factory, act, bounds = BOUNDED[case]
    model = factory()
    if isinstance(model, FunctionalMLP):
        with torch.no_grad():
            model.fc1.weight.mul_(4.0)
    engine = NeuronEngine(model, saturation_tolerance=tolerance)
    batches = _inputs(32, 6, seed=16, batches=3)
    _run(engine, model, batches)
    stats = engine.layer_stats("fc1")
    assert stats.bounds == bounds
    assert engine.observation_points()["fc1"]["bounds"] == list(bounds)
    with torch.no_grad():
        post = act(model.fc1(torch.cat(batches)))  # float32, exactly what the model computes
    expected = saturation_mask(post, bounds, tolerance).double().mean(0)
    torch.testing.assert_close(stats.saturation, expected, atol=0, rtol=0)
    assert 0 < expected.mean() < 1  # the planted scale gives a non-trivial fraction
    _assert_matches_reference(stats, post)
    ref = Moments.from_samples(post, bounds=bounds, saturation_tolerance=tolerance)
    torch.testing.assert_close(stats.saturation, ref.saturation, atol=0, rtol=0)
    # the output layer has no bounded activation
    assert torch.isnan(engine.layer_stats("fc2").saturation).all()


def test_fully_saturated_sigmoid_unit() -> None:
    model = _Bounded(nn.Sigmoid())
    with torch.no_grad():
        model.fc1.weight[3] = 0.0
        model.fc1.bias[3] = 50.0
    engine = NeuronEngine(model)
    _run(engine, model, _inputs(8, 6, batches=2))
    stats = engine.layer_stats("fc1")
    assert stats.saturation[3] == 1.0
    assert engine.neuron_stats(engine.neurons.id_of("fc1", 3))["saturation"] == 1.0


@pytest.mark.parametrize("style", ["sequential", "functional"])
def test_relu_layers_report_nan_saturation(style: str) -> None:
    model, first, _ = _dead_model(style)
    engine = NeuronEngine(model)
    _run(engine, model, _inputs(8, 6, batches=1))
    for name in engine.layers:
        stats = engine.layer_stats(name)
        assert stats.bounds is None
        assert torch.isnan(stats.saturation).all()
        assert engine.layer_stats(name).neuron(0)["saturation"] is None
    assert engine.observation_points()[first]["bounds"] is None


# --- untraceable models --------------------------------------------------------------------
def test_untraceable_model_still_tracks_with_fallback() -> None:
    model = UntraceableMLP()
    engine = NeuronEngine(model)
    points = engine.observation_points()
    for name in ("fc1", "fc2"):
        fallback = points[name]["fallback"]
        assert isinstance(fallback, str)
        assert fallback
        assert "could not trace" in fallback
        assert points[name]["hook"] == name
        assert points[name]["replayed"] == []
    batches = _inputs(8, 6, seed=17, batches=2)
    _run(engine, model, batches)
    assert engine.snapshot().samples_seen == {"fc1": 16, "fc2": 16}
    with torch.no_grad():
        h = model.fc1(torch.cat(batches))  # the fallback observes the layer's own output
    _assert_matches_reference(engine.layer_stats("fc1"), h)


def test_untraceable_child_falls_back_and_tracks() -> None:
    model = UntraceableChildNet()
    engine = NeuronEngine(model)
    points = engine.observation_points()
    fallback = points["child.inner"]["fallback"]
    assert isinstance(fallback, str)
    assert "'child'" in fallback
    _run(engine, model, _inputs(8, 6, seed=18, batches=2))
    assert engine.snapshot().samples_seen == {"fc0": 16, "child.inner": 16, "fc2": 16}


def _untraceable_sequential() -> nn.Module:
    with seeded(19):
        return nn.Sequential(
            nn.Linear(6, 8), nn.ReLU(), UntraceableBlock(8), nn.Linear(8, 3), nn.Sigmoid()
        )


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (UntraceableChildNet, {"fc0": ("fc0", ["relu"]), "fc2": ("fc2", ["relu"])}),
        (_untraceable_sequential, {"0": ("1", []), "3": ("4", [])}),
    ],
    ids=["custom", "sequential"],
)
def test_only_untraceable_child_falls_back(factory, expected) -> None:
    engine = NeuronEngine(factory())
    points = engine.observation_points()
    for name, (hook, replayed) in expected.items():
        assert points[name]["fallback"] is None, (name, points[name]["fallback"])
        assert points[name]["hook"] == hook
        assert points[name]["replayed"] == replayed


def test_dead_means_never_fired_behind_a_rectifier_and_constant_elsewhere() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias[0] = -1e4  # ReLU unit never fires → dead
        model[2].weight[1].zero_()  # tanh unit constant (tanh of its bias) → dead
        model[4].bias[0] = -100.0  # a logit that is always negative but varies → alive
        model[4].weight[1].zero_()  # a constant logit → dead
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        model(torch.randn(64, 4))
    assert engine.dead_neurons() == {"0": [0], "2": [1], "4": [1]}
    snap = engine.snapshot()
    assert snap.layers["0"].rectified and not snap.layers["2"].rectified
    assert snap.layers["4"].firing_rate[0] == 0.0  # never positive, yet not dead


def test_float64_model_with_large_bias_keeps_its_std() -> None:
    """A float64 model with bias 1e6 and 1e-3 noise: right std, no unit reported dead."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 1)).double()
    with torch.no_grad():
        model[0].bias += 1e6
    x = torch.randn(256, 4, dtype=torch.float64) * 1e-3
    engine = NeuronEngine(model)
    with engine.tracking():
        model(x)
    stats = engine.layer_stats("0")
    ref = Moments.from_samples(model[0](x))
    torch.testing.assert_close(stats.std, ref.std, rtol=1e-6, atol=0)
    assert not stats.dead.any()


def test_statistics_follow_the_model_to_another_device() -> None:
    """load_snapshot (CPU state), then the model moves ('meta' stands in for an accelerator)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    first = NeuronEngine(model, correlation=True)
    with first.tracking(), torch.no_grad():
        model(torch.randn(10, 4))
    engine = NeuronEngine(model, correlation=True, flush_every=1)
    engine.load_snapshot(first.snapshot())
    model.to("meta")
    with engine.tracking(), torch.no_grad():
        model(torch.randn(6, 4, device="meta"))
    acc = engine.layer("0").accumulator
    assert acc.total().n == 16
    assert acc.total().mean.device.type == "meta"
