"""Saturation's ``min_rank_fraction``: a busy layer grows only when its units carry many
independent directions (participation ratio of the activation covariance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.errors import ConfigurationError


def _busy_model(independent: bool) -> nn.Sequential:
    """Layer '0': 16 ReLU units that always fire; independent copies of 16 inputs, or 16
    multiples of one input (rank 1)."""
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        if independent:
            model[0].weight.copy_(torch.eye(16))
        else:
            model[0].weight.zero_()
            model[0].weight[:, 0] = torch.linspace(0.5, 2.0, 16)
        model[0].bias.fill_(10.0)  # always firing
    return model


def _propose(model: nn.Module, x: torch.Tensor, fraction: float, correlation=True):
    engine = NeuronEngine(model, correlation=correlation)
    with engine.tracking(), torch.no_grad():
        model(x)
    config = {
        "guards": {"min_width": 1},
        "policies": [
            {
                "name": "saturation",
                "settings": {"growth_fraction": 0.5, "min_rank_fraction": fraction},
            }
        ],
    }
    return engine.propose(config)


def _participation_ratio(a: np.ndarray) -> float:
    """Reference: eigenvalues of the float64 two-pass covariance."""
    centred = a - a.mean(0)
    lam = np.linalg.eigvalsh(centred.T @ centred / len(a))
    return lam.sum() ** 2 / (lam**2).sum()


def test_only_a_layer_using_its_width_grows():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    grown = _propose(_busy_model(independent=True), x, 0.5)
    assert [(a.layer, a.count) for a in grown.expand] == [("0", 8)]
    want = _participation_ratio(torch.relu(x + 10.0).double().numpy())
    assert grown.expand[0].evidence["participation_ratio"] == pytest.approx(
        want, abs=1e-6
    )  # 6 decimals
    assert want > 0.5 * 16
    assert _propose(_busy_model(independent=False), x, 0.5).expand == []
    assert _propose(_busy_model(independent=False), x, 0.05).expand  # PR 1 ≥ 0.05 · 16


def test_the_rank_condition_needs_correlation_state():
    model = _busy_model(independent=True)
    with pytest.raises(ConfigurationError, match=r"layer '0'.*correlation=True"):
        _propose(model, torch.randn(256, 16), 0.5, correlation=False)
