"""Both gradient hot paths (the fused CPU kernel behind ``kernel="auto"`` and the tensor-op
kernel) against a numpy reference: exact counts at the ``eps`` boundary, zeros, subnormals, sign
codes, block padding and full blocks, half/bfloat16/float64 parameters, sparse and missing
gradients, and random data (hypothesis)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from engine.dynamics import GradientTracker
from engine.dynamics import GradientTracker as RealTracker
from engine.dynamics.gradient_kernel import MAX_BLOCK, StepState, choose_block


@pytest.fixture(params=["fused", "torch"], autouse=True)
def kernel(request, monkeypatch):
    """Every test runs once per kernel: the ``GradientTracker`` it builds uses that kernel (on
    CPU ``"auto"`` is the fused one), which is checked on every tracker at the end."""
    made: list[GradientTracker] = []

    def make(*args, **kwargs) -> GradientTracker:
        made.append(
            RealTracker(*args, kernel="auto" if request.param == "fused" else "torch", **kwargs)
        )
        return made[-1]

    monkeypatch.setattr(sys.modules[__name__], "GradientTracker", make)
    yield request.param
    used = {k for tracker in made for k in tracker.kernels.values()}
    assert not made or used == {request.param}, used


PREVIOUS = (
    "prev_near_zero",
    "retained",
    "released",
    "sign_flips",
    "minimum_crossings",
    "maximum_crossings",
    "weight_diff_norm",
)


def reference(grads: list[np.ndarray], weights: list[np.ndarray], eps: float) -> list[dict]:
    """Every column of one parameter per step, from float64 copies of its values; ``eps`` is
    compared in the precision the tracker counts in (float32, or float64 for float64)."""
    out = []
    for t, (g, w) in enumerate(zip(grads, weights)):
        near = np.abs(g) < eps
        row = {
            "numel": g.size,
            "near_zero": near.sum(),
            "grad_norm": np.linalg.norm(g),
            "codes": np.sign(g) * (2 - (~near)),
        }
        if t:
            pg, pw = grads[t - 1], weights[t - 1]
            pnear = np.abs(pg) < eps
            flip = np.sign(pg) * np.sign(g) < 0
            curvature = g * (w - pw)
            row |= {
                "prev_near_zero": pnear.sum(),
                "retained": (pnear & near).sum(),
                "released": (pnear & ~near).sum(),
                "sign_flips": flip.sum(),
                "minimum_crossings": (flip & (np.sign(g) * np.sign(w - pw) > 0)).sum(),
                "maximum_crossings": (flip & (np.sign(g) * np.sign(w - pw) < 0)).sum(),
                "weight_diff_norm": np.linalg.norm(w - pw),
            }
            assert (flip & (curvature != 0)).sum() <= flip.sum()
        out.append(row)
    return out


class Bank(nn.Module):
    """Parameters whose values and gradients a test sets by hand."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype = torch.float32):
        super().__init__()
        self.ps = nn.ParameterDict(
            {k: nn.Parameter(torch.zeros(s, dtype=dtype)) for k, s in shapes.items()}
        )

    def set(self, name: str, weight: np.ndarray, grad: np.ndarray | None) -> None:
        p = self.ps[name]
        with torch.no_grad():
            p.copy_(torch.as_tensor(weight).reshape(p.shape))
        p.grad = None if grad is None else torch.as_tensor(grad).to(p.dtype).reshape(p.shape)


def run_bank(bank: Bank, steps: list[dict[str, tuple]], **kwargs) -> GradientTracker:
    tracker = GradientTracker(bank, **kwargs)
    for values in steps:
        for name, (w, g) in values.items():
            bank.set(name, w, g)
        tracker.update()
    return tracker


def check(tracker: GradientTracker, name: str, grads, weights, eps, rows=None) -> None:
    hist = tracker.history()
    ref = reference(grads, weights, eps)
    rows = rows if rows is not None else range(len(ref))
    for column in ("numel", "near_zero", "grad_norm", *PREVIOUS):
        got = hist.column(f"ps.{name}", column)[list(rows)]
        want = np.array([r.get(column, np.nan) for r in ref])
        np.testing.assert_allclose(
            got, want, rtol=1e-5, atol=1e-18, err_msg=column
        )  # float32 squares


