"""Change metrics against an independent float64 reference (numpy, written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from engine.weights import capture_weights, compare_snapshots
from engine.weights.metrics import ChangeSums, RowSums, change_sums


def reference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    d = b - a
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    return {
        "l1": float(np.abs(d).sum()),
        "l2": float(np.sqrt((d * d).sum())),
        "relative": float(np.sqrt((d * d).sum()) / na),
        "cosine_distance": float(1 - (a * b).sum() / (na * nb)),
    }


@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 9),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_change_sums_match_float64_reference(rows, cols, scale, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, cols, generator=g) * scale
    b = a + torch.randn(rows, cols, generator=g) * scale * 0.1
    got, want = change_sums(a, b), reference(a.numpy(), b.numpy())
    for key, value in want.items():
        assert getattr(got, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    per_row = RowSums.of(a, b)
    for r in range(rows):
        ref = reference(a[r].numpy(), b[r].numpy())
        assert float(per_row.l2[r]) == pytest.approx(ref["l2"], rel=1e-9, abs=1e-12)
        assert float(per_row.l1[r]) == pytest.approx(ref["l1"], rel=1e-9, abs=1e-12)
        assert float(per_row.relative[r]) == pytest.approx(ref["relative"], rel=1e-9)
        cos = float(per_row.cosine_distance[r])
        assert cos == pytest.approx(ref["cosine_distance"], rel=1e-7, abs=1e-9)


def test_model_totals_equal_reference_on_concatenated_parameters():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Conv1d(1, 3, 2), nn.Linear(4, 2))
    a_params = [p.detach().clone() for p in model.parameters()]
    first = capture_weights(model, step=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cmp = compare_snapshots(first, capture_weights(model, step=1))
    a = np.concatenate([t.numpy().ravel() for t in a_params])
    b = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    want = reference(a, b)
    for key, value in want.items():
        assert getattr(cmp.total, key) == pytest.approx(value, rel=1e-9), key
    for (name, p), before in zip(model.named_parameters(), a_params):
        ref = reference(before.numpy(), p.detach().numpy())
        assert cmp.tensors[name].l2 == pytest.approx(ref["l2"], rel=1e-9)
    per_module = cmp.by_module()
    assert set(per_module) == {"0", "2", "3"}
    assert sum(s.l1 for s in per_module.values()) == pytest.approx(want["l1"], rel=1e-12)


def test_degenerate_cases_are_defined():
    zero = torch.zeros(3)
    assert change_sums(zero, zero).relative == 0.0
    assert change_sums(zero, zero).cosine_distance == 0.0
    assert change_sums(zero, torch.ones(3)).relative == math.inf
    assert change_sums(zero, torch.ones(3)).cosine_distance == 1.0
    assert ChangeSums().to_json()["relative"] == 0.0
    assert change_sums(zero, torch.ones(3)).to_json()["relative"] is None
    rows = RowSums.of(torch.zeros(2, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert rows.relative.tolist() == [0.0, math.inf]
    assert rows.cosine_distance.tolist() == [0.0, 1.0]
