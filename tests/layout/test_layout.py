"""``build_layout``: consumers, coupling, outputs, supports and parameter costs from DepGraph.

Parameter counts are checked against Torch-Pruning itself: prune a deep copy of the model with
its own dependency groups and count what is left.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from engine_models import EmbedLSTM, FlagRaiser, LSTMHead, SmallResNet, count_hooks, seeded
from torch import nn

from engine.errors import ConfigurationError
from engine.layout import ALL_KINDS
from engine.layout.build import build_layout

PRUNE = frozenset({"prune"})


# --- helpers -------------------------------------------------------------------------------
def ids_for(model: nn.Module, names: list[str]) -> dict[str, list[int]]:
    """Consecutive neuron IDs, as the engine hands them out."""
    out, nxt = {}, 100
    for name in names:
        m = model.get_submodule(name)
        units = next(
            getattr(m, a)
            for a in ("out_features", "out_channels", "embed_dim", "embedding_dim", "hidden_size")
            if hasattr(m, a)
        )
        out[name] = list(range(nxt, nxt + units))
        nxt += units
    return out


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tp_params_after(model: nn.Module, x, plan: dict[str, int]) -> int:
    """Parameter count after Torch-Pruning removes the first ``k`` units of each layer."""
    twin = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(twin, x, verbose=False)
    for name, k in plan.items():
        module = twin.get_submodule(name)
        pruner = graph.get_pruner_of_module(module)
        graph.get_pruning_group(module, pruner.prune_out_channels, list(range(k))).prune()
    return n_params(twin)


def check_params_per_unit(model: nn.Module, x, layout, names: list[str]) -> None:
    total = n_params(model)
    for name in names:
        true = total - tp_params_after(model, x, {name: 1})
        assert layout.layers[name].params_per_unit == true, name


def make_mlp() -> nn.Sequential:
    with seeded(0):
        return nn.Sequential(
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 16),
            nn.ReLU(),
            nn.Linear(16, 10),
        )


def make_cnn() -> nn.Sequential:
    """8×8 input; the second conv has stride 2, so Flatten sees 6 channels × 4×4."""
    with seeded(1):
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 6, 3, stride=2, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 4 * 4, 10),
        )


class EmbedEncoder(nn.Module):
    """Tokens → Embedding → TransformerEncoderLayer → Linear head (a residual stream)."""

    def __init__(self, nhead: int = 1) -> None:
        super().__init__()
        with seeded(2):
            self.emb = nn.Embedding(20, 16)
            self.enc = nn.TransformerEncoderLayer(16, nhead, 32, dropout=0.0, batch_first=True)
            self.head = nn.Linear(16, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(tokens)))


# --- MLP -----------------------------------------------------------------------------------
def test_mlp_consumers_outputs_and_costs():
    model, x = make_mlp(), torch.randn(4, 64)
    ids = ids_for(model, ["0", "2", "4"])
    layout = build_layout(model, ids, x)

    assert list(layout.layers) == ["0", "2", "4"]
    assert layout.total_params == n_params(model)
    l0, l2, l4 = (layout.layers[n] for n in ("0", "2", "4"))
    assert (l0.units, l0.neuron_ids, l0.module_type) == (32, ids["0"], "Linear")
    assert [(c.module, c.tracked_layer, c.columns_per_unit) for c in l0.consumers] == [
        ("2", "2", 1)
    ]
    v = l0.consumers[0].weight
    assert v.dtype == torch.float64 and v.device.type == "cpu"
    assert torch.equal(v, model[2].weight.detach().double())
    assert torch.equal(l2.consumer_matrix(), model[4].weight.detach().double())
    assert [c.module for c in l2.consumers] == ["4"]
    assert (l0.is_output, l2.is_output, l4.is_output) == (False, False, True)
    assert l4.consumers == [] and l4.consumer_matrix() is None and l4.consumer_sq_norms() is None
    assert all(layer.supports == ALL_KINDS and layer.coupled == [] for layer in (l0, l2, l4))
    assert (l0.params_per_unit, l2.params_per_unit, l4.params_per_unit) == (
        64 + 1 + 16,
        32 + 1 + 10,
        16 + 1,
    )
    check_params_per_unit(model, x, layout, ["0", "2", "4"])


@pytest.mark.parametrize("plan", [{"0": 3, "2": 5}, {"2": 4, "4": 2}, {"0": 7, "2": 1, "4": 3}])
def test_mlp_params_after_matches_torch_pruning(plan):
    model, x = make_mlp(), torch.randn(4, 64)
    layout = build_layout(model, ids_for(model, ["0", "2", "4"]), x)
    assert layout.params_after(plan) == tp_params_after(model, x, plan)
    assert layout.params_after({}) == layout.total_params


# --- CNN with flatten ----------------------------------------------------------------------
def test_cnn_conv_and_flatten_consumers():
    model, x = make_cnn(), torch.randn(2, 3, 8, 8)
    layout = build_layout(model, ids_for(model, ["0", "3", "7"]), x)
    conv1, conv2, fc = (layout.layers[n] for n in ("0", "3", "7"))

    # conv consumer: the kernel with (out, kh, kw) folded into rows
    (c,) = conv1.consumers
    assert (c.module, c.module_type, c.tracked_layer, c.columns_per_unit) == ("3", "Conv2d", "3", 1)
    w3 = model[3].weight.detach().double()  # (6, 8, 3, 3)
    assert c.weight.shape == (6 * 9, 8)
    for j in range(8):
        assert torch.equal(c.weight[:, j], w3[:, j].reshape(-1))

    # Linear after flatten: one row per (output, spatial position), H·W columns per channel
    (f,) = conv2.consumers
    assert (f.module, f.tracked_layer, f.columns_per_unit) == ("7", "7", 16)
    w7 = model[7].weight.detach().double()  # (10, 96)
    assert f.weight.shape == (10 * 16, 6)
    for j in range(6):
        assert torch.equal(f.weight[:, j].reshape(10, 16), w7[:, j * 16 : (j + 1) * 16])

    assert (conv1.is_output, conv2.is_output, fc.is_output) == (False, False, True)
    assert conv1.params_per_unit == 3 * 9 + 1 + 2 + 6 * 9  # kernel + bias + BN + consumer
    assert conv2.params_per_unit == 8 * 9 + 1 + 2 + 10 * 16
    check_params_per_unit(model, x, layout, ["0", "3", "7"])


@pytest.mark.parametrize("plan", [{"0": 3, "3": 2}, {"3": 2, "7": 4}, {"0": 1, "3": 3, "7": 2}])
def test_cnn_params_after_matches_torch_pruning(plan):
    model, x = make_cnn(), torch.randn(2, 3, 8, 8)
    layout = build_layout(model, ids_for(model, ["0", "3", "7"]), x)
    assert layout.params_after(plan) == tp_params_after(model, x, plan)


def test_consumer_sq_norms_match_manual_computation():
    model, x = make_cnn(), torch.randn(2, 3, 8, 8)
    layout = build_layout(model, ids_for(model, ["0", "3", "7"]), x)
    w3 = model[3].weight.detach().double()
    assert torch.allclose(layout.layers["0"].consumer_sq_norms(), w3.square().sum(dim=(0, 2, 3)))
    w7 = model[7].weight.detach().double().reshape(10, 6, 16)
    assert torch.allclose(layout.layers["3"].consumer_sq_norms(), w7.square().sum(dim=(0, 2)))

    res = SmallResNet()
    layout = build_layout(res, ids_for(res, ["stem", "block.conv1"]), torch.randn(2, 3, 6, 6))
    expected = res.block.conv1.weight.detach().double().square().sum(dim=(0, 2, 3)) + (
        res.fc.weight.detach().double().square().sum(dim=0)
    )
    assert torch.allclose(layout.layers["stem"].consumer_sq_norms(), expected)


# --- residual ------------------------------------------------------------------------------
def test_residual_block_couples_layers():
    model, x = SmallResNet(), torch.randn(2, 3, 6, 6)
    names = ["stem", "block.conv1", "block.conv2", "fc"]
    layout = build_layout(model, ids_for(model, names), x)
    stem, conv1, conv2, fc = (layout.layers[n] for n in names)

    assert stem.coupled == ["block.conv2"] and conv2.coupled == ["stem"]
    assert conv1.coupled == [] and fc.coupled == []
    assert sorted(c.module for c in stem.consumers) == ["block.conv1", "fc"]
    assert sorted(c.module for c in conv2.consumers) == ["block.conv1", "fc"]
    assert [c.module for c in conv1.consumers] == ["block.conv2"]
    assert stem.params_per_unit == conv2.params_per_unit  # one group, one cost
    assert [n for n in names if layout.layers[n].is_output] == ["fc"]
    assert all(layout.layers[n].supports == ALL_KINDS for n in names)
    check_params_per_unit(model, x, layout, names)


@pytest.mark.parametrize(
    "plan",
    [
        {"stem": 2, "block.conv1": 1},
        {"block.conv2": 1, "block.conv1": 2},
        {"stem": 1, "fc": 2},
        {"block.conv1": 2, "fc": 3},
    ],
)
def test_residual_params_after_matches_torch_pruning(plan):
    model, x = SmallResNet(), torch.randn(2, 3, 6, 6)
    layout = build_layout(model, ids_for(model, ["stem", "block.conv1", "block.conv2", "fc"]), x)
    assert layout.params_after(plan) == tp_params_after(model, x, plan)


def test_layer_reading_and_writing_one_stream_is_prune_only():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with seeded(3):
                self.a, self.f, self.o = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.a(x)
            h = h + self.f(h)
            return self.o(h), h  # the stream is also returned

    model, x = Loop(), torch.randn(2, 4)
    layout = build_layout(model, ids_for(model, ["a", "f", "o"]), x)
    a, f = layout.layers["a"], layout.layers["f"]
    assert a.coupled == ["f"] and f.coupled == ["a"]
    assert a.supports == PRUNE and f.supports == PRUNE
    assert a.is_output and f.is_output  # returned as the second output
    assert [c.module for c in f.consumers] == ["o"]  # never its own consumer
    check_params_per_unit(model, x, layout, ["a", "f", "o"])
    for k in (1, 3):
        assert layout.params_after({"a": k}) == tp_params_after(model, x, {"a": k})


# --- transformer ---------------------------------------------------------------------------
def test_transformer_encoder_layer_on_raw_input():
    with seeded(4):
        model = nn.Sequential(
            nn.TransformerEncoderLayer(16, 1, 32, dropout=0.0, batch_first=True)
        ).train()
    x = torch.randn(2, 5, 16)
    names = ["0.self_attn", "0.linear1", "0.linear2"]
    layout = build_layout(model, ids_for(model, names), x)
    attn, lin1, lin2 = (layout.layers[n] for n in names)

    assert [(c.module, c.tracked_layer) for c in lin1.consumers] == [("0.linear2", "0.linear2")]
    assert lin1.supports == ALL_KINDS and not lin1.is_output and lin1.coupled == []
    # the residual stream: attention and linear2 write it; it starts at the model input
    # (width fixed by the data) and ends at the model output (after norm2)
    assert attn.coupled == ["0.linear2"] and lin2.coupled == ["0.self_attn"]
    assert attn.supports == frozenset() and lin2.supports == frozenset()
    assert attn.is_output and lin2.is_output
    assert {(c.module, c.tracked_layer) for c in lin2.consumers} == {
        ("0.linear1", "0.linear1"),
        ("0.self_attn", None),
    }
    in_proj = model[0].self_attn.in_proj_weight.detach().double()
    (mha_slice,) = [c for c in lin2.consumers if c.module == "0.self_attn"]
    assert torch.equal(mha_slice.weight, in_proj)
    check_params_per_unit(model, x, layout, names)
    assert model[0].training


@pytest.mark.parametrize("nhead", [1, 4])
def test_transformer_stream_from_embedding(nhead):
    model, x = EmbedEncoder(nhead), torch.randint(0, 20, (2, 5))
    names = ["emb", "enc.self_attn", "enc.linear1", "enc.linear2", "head"]
    layout = build_layout(model, ids_for(model, names), x)
    emb, attn, lin1, lin2, head = (layout.layers[n] for n in names)
    assert emb.coupled == ["enc.self_attn", "enc.linear2"]
    assert all(layer.supports == PRUNE for layer in (emb, attn, lin2))
    assert not any(layer.is_output for layer in (emb, attn, lin1, lin2)) and head.is_output
    assert {c.module for c in emb.consumers} == {"enc.self_attn", "enc.linear1", "head"}
    assert lin1.supports == ALL_KINDS
    if nhead == 1:  # Torch-Pruning refuses one unit when embed_dim must divide by num_heads
        check_params_per_unit(model, x, layout, names)
        plan = {"enc.linear1": 3, "emb": 1}
        assert layout.params_after(plan) == tp_params_after(model, x, plan)


# --- recurrent -----------------------------------------------------------------------------
def test_lstm_layers_support_nothing():
    model, x = LSTMHead(), torch.randn(2, 4, 5)
    layout = build_layout(model, ids_for(model, ["lstm", "fc"]), x)
    lstm, fc = layout.layers["lstm"], layout.layers["fc"]
    assert lstm.supports == frozenset() and not lstm.is_output and lstm.consumers == []
    assert fc.is_output and fc.supports == ALL_KINDS

    model, tokens = EmbedLSTM(), torch.randint(0, 20, (2, 5))
    layout = build_layout(model, ids_for(model, ["emb", "lstm", "fc"]), tokens)
    assert layout.layers["emb"].supports == frozenset()  # its consumer is an LSTM
    assert layout.layers["lstm"].supports == frozenset()
    check_params_per_unit(model, tokens, layout, ["emb", "fc"])


# --- grouped, depthwise and transposed convolutions ------------------------------------------
def test_depthwise_grouped_and_transposed_convs():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with seeded(5):
                self.c0 = nn.Conv2d(3, 8, 1)
                self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
                self.pw = nn.Conv2d(8, 4, 1)
                self.g = nn.Conv2d(4, 8, 3, padding=1, groups=2)
                self.up = nn.ConvTranspose2d(8, 3, 2, stride=2)

        def forward(self, x):
            return self.up(self.g(self.pw(torch.relu(self.dw(self.c0(x))))))

    model, x = Net(), torch.randn(2, 3, 5, 5)
    names = ["c0", "dw", "pw", "g", "up"]
    layout = build_layout(model, ids_for(model, names), x)
    c0, dw, pw, g, up = (layout.layers[n] for n in names)
    assert c0.supports == PRUNE and dw.supports == PRUNE  # through a depthwise conv
    assert c0.coupled == ["dw"] and dw.coupled == ["c0"]
    assert [c.module for c in c0.consumers] == ["pw"]
    assert pw.supports == frozenset() and pw.consumers == []  # read by a grouped conv
    assert g.supports == frozenset()  # grouped itself
    (t,) = g.consumers
    assert (t.module, t.module_type, t.weight.shape) == ("up", "ConvTranspose2d", (3 * 4, 8))
    w = model.up.weight.detach().double()  # (in=8, out=3, 2, 2)
    for j in range(8):
        assert torch.equal(t.weight[:, j], w[j].reshape(-1))
    assert up.is_output and up.supports == ALL_KINDS
    check_params_per_unit(model, x, layout, ["c0", "dw", "g", "up"])


# --- the model comes back untouched ----------------------------------------------------------
def test_model_state_modes_and_flags_are_restored():
    model = make_cnn()
    model[1].eval()  # mixed modes
    model[0].weight.requires_grad_(False)  # a frozen parameter
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]

    layout = build_layout(model, ids_for(model, ["0", "3", "7"]), torch.randn(2, 3, 8, 8))
    assert layout.layers["0"].consumers  # the frozen layer is still traced

    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]) and value.dtype == after[key].dtype, key
    assert all(p is q for p, q in zip(params, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert count_hooks(model) == 0


def test_failing_forward_restores_modes_flags_and_hooks():
    model = FlagRaiser().train()
    model.fc2.weight.requires_grad_(False)
    seen = []
    handle = model.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model.fail = True
    with pytest.raises(RuntimeError, match="planted failure"):
        build_layout(model, ids_for(model, ["fc1", "fc2"]), torch.randn(3, 4))
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]
    assert count_hooks(model) == 1  # only ours: Torch-Pruning's tracing hooks are gone
    handle.remove()


def test_existing_hooks_do_not_break_the_build():
    model = make_mlp()
    seen = []
    handles = [
        model[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))),
        model[2].register_forward_pre_hook(lambda m, i: None),
    ]
    layout = build_layout(model, ids_for(model, ["0", "2", "4"]), torch.randn(3, 64))
    assert [c.module for c in layout.layers["0"].consumers] == ["2"]
    assert seen == [(3, 32)]  # one traced forward: callers pause their tracking hooks
    assert count_hooks(model) == 2
    for h in handles:
        h.remove()


# --- call styles and errors ------------------------------------------------------------------
def test_dict_inputs_forward_fn_and_unreached_layers():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with seeded(6):
                self.a, self.b, self.unused = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(2, 2)

        def forward(self, x, scale):
            return self.b(torch.relu(self.a(x))) * scale

    model = TwoInputs()
    ids = ids_for(model, ["a", "b", "unused"])
    inputs = {"x": torch.randn(2, 3), "scale": 2.0}
    layout = build_layout(model, ids, inputs)
    assert [c.module for c in layout.layers["a"].consumers] == ["b"]
    assert layout.layers["b"].is_output
    unused = layout.layers["unused"]
    assert unused.supports == frozenset() and unused.consumers == [] and not unused.is_output

    same = build_layout(model, ids, (torch.randn(2, 3),), forward_fn=lambda m, x: m(x[0], 1.0))
    assert same.layers["a"].params_per_unit == layout.layers["a"].params_per_unit == 3 + 1 + 2


def test_bad_names_and_widths_are_refused():
    model, x = make_mlp(), torch.randn(2, 64)
    with pytest.raises(ConfigurationError, match="not a sub-module"):
        build_layout(model, {"nope": [0]}, x)
    with pytest.raises(ConfigurationError, match="32 output units but 3 neuron IDs"):
        build_layout(model, {"0": [0, 1, 2]}, x)
    with pytest.raises(ConfigurationError, match="depends on a parameter"):
        build_layout(model, {"0": list(range(32))}, x, forward_fn=lambda m, x: x.detach())


def test_inference_mode_is_refused_with_a_clear_error():
    model = make_mlp()
    with torch.inference_mode(), pytest.raises(ConfigurationError, match="inference_mode"):
        build_layout(model, {"0": list(range(32))}, torch.randn(2, 64))
    assert all(m.training for m in model.modules())


# --- the probe captured by NeuronEngine on the first tracked batch ---------------------------
class _KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.o = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.o(torch.relu(self.fc(x))) * scale


def test_unbatched_1d_probe_is_kept_whole_and_gives_a_layout():
    from engine import NeuronEngine

    with seeded(30):
        model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        x = torch.randn(16)
    engine = NeuronEngine(model)
    with engine.tracking():
        model(x)
    assert engine.example_inputs[0].shape == (16,)
    layout = engine.model_layout()
    assert layout.layers["0"].units == 8 and layout.layers["2"].is_output


@pytest.mark.parametrize("extra", [{}, {"scale": 2.0}])
def test_keyword_probe_is_captured_and_gives_a_layout(extra):
    from engine import NeuronEngine

    with seeded(31):
        model = _KeywordModel()
        x = torch.randn(20, 4)
    engine = NeuronEngine(model)
    with engine.tracking():
        model(x=x, **extra)
    assert engine.example_inputs == ()
    assert engine.example_kwargs["x"].shape == (8, 4)
    assert count_hooks(model) == 0
    layout = engine.model_layout()
    assert layout.layers["fc"].units == 8 and layout.layers["o"].is_output
    assert [c.module for c in layout.layers["fc"].consumers] == ["o"]
