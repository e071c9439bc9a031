"""GradientTracker: counters against a hand-computed reference, surgery, schedule, no sync."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_models import seeded
from torch import nn

from engine.dynamics import DynamicsConfigError, GradientHistory, GradientTracker
from engine.dynamics.plots import plot_gradient_dynamics
from engine.errors import EngineError, TrackingStateError

EPS = 0.02


def _model(hidden: int = 5) -> nn.Sequential:
    with seeded(3):
        return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    with seeded(100 + step):
        return torch.randn(6, 3), torch.randn(6, 2)


def _reference(grads: list[np.ndarray], weights: list[np.ndarray]) -> list[dict[str, float]]:
    """Counters of one parameter from its gradients/weights at each recorded step (numpy)."""
    out = []
    for t, (g, w) in enumerate(zip(grads, weights)):
        near = np.abs(g) < EPS
        row = {"numel": g.size, "near_zero": near.sum(), "grad_norm": np.linalg.norm(g)}
        if t:
            pg, pw = grads[t - 1], weights[t - 1]
            pnear = np.abs(pg) < EPS
            flip = np.sign(pg) * np.sign(g) < 0
            curv = g * (w - pw)
            row |= {
                "prev_near_zero": pnear.sum(),
                "retained": (pnear & near).sum(),
                "released": (pnear & ~near).sum(),
                "sign_flips": flip.sum(),
                "minimum_crossings": (flip & (curv > 0)).sum(),
                "maximum_crossings": (flip & (curv < 0)).sum(),
                "weight_diff_norm": np.linalg.norm(w - pw),
            }
        out.append(row)
    return out


def _train(model, opt, tracker, steps, seen, start=0):
    for step in range(start, start + steps):
        x, y = _batch(step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        for name, p in model.named_parameters():
            seen.setdefault(name, []).append((p.grad.numpy().copy(), p.detach().numpy().copy()))
        opt.step()


def _check(hist: GradientHistory, name: str, seen: list, rows: slice = slice(None)) -> None:
    ref = _reference([g for g, _ in seen], [w for _, w in seen])
    for column in ref[-1]:
        got = hist.column(name, column)[rows]
        want = np.array([r.get(column, np.nan) for r in ref])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name}:{column}")


def test_counters_equal_a_hand_computed_reference_over_several_steps():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)  # momentum: both crossings
    tracker = GradientTracker(model, eps=EPS)
    seen: dict[str, list] = {}
    with tracker.tracking(opt):
        _train(model, opt, tracker, 8, seen)
    hist = tracker.history()
    assert hist.steps.tolist() == list(range(8))
    for name in dict(model.named_parameters()):
        _check(hist, name, seen[name])
    flips = hist.column("*", "sign_flips")[1:]
    assert flips.sum() > 0  # the reference is not trivially zero
    released = hist.column("0.weight", "released_fraction")
    retained = hist.column("0.weight", "retained_fraction")
    ok = np.isfinite(released)
    np.testing.assert_allclose(released[ok] + retained[ok], 1.0)


def test_surgery_narrower_linear_mid_run_resets_only_changed_parameters():
    model = _model(hidden=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = GradientTracker(model, eps=EPS)
    seen: dict[str, list] = {}
    with tracker.tracking(opt):
        _train(model, opt, tracker, 3, seen)
        with torch.no_grad():  # simulated surgery: keep units 0, 2, 4 (new Parameter objects)
            keep = torch.tensor([0, 2, 4])
            fc1, fc2 = nn.Linear(3, 3), nn.Linear(3, 2)
            fc1.weight.copy_(model[0].weight[keep])
            fc1.bias.copy_(model[0].bias[keep])
            fc2.weight.copy_(model[2].weight[:, keep])
            fc2.bias.copy_(model[2].bias)
        model[0], model[2] = fc1, fc2
        opt.param_groups[0]["params"] = list(model.parameters())
        opt.state.clear()
        after: dict[str, list] = {}
        _train(model, opt, tracker, 3, after, start=3)
    hist = tracker.history()
    assert {r["parameter"] for r in tracker.resets} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert {tuple(r["new_shape"]) for r in tracker.resets if r["parameter"] == "0.weight"} == {
        (3, 3)
    }
    assert hist.column("0.weight", "numel").tolist() == [15] * 3 + [9] * 3
    for name in after:
        _check(hist, name, after[name], rows=slice(3, None))  # first record after: NaN, fresh
    assert np.isnan(hist.column("0.weight", "sign_flips")[3])


def test_every_n_schedule_records_one_call_in_n_against_the_previous_record():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker = GradientTracker(model, eps=EPS, every=3)
    seen: dict[str, list] = {}
    with tracker.tracking(opt):
        _train(model, opt, tracker, 7, seen)
    hist = tracker.history()
    assert hist.steps.tolist() == [0, 3, 6]
    _check(hist, "0.weight", seen["0.weight"][::3])


def test_ring_keeps_the_most_recent_records():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    tracker = GradientTracker(model, eps=EPS, capacity=4)
    seen: dict[str, list] = {}
    with tracker.tracking(opt):
        _train(model, opt, tracker, 7, seen)
    hist = tracker.history()
    assert hist.steps.tolist() == [3, 4, 5, 6]
    ref = _reference([g for g, _ in seen["2.weight"]], [w for _, w in seen["2.weight"]])
    np.testing.assert_allclose(
        hist.column("2.weight", "released"), [r["released"] for r in ref[3:]]
    )


@pytest.mark.parametrize("kernel", ["torch", "auto"])
def test_recording_makes_no_host_sync(monkeypatch, kernel):
    """The tensor-op kernel (the one accelerators use) never reads a tensor on the host; the
    fused CPU kernel only takes zero-copy numpy views of CPU tensors."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = GradientTracker(model, eps=EPS, kernel=kernel)
    refused = ["item", "cpu", "tolist", "__bool__", "__float__", "__int__"]
    refused += ["numpy"] if kernel == "torch" else []

    def refuse(self, *args, **kwargs):
        raise AssertionError("host sync in the gradient hot path")

    with monkeypatch.context() as patch:
        for name in refused:
            patch.setattr(torch.Tensor, name, refuse)
        with tracker.tracking(opt):
            for step in range(3):
                x, y = _batch(step)
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
    assert len(tracker.history().steps) == 3