def as_dtype(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """The values as the parameter stores them, back in float64 (what the tracker sees)."""
    return torch.as_tensor(values).to(dtype).double().numpy()


def test_near_zero_is_exact_at_the_eps_boundary_and_zero_has_no_sign():
    eps = 0.02
    e32 = np.float32(eps)
    below = np.nextafter(e32, np.float32(0))
    g0 = np.array([below, e32, -e32, -below, 0.0, -0.0, 1e-45, -1e-45, 3.0], dtype=np.float32)
    g1 = -g0
    w0, w1 = np.zeros(9), np.linspace(-1, 1, 9)
    bank = Bank({"v": (9,)})
    tracker = run_bank(bank, [{"v": (w0, g0)}, {"v": (w1, g1)}], eps=eps, sign_samples=9)
    hist = tracker.history()
    assert hist.column("ps.v", "near_zero").tolist() == [6, 6]  # below, ±0, subnormals, −below
    check(tracker, "v", [g0.astype(float), g1.astype(float)], [w0, w1], e32)
    assert hist.column("ps.v", "sign_flips")[1] == 7  # every nonzero component
    assert hist.signs["ps.v"][0].tolist() == [2, 1, -1, -2, 0, 0, 2, -2, 1]
    assert hist.signs["ps.v"][1].tolist() == [-2, -1, 1, 2, 0, 0, -2, 2, -1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_counters_match_the_reference_in_every_float_dtype(dtype):
    rng = np.random.default_rng(0)
    eps = 0.05
    shapes = {"a": (37, 11), "b": (11,), "c": (3,)}
    bank = Bank(shapes, dtype)
    steps, seen = [], {k: ([], []) for k in shapes}
    for _ in range(5):
        values = {}
        for k, s in shapes.items():
            g = rng.normal(scale=0.06, size=s) * (rng.random(s) > 0.2)  # exact zeros too
            w = rng.normal(size=s).round(1)  # some Δw = 0
            values[k] = (w, g)
            seen[k][0].append(as_dtype(g, dtype).ravel())
            seen[k][1].append(as_dtype(w, dtype).ravel())
        steps.append(values)
    tracker = run_bank(bank, steps, eps=eps)
    work_eps = eps if dtype == torch.float64 else float(np.float32(eps))
    for k in shapes:
        check(tracker, k, *seen[k], work_eps)
    hist = tracker.history()
    assert hist.column("*", "sign_flips")[1:].sum() > 0
    assert hist.column("*", "minimum_crossings")[1:].sum() > 0
    assert hist.column("*", "maximum_crossings")[1:].sum() > 0


def test_mixed_dtypes_are_separate_groups_with_the_same_semantics():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    model[2].double()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    tracker = GradientTracker(model, eps=1e-2)
    seen: dict[str, tuple[list, list]] = {}
    with tracker.tracking(opt):
        for step in range(4):
            torch.manual_seed(step)
            opt.zero_grad()
            x = torch.randn(8, 4)
            model[2](model[1](model[0](x)).double()).pow(2).mean().backward()
            for n, p in model.named_parameters():
                seen.setdefault(n, ([], []))
                seen[n][0].append(p.grad.double().numpy().ravel().copy())
                seen[n][1].append(p.detach().double().numpy().ravel().copy())
            opt.step()
    assert len(tracker._flats) == 2
    hist = tracker.history()
    for n, (grads, weights) in seen.items():
        eps = 1e-2 if n.startswith("2.") else float(np.float32(1e-2))
        ref = reference(grads, weights, eps)
        for column in ("near_zero", *PREVIOUS):
            want = [r.get(column, np.nan) for r in ref]
            np.testing.assert_allclose(hist.column(n, column), want, rtol=1e-5, err_msg=column)


def test_full_blocks_of_ones_do_not_overflow_the_byte_lanes():
    n = 8 * MAX_BLOCK + 5  # eight full blocks and a padded one
    assert choose_block([n]) == MAX_BLOCK
    bank = Bank({"v": (n,)})
    g = np.ones(n)
    w1 = np.full(n, 0.5)
    tracker = run_bank(bank, [{"v": (np.zeros(n), g)}, {"v": (w1, -g)}], eps=1e-3)
    hist = tracker.history()
    assert hist.column("ps.v", "near_zero").tolist() == [0, 0]
    assert hist.column("ps.v", "sign_flips")[1] == n
    assert hist.column("ps.v", "maximum_crossings")[1] == n  # g < 0 after Δw > 0
    assert hist.column("ps.v", "retained")[1] == 0


def test_block_choice_bounds_the_padding():
    assert choose_block([200704, 256, 32768, 128, 1280, 10]) == 1024
    assert choose_block([15, 5, 10, 2]) == 8
    for sizes in ([1], [7, 9], [1000] * 50, [64] * 100 + [10**6]):
        block = choose_block(sizes)
        padded = sum(-(-s // block) * block for s in sizes)
        assert block == 8 or padded <= sum(sizes) * 9 // 8 + 1
    with pytest.raises(ValueError, match="block"):
        StepState(100, block=64, dtype=torch.float32, device=torch.device("cpu"), eps=1.0)


def test_sparse_gradients_count_their_missing_rows_as_exact_zeros():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 3, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.5)
    tracker = GradientTracker(emb, eps=1e-3, sign_samples=30)
    grads, weights = [], []
    with tracker.tracking(opt):
        for ids in ([1, 2, 2], [2, 5], [1, 5, 7]):
            opt.zero_grad()
            emb(torch.tensor(ids)).sum().backward()
            assert emb.weight.grad.is_sparse
            grads.append(emb.weight.grad.to_dense().numpy().ravel().copy())
            weights.append(emb.weight.detach().numpy().ravel().copy())
            opt.step()
    hist = tracker.history()
    ref = reference(grads, weights, float(np.float32(1e-3)))
    for column in ("near_zero", *PREVIOUS):
        want = [r.get(column, np.nan) for r in ref]
        np.testing.assert_allclose(hist.column("weight", column), want, rtol=1e-6, err_msg=column)
    assert hist.signs["weight"].tolist() == [r["codes"].tolist() for r in ref]


def test_a_parameter_without_gradient_is_skipped_and_restarts_fresh():
    rng = np.random.default_rng(1)
    bank = Bank({"a": (5,), "b": (4,)})
    plan = [("a", "b"), ("a",), ("a", "b"), ("a", "b")]
    steps, seen = [], {"a": ([], []), "b": ([], [])}
    for present in plan:
        values = {}
        for k, size in (("a", 5), ("b", 4)):
            g, w = rng.normal(scale=0.1, size=size), rng.normal(size=size)
            values[k] = (w, g if k in present else None)
            if k in present:
                seen[k][0].append(g)
                seen[k][1].append(w)
        steps.append(values)
    tracker = run_bank(bank, steps, eps=0.05)
    check(tracker, "a", *seen["a"], float(np.float32(0.05)))
    hist = tracker.history()
    assert np.isnan(hist.column("ps.b", "near_zero")[1])  # no gradient: no record
    assert np.isnan(hist.column("ps.b", "sign_flips")[2])  # back: no previous step
    check(tracker, "b", seen["b"][0][1:], seen["b"][1][1:], float(np.float32(0.05)), [2, 3])


finite = st.floats(-1.0, 1.0, allow_nan=False, width=32)
special = st.sampled_from([0.0, -0.0, 0.01, -0.01, 1e-40, -1e-40, 0.5])


component = st.tuples(st.one_of(finite, special), st.sampled_from([0.0, 0.1, -0.1]))


@given(
    data=st.integers(1, 40).flatmap(
        lambda n: st.lists(st.lists(component, min_size=n, max_size=n), min_size=2, max_size=4)
    )
)
def test_random_steps_match_the_reference(data):
    n = len(data[0])
    bank = Bank({"v": (n,)})
    grads = [np.array([g for g, _ in step], dtype=np.float32).astype(float) for step in data]
    weights = list(np.cumsum([[dw for _, dw in step] for step in data], axis=0))
    steps = [{"v": (w, g)} for w, g in zip(weights, grads)]
    tracker = run_bank(bank, steps, eps=0.01, sign_samples=n)
    eps32 = float(np.float32(0.01))  # eps in the precision counted in
    check(tracker, "v", grads, [w.astype(np.float32).astype(float) for w in weights], eps32)
    want = [r["codes"].tolist() for r in reference(grads, weights, eps32)]
    assert tracker.history().signs["ps.v"].tolist() == want
    assert math.isfinite(tracker.history().column("ps.v", "grad_norm")[-1])


def test_a_dtype_change_mid_run_restarts_the_parameters_and_is_logged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    tracker = GradientTracker(model, eps=1e-3)
    x = torch.randn(5, 3)
    for step in range(4):
        if step == 2:
            model.double()  # same Parameter objects, new dtype
            x = x.double()
        model.zero_grad()
        model(x).pow(2).sum().backward()
        tracker.update()
    hist = tracker.history()
    assert len(tracker._flats) == 1  # the float32 group is gone
    assert {r["reason"] for r in tracker.resets} == {"moved to cpu torch.float64"}
    flips = hist.column("0.weight", "sign_flips")
    assert np.isnan(flips[0]) and np.isnan(flips[2]) and not np.isnan(flips[3])
    assert hist.column("0.weight", "numel").tolist() == [12] * 4


def test_gradients_that_require_grad_are_read_without_autograd():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    tracker = GradientTracker(model, eps=1e-3)
    for _ in range(2):
        loss = model(torch.randn(4, 3)).pow(2).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        assert model.weight.grad.requires_grad
        tracker.update()
    assert tracker.history().column("weight", "numel").tolist() == [6, 6]
