"""NeuronEngine tracks every supported layer family with the right neuron layout and counts.

For each model: the tracked layers (in module order), their unit counts, consecutive global IDs
that round-trip through ``engine.neurons.locate``, and after a forward pass one observation per
(batch × time × spatial) position of every tracked layer, in train and eval mode and under
``torch.no_grad()`` / ``torch.inference_mode()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from engine_models import (
    EmbedLSTM,
    SmallResNet,
    count_hooks,
    make_cnn_bn,
    make_mlp,
    seeded,
)
from torch import nn

from engine import NeuronEngine, NeuronNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


@dataclass
class Case:
    """A model, an input, the expected layout and the expected observations per layer."""

    model: nn.Module
    inputs: torch.Tensor
    layout: list[tuple[str, int]]
    counts: dict[str, int]


def _tokens(*shape: int, vocab: int = 20) -> torch.Tensor:
    with seeded(100):
        return torch.randint(0, vocab, shape)


def _randn(*shape: int) -> torch.Tensor:
    with seeded(101):
        return torch.randn(*shape)


class _Attn(nn.Module):
    def __init__(self, embed: int = 8, heads: int = 2, batch_first: bool = True):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=batch_first)
        self.fc = nn.Linear(embed, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x)
        return self.fc(out)


def _seq(*modules: nn.Module) -> nn.Sequential:
    with seeded(102):
        return nn.Sequential(*modules)


def _lstm(**kw) -> nn.Sequential:
    with seeded(103):
        return nn.Sequential(nn.LSTM(5, 7, **kw))


def _gru(**kw) -> nn.Sequential:
    with seeded(104):
        return nn.Sequential(nn.GRU(5, 6, **kw))


def _tel(batch_first: bool = True) -> nn.TransformerEncoderLayer:
    with seeded(105):
        return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=batch_first)


CASES: dict[str, Callable[[], Case]] = {
    "mlp": lambda: Case(
        make_mlp(), _randn(5, 6), [("0", 16), ("2", 12), ("4", 3)], {"0": 5, "2": 5, "4": 5}
    ),
    "mlp_on_sequence": lambda: Case(
        make_mlp(), _randn(3, 4, 6), [("0", 16), ("2", 12), ("4", 3)], {"0": 12, "2": 12, "4": 12}
    ),
    "cnn_bn": lambda: Case(
        make_cnn_bn(),
        _randn(2, 3, 5, 5),
        [("0", 8), ("3", 6), ("8", 4)],
        {"0": 50, "3": 50, "8": 2},
    ),
    "resnet_block": lambda: Case(
        SmallResNet(),
        _randn(2, 3, 4, 4),
        [("stem", 4), ("block.conv1", 4), ("block.conv2", 4), ("fc", 5)],
        {"stem": 32, "block.conv1": 32, "block.conv2": 32, "fc": 2},
    ),
    "lstm": lambda: Case(_lstm(batch_first=True), _randn(3, 4, 5), [("0", 7)], {"0": 12}),
    "lstm_seq_first": lambda: Case(_lstm(), _randn(4, 3, 5), [("0", 7)], {"0": 12}),
    "lstm_bidirectional": lambda: Case(
        _lstm(batch_first=True, bidirectional=True), _randn(3, 4, 5), [("0", 14)], {"0": 12}
    ),
    "lstm_two_layers": lambda: Case(
        _lstm(batch_first=True, num_layers=2), _randn(3, 4, 5), [("0", 7)], {"0": 12}
    ),
    "lstm_proj": lambda: Case(
        _lstm(batch_first=True, proj_size=3), _randn(3, 4, 5), [("0", 3)], {"0": 12}
    ),
    "lstm_proj_bidirectional": lambda: Case(
        _lstm(batch_first=True, proj_size=3, bidirectional=True),
        _randn(3, 4, 5),
        [("0", 6)],
        {"0": 12},
    ),
    "gru_batch_first": lambda: Case(_gru(batch_first=True), _randn(3, 4, 5), [("0", 6)], {"0": 12}),
    "gru_seq_first": lambda: Case(_gru(), _randn(4, 3, 5), [("0", 6)], {"0": 12}),
    "gru_bidirectional": lambda: Case(
        _gru(bidirectional=True), _randn(4, 3, 5), [("0", 12)], {"0": 12}
    ),
    "rnn": lambda: Case(_seq(nn.RNN(5, 4)), _randn(4, 3, 5), [("0", 4)], {"0": 12}),
    "transformer_encoder_layer": lambda: Case(
        _tel(),
        _randn(3, 5, 8),
        [("self_attn", 8), ("linear1", 16), ("linear2", 8)],
        {"self_attn": 15, "linear1": 15, "linear2": 15},
    ),
    "transformer_encoder_layer_seq_first": lambda: Case(
        _tel(batch_first=False),
        _randn(5, 3, 8),
        [("self_attn", 8), ("linear1", 16), ("linear2", 8)],
        {"self_attn": 15, "linear1": 15, "linear2": 15},
    ),
    "multihead_attention": lambda: Case(
        _Attn(), _randn(3, 5, 8), [("attn", 8), ("fc", 3)], {"attn": 15, "fc": 15}
    ),
    "embedding": lambda: Case(_seq(nn.Embedding(20, 6)), _tokens(3, 5), [("0", 6)], {"0": 15}),
    "embedding_bag": lambda: Case(
        _seq(nn.EmbeddingBag(20, 6, mode="mean")), _tokens(3, 5), [("0", 6)], {"0": 3}
    ),
    "embedding_lstm_linear": lambda: Case(
        EmbedLSTM(),
        _tokens(3, 5),
        [("emb", 6), ("lstm", 8), ("fc", 4)],
        {"emb": 15, "lstm": 15, "fc": 3},
    ),
    "conv1d": lambda: Case(
        _seq(nn.Conv1d(3, 5, 3), nn.ReLU(), nn.Conv1d(5, 2, 1)),
        _randn(2, 3, 10),
        [("0", 5), ("2", 2)],
        {"0": 16, "2": 16},
    ),
    "conv3d": lambda: Case(
        _seq(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4), nn.ReLU()),
        _randn(2, 2, 4, 4, 4),
        [("0", 4)],
        {"0": 16},
    ),
    "conv_transpose2d": lambda: Case(
        _seq(nn.ConvTranspose2d(3, 5, 3, stride=2), nn.Tanh()),
        _randn(2, 3, 4, 4),
        [("0", 5)],
        {"0": 2 * 9 * 9},
    ),
}


def _mode_context(model: nn.Module, mode: str) -> contextlib.AbstractContextManager:
    model.train(mode.startswith("train"))
    if mode.endswith("no_grad"):
        return torch.no_grad()
    if mode == "inference_mode":
        return torch.inference_mode()
    return contextlib.nullcontext()


def check_layout(engine: NeuronEngine, layout: list[tuple[str, int]]) -> None:
    """Names in module order, unit counts, consecutive IDs, locate/id_of round-trip."""
    assert list(engine.layers) == [name for name, _ in layout]
    assert engine.layout == layout
    assert engine.neurons.total == sum(n for _, n in layout)
    assert engine.neurons.layer_names == [name for name, _ in layout]
    start = 0
    for name, units in layout:
        assert engine.neurons.size(name) == units
        assert engine.layers[name].num_units == units
        ids = engine.neurons.ids(name)
        assert ids == list(range(start, start + units))
        for local, nid in enumerate(ids):
            assert engine.neurons.locate(nid) == (name, local)
            assert engine.neurons.id_of(name, local) == nid
        start += units
    assert engine.neurons.next_id == start
    with pytest.raises(NeuronNotFoundError):
        engine.neurons.locate(start)


@pytest.mark.parametrize("case_name", list(CASES))
def test_layout(case_name: str) -> None:
    case = CASES[case_name]()
    engine = NeuronEngine(case.model)
    check_layout(engine, case.layout)
    # nothing observed yet
    assert engine.snapshot().samples_seen == dict.fromkeys(case.counts, 0)


MODE_MATRIX = [(case, mode) for case in CASES for mode in ("train", "eval_no_grad")] + [
    (case, mode)
    for case in (
        "mlp",
        "cnn_bn",
        "resnet_block",
        "lstm_bidirectional",
        "transformer_encoder_layer",
        "embedding_lstm_linear",
    )
    for mode in ("eval", "train_no_grad", "inference_mode")
]


@pytest.mark.parametrize(("case_name", "mode"), MODE_MATRIX)
def test_counts_after_forward(case_name: str, mode: str) -> None:
    case = CASES[case_name]()
    engine = NeuronEngine(case.model)
    with engine.tracking(), _mode_context(case.model, mode):
        out = case.model(case.inputs)
    if mode in ("train", "eval"):
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()  # the hooks must not break autograd
    snap = engine.snapshot()
    assert snap.samples_seen == case.counts
    for name, units in case.layout:
        layer = snap.layers[name]
        assert layer.count > 0
        assert layer.mean.shape == (units,)
        assert torch.isfinite(layer.mean).all()
        assert torch.isfinite(layer.variance).all()
        assert (layer.minimum <= layer.maximum).all()
    assert count_hooks(case.model) == 0


@pytest.mark.parametrize("case_name", ["mlp", "cnn_bn", "lstm_bidirectional", "embedding"])
def test_counts_accumulate_over_batches(case_name: str) -> None:
    case = CASES[case_name]()
    engine = NeuronEngine(case.model, flush_every=2)
    with engine.tracking():
        for _ in range(5):
            case.model(case.inputs)
    assert engine.snapshot().samples_seen == {k: 5 * v for k, v in case.counts.items()}


def test_lstm_bidirectional_statistics_match_output() -> None:
    model = _lstm(batch_first=True, bidirectional=True)
    x = _randn(3, 4, 5)
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        out, _ = model(x)
    ref = out.double().reshape(-1, 14)
    stats = engine.layer_stats("0")
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.variance, ref.var(0, correction=0), atol=1e-6, rtol=0)
    torch.testing.assert_close(stats.maximum, ref.amax(0), atol=1e-6, rtol=0)


def test_gru_seq_first_statistics_match_output() -> None:
    model = _gru()
    x = _randn(4, 3, 5)
    engine = NeuronEngine(model)
    with engine.tracking(), torch.no_grad():
        out, _ = model(x)
    ref = out.double().reshape(-1, 6)
    torch.testing.assert_close(engine.layer_stats("0").mean, ref.mean(0), atol=1e-6, rtol=0)


def test_conv_transpose_statistics_per_channel() -> None:
    case = CASES["conv_transpose2d"]()
    engine = NeuronEngine(case.model)
    with engine.tracking(), torch.no_grad():
        out = case.model(case.inputs)  # observed after the Tanh
    ref = out.double().movedim(1, -1).reshape(-1, 5)
    stats = engine.layer_stats("0")
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=1e-6, rtol=0)
    assert engine.observation_points()["0"]["hook"] == "1"
    assert stats.bounds == (-1.0, 1.0)


def test_multihead_attention_descendants_not_tracked() -> None:
    engine = NeuronEngine(_tel())
    assert "self_attn.out_proj" not in engine.layers
    assert all(not name.startswith("self_attn.") for name in engine.layers)


# --- TransformerEncoderLayer and the fused fast path --------------------------------------
@pytest.mark.parametrize("initial", [True, False])
def test_transformer_fastpath_disabled_while_tracking_and_restored(initial: bool) -> None:
    saved = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(initial)
        model = _tel().eval()
        x = _randn(3, 5, 8)
        engine = NeuronEngine(model)
        with torch.no_grad():
            with engine.tracking():
                assert torch.backends.mha.get_fastpath_enabled() is False
                model(x)
            assert torch.backends.mha.get_fastpath_enabled() is initial
            engine.start()
            model(x)
            engine.stop()
            assert torch.backends.mha.get_fastpath_enabled() is initial
        assert engine.snapshot().samples_seen == {"self_attn": 30, "linear1": 30, "linear2": 30}
    finally:
        torch.backends.mha.set_fastpath_enabled(saved)


def test_transformer_fastpath_restored_when_forward_raises() -> None:
    saved = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(True)
        model = _tel().eval()
        engine = NeuronEngine(model)
        with pytest.raises((RuntimeError, AssertionError)), engine.tracking():
            model(torch.randn(3, 5, 7))  # wrong embedding size
        assert torch.backends.mha.get_fastpath_enabled() is True
        assert count_hooks(model) == 0
    finally:
        torch.backends.mha.set_fastpath_enabled(saved)


def test_fastpath_restored_with_overlapping_engines() -> None:
    saved = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(True)
        a = NeuronEngine(make_mlp())
        b = NeuronEngine(make_mlp())
        a.start()
        b.start()
        a.stop()
        b.stop()
        assert torch.backends.mha.get_fastpath_enabled() is True
    finally:
        torch.backends.mha.set_fastpath_enabled(saved)


@pytest.mark.parametrize("mode", ["train", "eval_no_grad"])
def test_transformer_linear1_observed_after_activation(mode: str) -> None:
    model = _tel()
    x = _randn(3, 5, 8)
    captured: list[torch.Tensor] = []
    engine = NeuronEngine(model)
    with engine.tracking(), _mode_context(model, mode):
        handle = model.linear1.register_forward_hook(lambda m, a, o: captured.append(o.detach()))
        try:
            model(x)
        finally:
            handle.remove()
    assert len(captured) == 1
    ref = F.relu(captured[0]).double().reshape(-1, 16)
    stats = engine.layer_stats("linear1")
    torch.testing.assert_close(stats.mean, ref.mean(0), atol=1e-6, rtol=0)
    assert engine.observation_points()["linear1"]["replayed"] == ["relu"]


def test_transformer_in_encoder_stack() -> None:
    with seeded(106):
        model = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
            num_layers=2,
            enable_nested_tensor=False,
        )
    engine = NeuronEngine(model)
    expected = [
        ("layers.0.self_attn", 8),
        ("layers.0.linear1", 16),
        ("layers.0.linear2", 8),
        ("layers.1.self_attn", 8),
        ("layers.1.linear1", 16),
        ("layers.1.linear2", 8),
    ]
    check_layout(engine, expected)
    model.eval()
    with engine.tracking(), torch.no_grad():
        model(_randn(2, 3, 8))
    assert set(engine.snapshot().samples_seen.values()) == {6}
    assert engine.observation_points()["layers.1.linear1"]["replayed"] == ["relu"]


# --- modes ---------------------------------------------------------------------------------
def test_mixed_modes_accumulate_in_one_state() -> None:
    model = make_cnn_bn()
    x = _randn(2, 3, 5, 5)
    engine = NeuronEngine(model, flush_every=3)
    with engine.tracking():
        model.train()
        model(x).sum().backward()
        model.eval()
        with torch.no_grad():
            model(x)
        with torch.inference_mode():
            model(x)
        model(x)
    assert engine.snapshot().samples_seen == {"0": 200, "3": 200, "8": 8}
    # after inference mode, statistics still combine with ordinary tensors
    with engine.tracking():
        model(x).sum().backward()
    assert engine.snapshot().samples_seen == {"0": 250, "3": 250, "8": 10}


def test_inference_mode_statistics_match_no_grad() -> None:
    x = _randn(4, 6)
    results = []
    for ctx in (torch.no_grad, torch.inference_mode):
        model = make_mlp()
        engine = NeuronEngine(model, correlation=True)
        with engine.tracking(), ctx():
            model(x)
        results.append(engine.snapshot())
    for name in results[0].layers:
        a, b = results[0].layers[name], results[1].layers[name]
        torch.testing.assert_close(a.mean, b.mean)
        torch.testing.assert_close(a.comoments.c, b.comoments.c)
