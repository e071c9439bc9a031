"""The all-pairs layer cross-correlation grid against numpy's corrcoef."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dynamics.correlation_grid import cross_correlation_grid, plot_cross_correlation_grid
from engine.dynamics.errors import DynamicsError


def test_every_cell_equals_numpys_correlation_and_the_figure_is_written(tmp_path):
    g = torch.Generator().manual_seed(0)
    reps = {"a": torch.randn(50, 4, generator=g), "b": torch.randn(50, 2, 3, generator=g)}
    grid = cross_correlation_grid(reps)
    assert set(grid) == {("a", "a"), ("b", "a"), ("b", "b")}
    a, b = reps["a"].double().numpy(), reps["b"].reshape(50, -1).double().numpy()
    full = np.corrcoef(np.concatenate([a, b], axis=1).T)
    np.testing.assert_allclose(grid[("a", "a")], full[:4, :4], atol=1e-12)
    np.testing.assert_allclose(grid[("b", "a")], full[4:, :4], atol=1e-12)
    np.testing.assert_allclose(grid[("b", "b")], full[4:, 4:], atol=1e-12)
    path = plot_cross_correlation_grid(reps, tmp_path / "grid.png", title="epoch 0")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wide_layers_are_cut_constant_units_are_blank_and_bad_input_is_named():
    x = torch.randn(30, 100)
    x[:, 1] = 3.0
    grid = cross_correlation_grid({"wide": x}, max_units=8)
    assert grid[("wide", "wide")].shape == (8, 8)
    assert np.isnan(grid[("wide", "wide")][1]).all()
    with pytest.raises(DynamicsError, match="'b' has 10 samples"):
        cross_correlation_grid({"a": torch.randn(30, 2), "b": torch.randn(10, 2)})
    with pytest.raises(DynamicsError, match="≥ 2 samples"):
        cross_correlation_grid({"a": torch.randn(1, 2)})
