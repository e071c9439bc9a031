"""CKA (full and unbiased minibatch), HSIC, cross-correlation, similarity history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.dynamics import (
    LayerSimilarityHistory,
    MinibatchCKA,
    RepresentationShapeError,
    SimilarityHistoryError,
    augmentation_spread,
    cka_matrix,
    cross_correlation,
    linear_cka,
    unbiased_hsic,
)
from engine.errors import EngineError


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019 via centred Gram matrices: HSIC(K, L) = tr(KHLH)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T  # noqa: E741
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def _numpy_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. 2012, eq. (5), written literally."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def test_cka_equals_a_direct_numpy_computation():
    x, y = _rand(30, 7, seed=1), _rand(30, 4, seed=2)
    y = y + 0.5 * x[:, :4]
    assert linear_cka(x, y) == pytest.approx(_numpy_cka(x.numpy(), y.numpy()), rel=1e-10)


def test_identical_layers_give_one_and_invariances_hold():
    x = _rand(40, 6, seed=3)
    y = torch.tanh(x @ _rand(6, 9, seed=4))
    q, _ = torch.linalg.qr(_rand(9, 9, seed=5))
    assert linear_cka(x, x) == pytest.approx(1.0)
    base = linear_cka(x, y)
    assert 0.05 < base < 0.999
    assert linear_cka(x, y @ q) == pytest.approx(base, rel=1e-9)  # orthogonal transform
    assert linear_cka(x, 7.5 * y) == pytest.approx(base, rel=1e-9)  # isotropic scaling
    assert linear_cka(x, y + 3.0) == pytest.approx(base, rel=1e-9)  # centring
    assert linear_cka(x, y * torch.linspace(0.1, 5, 9, dtype=torch.float64)) != pytest.approx(
        base, rel=1e-3
    )  # not invariant to anisotropic scaling


def test_unbiased_hsic_equals_the_paper_formula():
    x, y = _rand(12, 3, seed=6), _rand(12, 5, seed=7)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    got = float(unbiased_hsic(k, l))
    assert got == pytest.approx(_numpy_unbiased_hsic(k.numpy(), l.numpy()), rel=1e-10)


def test_independent_data_gives_about_zero_with_the_unbiased_estimator():
    acc = MinibatchCKA(["a", "b"])
    full_a, full_b = [], []
    for i in range(10):
        a, b = _rand(32, 20, seed=10 + i), _rand(32, 30, seed=100 + i)
        acc.update({"a": a, "b": b})
        full_a.append(a)
        full_b.append(b)
    cka = acc.compute()
    assert abs(float(cka[0, 1])) < 0.05
    assert float(cka[0, 0]) == pytest.approx(1.0) and float(cka[1, 1]) == pytest.approx(1.0)
    biased = linear_cka(full_a[0], full_b[0])  # one biased batch: clearly above zero
    assert biased > 0.3


def test_minibatch_cka_approaches_full_cka_for_related_layers():
    x = _rand(256, 8, seed=20)
    y = torch.relu(x @ _rand(8, 12, seed=21))
    acc = MinibatchCKA(["x", "y"])
    for i in range(0, 256, 64):
        acc.update({"x": x[i : i + 64], "y": y[i : i + 64]})
    assert float(acc.compute()[0, 1]) == pytest.approx(linear_cka(x, y), abs=0.05)


def test_cross_correlation_matches_numpy_and_cka_matrix_handles_widths():
    x, y = _rand(25, 3, seed=30), _rand(25, 5, seed=31)
    ref = np.corrcoef(x.numpy().T, y.numpy().T)[:3, 3:]
    np.testing.assert_allclose(cross_correlation(x, y).numpy(), ref, atol=1e-12)
    m = cka_matrix({"x": x, "y": y, "x2": x[:, :2]})
    assert m.shape == (3, 3) and torch.allclose(m, m.T) and torch.all(torch.diagonal(m) == 1)


def test_shape_errors_are_typed_and_name_the_problem():
    with pytest.raises(RepresentationShapeError, match="10 samples and y has 9") as err:
        linear_cka(_rand(10, 3), _rand(9, 3))
    assert isinstance(err.value, EngineError)
    with pytest.raises(RepresentationShapeError, match="at least 4"):
        unbiased_hsic(torch.eye(3), torch.eye(3))
    with pytest.raises(RepresentationShapeError, match="lacks layers"):
        MinibatchCKA(["a", "b"]).update({"a": _rand(8, 2)})


def test_similarity_history_json_round_trip(tmp_path):
    hist = LayerSimilarityHistory()
    x = _rand(20, 4, seed=40)
    hist.record(0, {"a": x, "b": x + 0.1 * _rand(20, 4, seed=41)})
    hist.record(1, {"a": x, "b": x[:, :2]}, minibatches=[{"a": x[:10], "b": x[:10, :2]}])
    back = LayerSimilarityHistory.load(hist.save(tmp_path / "s.json"))
    assert back.entries == hist.entries
    epochs, values = back.series("cka", "a", "b")
    assert epochs == [0, 1] and values[0] > 0.9
    assert back.entries[1]["widths"] == [4, 2]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "x", "entries": [{"epoch": 0}]}')
    with pytest.raises(SimilarityHistoryError, match=r"bad\.json"):
        LayerSimilarityHistory.load(bad)


def test_augmentation_spread_orders_layers_by_invariance():
    gen = torch.Generator().manual_seed(0)
    w = _rand(4, 4, seed=50).float()

    def capture(batch):
        return {"raw": batch, "pooled": batch.mean(1, keepdim=True), "linear": batch @ w}

    out = augmentation_spread(
        capture, torch.ones(4), lambda s: s + 0.1 * torch.randn(4, generator=gen)
    )
    assert out["pooled"]["mean_variance"] < out["raw"]["mean_variance"]
    assert len(out["linear"]["feature_variance"]) == 4
    assert out["raw"]["representations"].shape == (32, 4)
