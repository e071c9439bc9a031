"""The GradMax growth signal ``Σ δ_Cᵀ·x_L``: gathered by hooks during backward, equal to an
autograd reference over arbitrary batch splits, saved, loaded and merged exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from engine import NeuronEngine, StatsSnapshot
from engine.errors import ConfigurationError


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 7), nn.Linear(7, 6), nn.Linear(6, 3)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.fc3(F.relu(self.norm(self.fc2(torch.tanh(self.fc1(x))))))


def reference(model, layer, consumer, batches):
    """Σ over batches of δ_Cᵀ·x_L, by autograd on each batch (float64)."""
    total = 0
    seen: dict[str, torch.Tensor] = {}
    for x, y in batches:
        handles = [
            model.get_submodule(layer).register_forward_hook(
                lambda m, a, o: seen.__setitem__("x", a[0])
            ),
            model.get_submodule(consumer).register_forward_hook(
                lambda m, a, o: seen.__setitem__("out", o)
            ),
        ]
        try:
            out = model(x)
            (delta,) = torch.autograd.grad(F.cross_entropy(out, y), seen["out"])
        finally:
            for h in handles:
                h.remove()
        total = total + delta.double().T @ seen["x"].double()
    return total


def test_consumers_are_found_where_gradmax_applies():
    engine = NeuronEngine(Functional(), growth_signal=True)
    assert {n: t.observation.consumer for n, t in engine.layers.items()} == {
        "fc1": "fc2",  # through a functional tanh
        "fc2": None,  # a BatchNorm between: zero incoming weights would be normalised
        "fc3": None,  # the logits
    }
    assert engine.layers["fc1"].growth is not None and engine.layers["fc2"].growth is None
    with pytest.raises(ConfigurationError, match=r"layer 'fc2' has no single nn.Linear consumer"):
        NeuronEngine(Functional(), growth_signal=["fc2"])


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_gathered_signal_equals_autograd_reference(sizes, seed):
    torch.manual_seed(seed)
    model = Functional().eval()  # eval: the norm's running statistics stay put
    engine = NeuronEngine(model, growth_signal=["fc1"])
    g = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))
               for n in sizes]  # fmt: skip
    with engine.tracking():
        for x, y in batches:
            F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            model(batches[0][0])  # no gradient, no signal
    cross = engine.layer_stats("fc1").growth
    assert cross.consumer == "fc2" and cross.batches == len(sizes)
    expected = reference(model, "fc1", "fc2", batches)
    torch.testing.assert_close(cross.total, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cross.mean(), expected / len(sizes), rtol=1e-5, atol=1e-6)


def test_saved_loaded_merged_and_reset(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    engine = NeuronEngine(model, growth_signal=True)
    with engine.tracking():
        for _ in range(3):
            F.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 2, (16,))).backward()
    snap = engine.snapshot()
    loaded = StatsSnapshot.load(snap.save(tmp_path / "stats"))
    a, b = snap.layers["0"].growth, loaded.layers["0"].growth
    assert (b.consumer, b.batches) == ("2", 3)
    assert torch.equal(a.total, b.total)
    merged = snap.merge(loaded).layers["0"].growth
    assert merged.batches == 6 and torch.equal(merged.mean(), a.mean())
    assert loaded.layers["2"].growth is None
    engine.reset()
    assert engine.layer_stats("0").growth is None


def test_hooks_are_removed_and_a_forward_error_leaves_none():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    engine = NeuronEngine(model, growth_signal=True)

    def hooks():
        return sum(len(m._forward_hooks) for m in model.modules())

    with pytest.raises(RuntimeError), engine.tracking():
        model(torch.randn(3, 5))  # wrong width: the forward raises inside tracking
    assert hooks() == 0
