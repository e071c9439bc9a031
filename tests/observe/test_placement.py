"""Unit tests of ``plan_observations``: where each tracked layer is observed, and why.

Models are defined here (not imported from ``engine_models``) so that this module does not
depend on how ``tests/`` ends up on ``sys.path`` for a sub-folder.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import NeuronEngine
from engine.observe import Observation, plan_observations
from engine.selection import discover_layers


@pytest.fixture(autouse=True)
def _private_rng():
    """Models here seed the global RNG while building; give the state back afterwards."""
    with torch.random.fork_rng(devices=[]):
        yield


def plan(model: nn.Module, **kw) -> dict[str, Observation]:
    tracked = {name: kind for name, (_, kind) in discover_layers(model, **kw).items()}
    return plan_observations(model, tracked)


def replayed(obs: Observation) -> list[str]:
    return [step.name for step in obs.replay]


def seeded_randn(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def track(model: nn.Module, x: torch.Tensor, **kw) -> NeuronEngine:
    engine = NeuronEngine(model, **kw)
    with engine.tracking(), torch.no_grad():
        model(x)
    return engine


def assert_stats(engine: NeuronEngine, name: str, ref: torch.Tensor) -> None:
    ref = ref.detach().double().reshape(-1, ref.shape[-1])
    stats = engine.layer_stats(name)
    assert stats.count == ref.shape[0]
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.variance, ref.var(0, correction=0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.minimum, ref.amin(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.maximum, ref.amax(0), atol=1e-6, rtol=0)


class Functional(nn.Module):
    """``fc2(fn(fc1(x)))`` for an arbitrary function ``fn``."""

    def __init__(self, fn, d_in: int = 4, hidden: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, 2)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fn(self.fc1(x)))


# --- Sequential chains ---------------------------------------------------------------------
def test_sequential_linear_relu_linear() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    assert list(obs) == ["0", "2"]
    assert obs["0"].hook_module == "1"
    assert obs["0"].chain == ("1:relu",)
    assert obs["0"].replay == ()
    assert obs["0"].bounds is None
    assert obs["0"].fallback is None
    assert not obs["0"].at_layer_output
    assert obs["2"].hook_module == "2"
    assert obs["2"].chain == ()
    assert obs["2"].at_layer_output
    assert obs["2"].fallback is None


def test_describe_is_plain_data() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid()))["0"]
    assert obs.describe() == {
        "hook": "1",
        "chain": ["1:sigmoid"],
        "replayed": [],
        "bounds": [0.0, 1.0],
        "rectified": False,
        "fallback": None,
        "consumer": None,
    }
    fed = plan(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 2)))["0"]
    assert fed.describe()["consumer"] == "2"  # the Linear that reads the units (GradMax)


def test_linear_bn_relu() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)))
    assert obs["0"].hook_module == "2"
    assert obs["0"].chain == ("1:batchnorm1d", "2:relu")
    assert obs["0"].replay == ()


def test_linear_relu_dropout_linear_dropout_ends_chain() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2)))
    assert obs["0"].hook_module == "1"
    assert obs["0"].chain == ("1:relu",)
    assert obs["3"].hook_module == "3"


def test_linear_relu_bn_hook_at_bn() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 2)))
    assert obs["0"].hook_module == "2"
    assert obs["0"].chain == ("1:relu", "2:batchnorm1d")
    assert obs["0"].replay == ()
    assert obs["0"].bounds is None  # a norm after a bounded activation is unbounded


def test_sigmoid_then_bn_has_no_bounds() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.BatchNorm1d(8)))
    assert obs["0"].hook_module == "2"
    assert obs["0"].bounds is None


def test_conv_bn_relu_pool() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 1)
    )
    obs = plan(model)
    assert obs["0"].hook_module == "2"
    assert obs["0"].chain == ("1:batchnorm2d", "2:relu")
    assert obs["4"].hook_module == "4"


def test_nested_sequential_names() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.Tanh()), nn.Linear(8, 2))
    obs = plan(model)
    assert obs["0.0"].hook_module == "0.1"
    assert obs["0.0"].bounds == (-1.0, 1.0)


def test_identity_continues_chain() -> None:
    obs = plan(nn.Sequential(nn.Linear(4, 8), nn.Identity(), nn.ReLU()))
    assert obs["0"].hook_module == "2"
    assert obs["0"].chain == ("1:identity", "2:relu")


# --- functional activations ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "name", "bounds"),
    [
        (F.relu, "relu", None),
        (torch.relu, "relu", None),
        (lambda h: h.relu(), "relu", None),
        (lambda h: h.sigmoid(), "sigmoid", (0.0, 1.0)),
        (torch.sigmoid, "sigmoid", (0.0, 1.0)),
        (lambda h: h.tanh(), "tanh", (-1.0, 1.0)),
        (F.gelu, "gelu", None),
        (F.silu, "silu", None),
        (F.relu6, "relu6", (0.0, 6.0)),
        (lambda h: F.hardtanh(h, -3.0, 3.0), "hardtanh", (-3.0, 3.0)),
        (lambda h: F.hardtanh(h, min_val=-0.5, max_val=2.0), "hardtanh", (-0.5, 2.0)),
    ],
    ids=[
        "F.relu",
        "torch.relu",
        "x.relu",
        "x.sigmoid",
        "torch.sigmoid",
        "x.tanh",
        "F.gelu",
        "F.silu",
        "F.relu6",
        "F.hardtanh_args",
        "F.hardtanh_kwargs",
    ],
)
def test_functional_activation_replayed(fn, name: str, bounds) -> None:
    model = Functional(fn)
    obs = plan(model)["fc1"]
    assert obs.hook_module == "fc1"
    assert obs.at_layer_output
    assert replayed(obs) == [name]
    assert obs.chain == (name,)
    assert obs.bounds == bounds
    assert obs.fallback is None
    x = seeded_randn(32, 4)
    engine = track(model, x)
    with torch.no_grad():
        assert_stats(engine, "fc1", fn(model.fc1(x)))


def test_functional_relu_chain_through_nested_module() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.head = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(F.relu(self.block(x)))

    obs = plan(Outer())
    assert obs["block.fc"].hook_module == "block.fc"
    assert replayed(obs["block.fc"]) == ["relu"]


@pytest.mark.parametrize(
    "fn",
    [
        lambda h: F.leaky_relu(h, 0.2),
        lambda h: F.leaky_relu(h, negative_slope=0.2),
        lambda h: F.leaky_relu(h, 0.2, True),
        lambda h: F.leaky_relu(h, 0.2, inplace=True),
    ],
    ids=["positional", "keyword", "inplace_positional", "inplace_keyword"],
)
def test_leaky_relu_negative_slope_honoured(fn) -> None:
    model = Functional(fn)
    obs = plan(model)["fc1"]
    assert replayed(obs) == ["leaky_relu"]
    x = seeded_randn(64, 4, seed=1)
    with torch.no_grad():
        expected_out = model(x).clone()
    engine = track(model, x)
    with torch.no_grad():
        pre = model.fc1(x)
        assert_stats(engine, "fc1", F.leaky_relu(pre, 0.2))
        # the default slope (0.01) would give a different minimum
        assert not torch.allclose(
            engine.layer_stats("fc1").minimum, F.leaky_relu(pre, 0.01).double().amin(0)
        )
        torch.testing.assert_close(model(x), expected_out)  # replay never acts in place


def test_inplace_relu_module_after_linear() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    obs = plan(model)
    assert obs["0"].hook_module == "1"
    x = seeded_randn(32, 4, seed=2)
    with torch.no_grad():
        expected_out = model(x).clone()
        ref = F.relu(model[0](x))
    engine = track(model, x)
    assert_stats(engine, "0", ref)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected_out)


def test_shared_inplace_relu_module_replayed_out_of_place() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 5)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc2(self.act(self.fc1(x))))

    model = Shared()
    obs = plan(model)
    for name in ("fc1", "fc2"):
        assert obs[name].hook_module == name
        assert replayed(obs[name]) == ["relu"]
        assert obs[name].chain == ("act:relu",)
    x = seeded_randn(16, 4, seed=4)
    engine = track(model, x)
    with torch.no_grad():
        h1 = F.relu(model.fc1(x))
        assert_stats(engine, "fc1", h1)
        assert_stats(engine, "fc2", F.relu(model.fc2(h1)))
    assert model.act.inplace  # the model's module is untouched by the replay copy


# --- chain ends ----------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self, act_first: bool) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.fc1 = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)
        self.act_first = act_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_first:
            return self.fc2(F.relu(self.fc1(x)) + x)
        return self.fc2(F.relu(self.fc1(x) + x))


def test_residual_add_ends_chain() -> None:
    obs = plan(Residual(act_first=False))["fc1"]
    assert obs.hook_module == "fc1"
    assert obs.chain == ()
    assert obs.replay == ()
    obs = plan(Residual(act_first=True))["fc1"]
    assert replayed(obs) == ["relu"]


def test_second_user_ends_chain() -> None:
    class TwoUsers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            return self.fc2(F.relu(h)) + h

    obs = plan(TwoUsers())["fc1"]
    assert obs.chain == ()
    assert obs.hook_module == "fc1"


def test_unknown_op_ends_chain() -> None:
    obs = plan(Functional(lambda h: F.relu(h * 2.0)))["fc1"]
    assert obs.chain == ()
    obs = plan(Functional(lambda h: F.relu(F.layer_norm(h, (6,)))))["fc1"]
    assert obs.chain == ()  # a functional norm cannot be observed: the chain ends before it


def test_shared_norm_ends_chain() -> None:
    class SharedNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.fc2(F.relu(self.norm(self.fc1(x)))))

    obs = plan(SharedNorm())
    assert obs["fc1"].chain == ()
    assert obs["fc1"].hook_module == "fc1"
    assert obs["fc2"].chain == ()


def test_norm_then_shared_activation() -> None:
    class NormShared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.ln = nn.LayerNorm(4)
            self.fc2 = nn.Linear(4, 4)
            self.act = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc2(self.act(self.ln(self.fc1(x)))))

    obs = plan(NormShared())
    assert obs["fc1"].hook_module == "ln"
    assert replayed(obs["fc1"]) == ["gelu"]
    assert obs["fc1"].chain == ("ln:layernorm", "act:gelu")
    assert obs["fc2"].hook_module == "fc2"
    assert replayed(obs["fc2"]) == ["gelu"]


# --- fallbacks -----------------------------------------------------------------------------
def test_layer_called_twice_falls_back() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(F.relu(self.fc(F.relu(self.fc(x)))))

    obs = plan(Twice())
    assert obs["fc"].hook_module == "fc"
    assert obs["fc"].replay == ()
    assert "called 2 times" in obs["fc"].fallback
    assert obs["out"].fallback is None
    engine = track(Twice(), seeded_randn(3, 4))
    assert engine.layer_stats("fc").count == 6  # both calls are observed


def test_layer_never_called_falls_back() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.spare = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    obs = plan(Unused())
    assert obs["fc"].fallback is None
    assert "not seen as a module call" in obs["spare"].fallback


def test_untraceable_model_fallback_reason() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            if h.mean() > 0:
                h = -h
            return F.relu(h)

    obs = plan(Branchy())["fc"]
    assert obs.hook_module == "fc"
    assert obs.fallback.startswith("could not trace 'the model'")


# --- recurrent and attention layers --------------------------------------------------------
class LSTMRelu(nn.Module):
    def __init__(self, index_style: bool) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)
        self.index_style = index_style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.index_style:
            return self.fc(F.relu(self.lstm(x)[0]))
        out, _ = self.lstm(x)
        return self.fc(F.relu(out))


@pytest.mark.parametrize("index_style", [False, True], ids=["unpack", "index"])
def test_lstm_getitem_then_relu_replayed(index_style: bool) -> None:
    model = LSTMRelu(index_style)
    obs = plan(model)["lstm"]
    assert obs.hook_module == "lstm"
    assert replayed(obs) == ["relu"]
    assert obs.fallback is None
    x = seeded_randn(2, 4, 3, seed=7)
    engine = track(model, x)
    with torch.no_grad():
        assert_stats(engine, "lstm", F.relu(model.lstm(x)[0]))


def test_lstm_last_step_slice_ends_chain() -> None:
    class Last(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.fc = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.lstm(x)[0][:, -1]))

    model = Last()
    obs = plan(model)["lstm"]
    assert obs.hook_module == "lstm"
    assert obs.replay == ()
    x = seeded_randn(2, 4, 3, seed=8)
    engine = track(model, x)
    with torch.no_grad():
        assert_stats(engine, "lstm", model.lstm(x)[0])  # every step, not only the last


def test_attention_output_relu_replayed() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(9)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.attn(x, x, x)
            return F.relu(out)

    model = Attn()
    obs = plan(model)
    assert list(obs) == ["attn"]
    assert replayed(obs["attn"]) == ["relu"]
    x = seeded_randn(2, 3, 4, seed=10)
    engine = track(model, x)
    with torch.no_grad():
        assert_stats(engine, "attn", model(x))


@pytest.mark.parametrize(
    ("activation", "name"),
    [("relu", "relu"), ("gelu", "gelu"), (nn.GELU(), "gelu"), (F.silu, "silu")],
    ids=["relu", "gelu", "GELU_module", "F.silu"],
)
def test_transformer_encoder_linear1_structure_hint(activation, name: str) -> None:
    model = nn.TransformerEncoderLayer(8, 2, 16, activation=activation, batch_first=True)
    obs = plan(model)
    assert list(obs) == ["self_attn", "linear1", "linear2"]
    assert obs["linear1"].hook_module == "linear1"
    assert replayed(obs["linear1"]) == [name]
    assert obs["linear1"].fallback is None
    assert "structure hint for TransformerEncoderLayer" in obs["linear1"].chain[0]
    assert obs["linear2"].replay == ()
    assert obs["linear2"].fallback  # the layer cannot be traced: recorded
    x = seeded_randn(2, 3, 8, seed=11)
    captured: list[torch.Tensor] = []
    model.eval()
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        h = model.linear1.register_forward_hook(lambda m, a, o: captured.append(o.clone()))
        model(x)
        h.remove()
    act = activation if callable(activation) else getattr(F, activation)
    assert_stats(engine, "linear1", act(captured[0]))


def test_transformer_decoder_linear1_structure_hint() -> None:
    model = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)
    obs = plan(model)
    assert list(obs) == ["self_attn", "multihead_attn", "linear1", "linear2"]
    assert replayed(obs["linear1"]) == ["relu"]  # traced, or from the structure hint
    assert obs["linear1"].fallback is None


# --- known gaps ----------------------------------------------------------------------------
class InplaceStatement(nn.Module):
    """The activation is applied in place as a statement; its result is not reassigned."""

    def __init__(self, style: str) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(6, 2)
        self.style = style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.style == "method":
            h.relu_()
        elif self.style == "functional":
            F.relu(h, inplace=True)
        else:
            self.act(h)
        return self.fc2(h)


@pytest.mark.parametrize("style", ["method", "functional", "module"])
def test_inplace_activation_statement_observed_post_activation(style: str) -> None:
    model = InplaceStatement(style)
    x = seeded_randn(32, 4, seed=13)
    engine = track(model, x)
    with torch.no_grad():
        ref = F.relu(model.fc1(x))
    assert engine.layer_stats("fc1").minimum.min() >= 0
    assert_stats(engine, "fc1", ref)


class _Block(nn.Module):
    def __init__(self, d_in: int, d_out: int, act: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class SplitRoot(nn.Module):
    """An untraceable root around two traceable children ``a`` and ``b`` (traced separately).

    ``shared=True``: both children hold the same ``nn.ReLU`` instance.
    """

    def __init__(self, shared: bool) -> None:
        super().__init__()
        torch.manual_seed(14)
        act_a = nn.ReLU()
        self.a = _Block(4, 6, act_a)
        self.b = _Block(6, 6, act_a) if shared else _Block(6, 3, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.b(self.a(x))


def test_untraceable_root_children_traced_separately() -> None:
    obs = plan(SplitRoot(shared=False))
    assert obs["a.fc"].hook_module == "a.act"
    assert obs["a.fc"].fallback is None


def test_layer_is_planned_in_its_own_scope() -> None:
    model = SplitRoot(shared=False)
    obs = plan(model)
    assert obs["b.fc"].hook_module == "b.act"
    assert obs["b.fc"].bounds == (-1.0, 1.0)
    x = seeded_randn(5, 4, seed=15)
    engine = track(model, x)
    assert engine.layer_stats("b.fc").mean.shape == (3,)
    with torch.no_grad():
        assert_stats(engine, "b.fc", torch.tanh(model.b.fc(F.relu(model.a.fc(x)))))


def test_activation_shared_across_separately_traced_scopes_is_not_mixed() -> None:
    model = SplitRoot(shared=True)
    x = seeded_randn(5, 4, seed=16)
    engine = track(model, x)
    assert engine.snapshot().samples_seen == {"a.fc": 5, "b.fc": 5}
    with torch.no_grad():
        h = F.relu(model.a.fc(x))
        assert_stats(engine, "a.fc", h)
        assert_stats(engine, "b.fc", F.relu(model.b.fc(h)))


# --- random activations: hookable, never replayed -------------------------------------------
class SharedRReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.act = nn.RReLU()
        self.o = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.act(self.b(self.act(self.a(x)))))


def _rrelu_run(track_it: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SharedRReLU()  # train mode: RReLU draws random slopes
    x = torch.randn(32, 4)
    engine = NeuronEngine(model)
    if track_it:
        engine.start()
    torch.manual_seed(1)
    model(x)
    y = model(x)
    after = torch.rand(3)  # the RNG stream continues where the model left it
    if track_it:
        engine.stop()
        assert engine.observation_points()["a"]["replayed"] == []
    return y, after


def test_shared_rrelu_is_never_replayed_and_tracking_keeps_the_rng_stream() -> None:
    y_plain, rng_plain = _rrelu_run(False)
    y_tracked, rng_tracked = _rrelu_run(True)
    assert torch.equal(y_plain, y_tracked)
    assert torch.equal(rng_plain, rng_tracked)


def test_rrelu_called_once_carries_the_hook() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.RReLU(), nn.Linear(6, 2))
    obs = plan(model)
    assert obs["0"].hook_module == "1"
    assert replayed(obs["0"]) == []
    x = seeded_randn(8, 4, seed=21)
    engine = NeuronEngine(model.eval())  # eval mode: a fixed slope, so a reference exists
    with engine.tracking(), torch.no_grad():
        model(x)
    with torch.no_grad():
        assert_stats(engine, "0", model[1](model[0](x)))


# --- a chain that leaves a separately traced scope --------------------------------------------
class _InnerLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ActivationInUntraceableParent(nn.Module):
    """The ReLU is applied by a parent that cannot be traced: the inner scope cannot see it."""

    def __init__(self) -> None:
        super().__init__()
        self.blk = _InnerLinear()
        self.o = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:  # control flow on a traced value: the root is untraceable
            x = x * 1
        return self.o(F.relu(self.blk(x)))


def test_chain_leaving_a_separately_traced_scope_has_a_fallback_reason() -> None:
    obs = plan(ActivationInUntraceableParent())["blk.fc"]
    assert obs.hook_module == "blk.fc" and obs.chain == ()
    assert obs.fallback is not None
    assert "leaves the traced scope 'blk'" in obs.fallback
    assert "parent could not be traced" in obs.fallback
    assert "control flow" in obs.fallback
