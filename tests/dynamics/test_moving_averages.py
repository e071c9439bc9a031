"""MovingAverages against a hand-written reference: EMAs of gradients and weights, weight
steps where the previous gradient was zero, resets after surgery, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.dynamics.moving_averages import (
    COLUMNS,
    MovingAverageError,
    MovingAverageHistory,
    MovingAverages,
)


def _train(model, opt, averages, steps=5, seed=0):
    """Train ``steps`` steps; returns the gradients and weights seen before each step."""
    gen = torch.Generator().manual_seed(seed)
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(8, 4, generator=gen)
        x[:, 0] = 0.0  # column 0 of the weight never gets a gradient
        model(x).pow(2).mean().backward()
        seen.append({n: (p.grad.clone(), p.detach().clone()) for n, p in model.named_parameters()})
        averages.update()
        opt.step()
    return seen


def test_averages_and_zero_gradient_steps_match_the_reference() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    averages = MovingAverages(model, beta=0.8, eps=1e-6)
    seen = _train(model, opt, averages)
    hist = averages.history()
    g_ema = w_ema = None
    for t, s in enumerate(seen):
        g, w = s["weight"]
        g_ema = g.clone() if g_ema is None else 0.8 * g_ema + 0.2 * g
        w_ema = w.clone() if w_ema is None else 0.8 * w_ema + 0.2 * w
        row = hist.records["weight"][t]
        assert row[COLUMNS.index("grad_ema_norm")] == pytest.approx(float(g_ema.norm()), rel=1e-5)
        assert row[COLUMNS.index("weight_ema_distance")] == pytest.approx(
            float((w - w_ema).norm()), rel=1e-5, abs=1e-7
        )
        if t == 0:
            assert np.isnan(row[COLUMNS.index("zero_grad_step")])
            continue
        g_prev, w_prev = seen[t - 1]["weight"]
        zero = g_prev.abs() < 1e-6
        moved = (w - w_prev).abs()
        assert row[COLUMNS.index("zero_grad")] == int(zero.sum()) == 3  # column 0
        assert row[COLUMNS.index("zero_grad_step")] == pytest.approx(float(moved[zero].mean()))
        assert row[COLUMNS.index("zero_grad_step")] > 0  # decay moves them without a gradient
        assert row[COLUMNS.index("other_step")] == pytest.approx(float(moved[~zero].mean()))
    assert torch.allclose(averages.ema_weights()["weight"], w_ema)


def test_a_parameter_replaced_by_surgery_starts_afresh(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    averages = MovingAverages(model)
    _train(model, opt, averages, steps=2)
    model[0] = nn.Linear(4, 5)  # new shapes, new objects
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _train(model, opt, averages, steps=2)
    hist = averages.history()
    steps = hist.column("0.weight", "zero_grad_step")
    assert np.isnan(steps[0]) and np.isfinite(steps[1]) and np.isnan(steps[2])
    assert averages.ema_weights()["0.weight"].shape == (5, 4)
    again = MovingAverageHistory.load(hist.save(tmp_path / "ema.json"))
    assert np.array_equal(again.steps, hist.steps)
    assert np.array_equal(again.records["0.weight"], hist.records["0.weight"], equal_nan=True)


def test_bad_arguments_and_files_are_named(tmp_path) -> None:
    from engine.dynamics import DynamicsConfigError

    with pytest.raises(DynamicsConfigError, match="beta"):
        MovingAverages(nn.Linear(2, 2), beta=1.0)
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(MovingAverageError, match=r"bad\.json"):
        MovingAverageHistory.load(tmp_path / "bad.json")
    hist = MovingAverageHistory(np.zeros(0, dtype=np.int64), {})
    with pytest.raises(KeyError, match="'w' is not in the model"):
        hist.column("w", "zero_grad")