def test_optimizer_hook_removed_also_when_the_block_raises():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = GradientTracker(model)
    hooks_inside = []

    def train_and_fail() -> None:
        with tracker.tracking(opt):
            hooks_inside.append(len(opt._optimizer_step_pre_hooks))
            raise RuntimeError("planted")

    with pytest.raises(RuntimeError, match="planted"):
        train_and_fail()
    assert hooks_inside == [1]
    assert len(opt._optimizer_step_pre_hooks) == 0
    assert not tracker.is_attached
    tracker.attach(opt)
    with pytest.raises(TrackingStateError):
        tracker.attach(opt)
    tracker.detach()
    assert len(opt._optimizer_step_pre_hooks) == 0


def test_history_json_round_trip_and_plots(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = GradientTracker(model, eps=EPS, sign_samples=4)
    with tracker.tracking(opt):
        _train(model, opt, tracker, 4, {})
    hist = tracker.history()
    back = GradientHistory.load(hist.save(tmp_path / "g.json"))
    for name in hist.parameters:
        np.testing.assert_array_equal(back.records[name], hist.records[name])
        np.testing.assert_array_equal(back.signs[name], hist.signs[name])
    assert hist.signs["2.bias"].shape == (4, 4)
    assert (hist.signs["2.bias"][:, 2:] == 3).all()  # 2 components, 2 absent slots
    paths = plot_gradient_dynamics(hist, tmp_path)
    assert len(paths) == 6 and all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"eps": 0}, "eps"),
        ({"every": 0}, "every"),
        ({"include": ["nope*"]}, "nope"),
        ({"include": "0.weight"}, "lists of patterns"),
        ({"sign_samples": -1}, "sign_samples"),
        ({"kernel": "numba"}, "kernel must be one of"),
    ],
)
def test_bad_configuration_is_a_typed_error_naming_the_value(kwargs, needle):
    with pytest.raises(DynamicsConfigError, match=needle) as err:
        GradientTracker(_model(), **kwargs)
    assert isinstance(err.value, EngineError)
