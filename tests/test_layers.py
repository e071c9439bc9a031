"""The layer-kind registry: unit counts, unit axes, tuple outputs, custom types."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import ConfigurationError, LayerKind, NeuronEngine, layer_kind_for, register_layer_kind
from engine.observe import to_samples


@pytest.mark.parametrize(
    ("module", "units"),
    [
        (nn.Linear(3, 7), 7),
        (nn.Conv2d(3, 5, 3), 5),
        (nn.ConvTranspose1d(2, 4, 3), 4),
        (nn.LSTM(3, 6, bidirectional=True), 12),
        (nn.LSTM(3, 6, proj_size=2), 2),
        (nn.GRU(3, 4), 4),
        (nn.RNN(3, 4, num_layers=2), 4),
        (nn.MultiheadAttention(8, 2), 8),
        (nn.Embedding(10, 3), 3),
        (nn.EmbeddingBag(10, 3), 3),
    ],
)
def test_unit_counts(module, units):
    assert layer_kind_for(module).units(module) == units


def test_untracked_types_have_no_kind():
    assert layer_kind_for(nn.ReLU()) is None and layer_kind_for(nn.BatchNorm1d(3)) is None


def test_conv_unit_axis_handles_unbatched_input():
    kind = layer_kind_for(nn.Conv2d(3, 5, 3))
    batched, unbatched = torch.randn(2, 5, 4, 4), torch.randn(5, 4, 4)
    assert to_samples(batched, kind).shape == (32, 5)
    assert to_samples(unbatched, kind).shape == (16, 5)
    torch.testing.assert_close(to_samples(unbatched, kind)[:, 2], unbatched[2].flatten())


def test_packed_sequences_count_only_real_steps():
    lstm = nn.LSTM(3, 5, batch_first=True)
    model = nn.ModuleDict({"lstm": lstm})
    engine = NeuronEngine(model)
    x = torch.randn(4, 6, 3)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6, 4, 2, 1]), batch_first=True)
    with engine.tracking(), torch.no_grad():
        out, _ = lstm(packed)
    layer = engine.snapshot().layers["lstm"]
    assert layer.count == 13
    torch.testing.assert_close(layer.mean, out.data.double().mean(0), rtol=1e-6, atol=1e-7)


def test_register_custom_layer_kind():
    class Gate(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x * self.scale

    register_layer_kind(Gate, LayerKind("gate", units=lambda m: m.scale.numel()))
    model = nn.Sequential(Gate(4), nn.ReLU())
    engine = NeuronEngine(model)
    assert engine.layout == [("0", 4)]
    assert engine.observation_points()["0"]["hook"] == "1"
    with pytest.raises(ConfigurationError, match=r"nn\.Module subclass"):
        register_layer_kind(int, LayerKind("bad", units=len))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("act", [nn.ReLU, nn.Identity])
def test_zero_unit_layer_does_not_break_the_forward(act):
    model = nn.Sequential(nn.Linear(4, 0), act(), nn.Linear(0, 3))
    engine = NeuronEngine(model)
    with engine.tracking():
        out = model(torch.randn(5, 4))
    assert out.shape == (5, 3)
    stats = engine.layer_stats("0")
    assert stats.neuron_ids == [] and stats.mean.numel() == 0
