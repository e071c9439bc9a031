"""The fused CPU kernel against the tensor-op kernel: the same records on random multi-parameter
runs (hypothesis) and real training with surgery; which kernel ``"auto"`` picks, the fallback
without numba, and parameters the kernel reads through copies (non-contiguous, half)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import engine.dynamics.gradients as gradients_module
from engine import NeuronEngine
from engine.dynamics import GradientTracker
from engine.dynamics.gradient_fused import count_and_carry, fused_kernel, fused_kernel_available
from engine.dynamics.gradient_stats import COLUMNS
from engine.plan import ExpandAction, Plan, PruneAction

COUNTS = [c for c in COLUMNS if not c.endswith("_norm")]

pytestmark = pytest.mark.skipif(not fused_kernel_available(), reason="numba is not installed")


def assert_same_history(fused: GradientTracker, tensor_ops: GradientTracker) -> None:
    """Counts equal exactly, norms to float64 rounding (both sum exact float64 squares, in
    different orders), sign samples equal, resets equal."""
    a, b = fused.history(), tensor_ops.history()
    assert fused.kernels and set(fused.kernels.values()) == {"fused"}
    assert set(tensor_ops.kernels.values()) == {"torch"}
    assert a.parameters == b.parameters and a.steps.tolist() == b.steps.tolist()
    for name in a.parameters:
        for column in COUNTS:
            np.testing.assert_array_equal(a.column(name, column), b.column(name, column))
        for column in ("weight_diff_norm", "grad_norm"):
            np.testing.assert_allclose(
                a.column(name, column), b.column(name, column), rtol=1e-12, err_msg=column
            )
        np.testing.assert_array_equal(a.signs[name], b.signs[name])
    assert fused.resets == tensor_ops.resets


def both(model: nn.Module, **kwargs) -> tuple[GradientTracker, GradientTracker]:
    return GradientTracker(model, kernel="auto", **kwargs), GradientTracker(
        model, kernel="torch", **kwargs
    )


values = st.one_of(
    st.floats(-2.0, 2.0, allow_nan=False, width=32),
    st.sampled_from([0.0, -0.0, 1e-3, -1e-3, 1e-40, -3e-25, 0.25]),
)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 80), min_size=1, max_size=3),
    steps=st.integers(2, 5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    data=st.data(),
)
def test_random_runs_give_the_records_of_the_tensor_op_kernel(sizes, steps, dtype, data):
    model = nn.ParameterList([nn.Parameter(torch.zeros(n, dtype=dtype)) for n in sizes])
    fused, tensor_ops = both(model, eps=1e-3, sign_samples=16)
    for _ in range(steps):
        for p, n in zip(model, sizes):
            g = data.draw(st.lists(values, min_size=n, max_size=n))
            dw = data.draw(st.lists(st.sampled_from([0.0, 0.5, -0.5]), min_size=n, max_size=n))
            with torch.no_grad():
                p.add_(torch.tensor(dw, dtype=dtype))
            p.grad = torch.tensor(g, dtype=dtype)
        fused.update()
        tensor_ops.update()
    assert_same_history(fused, tensor_ops)


def test_training_with_surgery_gives_the_records_of_the_tensor_op_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.ReLU(),
        nn.Linear(12, 3),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = NeuronEngine(model)
    fused, tensor_ops = both(model, eps=1e-4)
    x, y = torch.randn(32, 2, 6, 6), torch.randint(0, 3, (32,))

    def train(steps: int) -> None:
        with engine.tracking():
            for _ in range(steps):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                fused.update()
                tensor_ops.update()
                opt.step()

    train(3)
    plan = Plan.create(
        [
            PruneAction(layer="3", local_indices=[1, 4], neuron_ids=[5, 8], reason="test"),
            ExpandAction(layer="0", count=2, init="random", reason="test"),
        ],
        engine.layout,
    )
    engine.apply(plan, opt)
    train(3)
    assert {r["parameter"] for r in fused.resets} >= {"0.weight", "3.weight", "5.weight"}
    assert_same_history(fused, tensor_ops)


def test_non_contiguous_parameters_are_read_correctly():
    transposed = nn.Parameter(torch.randn(5, 7).t())  # a (7, 5) view with strides (1, 7)
    assert not transposed.is_contiguous()
    model = nn.ParameterList([transposed])
    fused, tensor_ops = both(model, eps=0.3)
    for step in range(3):
        transposed.grad = torch.randn(5, 7, generator=torch.Generator().manual_seed(step)).t()
        with torch.no_grad():
            transposed.mul_(0.9)
        fused.update()
        tensor_ops.update()
    assert_same_history(fused, tensor_ops)


def test_auto_uses_the_tensor_op_kernel_without_numba(monkeypatch):
    monkeypatch.setattr(gradients_module, "fused_kernel_available", lambda: False)
    model = nn.Linear(3, 2)
    tracker = GradientTracker(model, eps=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    tracker.update()
    assert tracker.kernels == {"cpu torch.float32": "torch"}


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 64),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_the_compiled_kernel_equals_its_python_source(n, dtype, data):
    """The fast-math flags reorder float sums only: counts and carried state match the plain
    Python run exactly, squared norms to rounding."""
    eps = dtype(1e-3)
    arrays = st.lists(values, min_size=n, max_size=n)
    states = []
    for _ in range(2):
        states.append([np.zeros(n, dtype), np.zeros(n, np.int8), np.zeros(n, np.int8)])
    outs = [np.zeros(8), np.zeros(8)]
    for _ in range(3):
        g = np.array(data.draw(arrays), dtype=dtype)
        w = np.array(data.draw(arrays), dtype=dtype)
        for kernel, state, out in zip((fused_kernel(), count_and_carry), states, outs):
            kernel(g, w, *state, eps, out)
        np.testing.assert_array_equal(outs[0][:6], outs[1][:6])
        np.testing.assert_allclose(outs[0][6:], outs[1][6:], rtol=1e-12)
        for compiled, python in zip(*states):
            np.testing.assert_array_equal(compiled, python)


def test_nan_and_infinite_gradients_count_the_same_in_both_kernels():
    """NaN counts as 0 (near zero, no sign, never a flip); ±inf is far from zero with its sign;
    a parameter with a NaN has a NaN norm."""
    p = nn.Parameter(torch.zeros(6))
    fused, tensor_ops = both(nn.ParameterList([p]), eps=0.1, sign_samples=6)
    nan, inf = float("nan"), float("inf")
    for g, dw in (
        ([nan, inf, -inf, 0.5, -0.5, nan], [0.0] * 6),
        ([0.5, -inf, inf, nan, nan, -0.5], [nan, 0.1, 0.1, 0.1, -0.1, 0.1]),
    ):
        with torch.no_grad():
            p.add_(torch.tensor(dw))
        p.grad = torch.tensor(g)
        fused.update()
        tensor_ops.update()
    hist = fused.history()
    assert hist.column("0", "near_zero").tolist() == [2, 2]
    assert hist.column("0", "sign_flips")[1] == 2  # ±inf swapped signs; NaN never flips
    assert hist.column("0", "maximum_crossings")[1] == 1  # -inf after Δw > 0
    assert np.isnan(hist.column("0", "grad_norm")).all()
    assert hist.signs["0"].tolist() == [[0, 1, -1, 1, -1, 0], [1, -1, 1, 0, 0, -1]]
    a, b = hist, tensor_ops.history()
    for column in COUNTS:
        np.testing.assert_array_equal(a.column("0", column), b.column("0", column), column)
    np.testing.assert_array_equal(a.signs["0"], b.signs["0"])
