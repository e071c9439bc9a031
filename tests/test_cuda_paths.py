"""The accelerator paths against the CPU ones, on ``ENGINE_TEST_DEVICE`` (default ``cuda``;
skipped when that device is absent): gradient tracking with the tensor-op kernel on the device
(``eps`` compared by division with a device tensor) gives the records of the fused CPU kernel
on the same values, without a device sync; a plan proposed and applied on the device gives the
model, outputs and optimizer state of the same plan on CPU; CKA on device tensors equals CKA on
their CPU copies. ``ENGINE_TEST_DEVICE=cpu`` runs the same comparisons on CPU (the tensor-op
kernel against the fused one)."""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine import NeuronEngine, SurgerySchedule
from engine.dynamics import GradientTracker, linear_cka
from engine.dynamics.gradient_stats import COLUMNS
from engine.plan import ExpandAction, Plan
from engine.surgery import apply_plan
from engine.weights import WeightTracker

DEVICE = torch.device(os.environ.get("ENGINE_TEST_DEVICE", "cuda"))
AVAILABLE = {
    "cpu": True,
    "cuda": torch.cuda.is_available(),
    "mps": torch.backends.mps.is_available(),
}
pytestmark = pytest.mark.skipif(
    not AVAILABLE.get(DEVICE.type, False), reason=f"needs the {DEVICE.type} device"
)


@pytest.fixture(autouse=True)
def full_float32():
    """No TF32 (cuDNN convolutions use it by default on Ampere and later): device results are
    compared with CPU ones to float32 precision."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@contextmanager
def no_sync():
    """On CUDA, any device → host sync inside the block raises."""
    if DEVICE.type != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _step_values(rng: np.random.Generator, n: int, eps32: np.float32) -> tuple:
    """A gradient with values at and around ``eps`` (and zeros, subnormals) and a weight step."""
    below = np.nextafter(eps32, np.float32(0))
    edge = np.array([below, eps32, -eps32, -below, 0.0, -0.0, 1e-45, -1e-45], np.float32)
    g = rng.normal(scale=4 * float(eps32), size=n).astype(np.float32)
    g[: len(edge)] = edge * rng.choice([1, -1])
    dw = rng.choice([0.0, 0.25, -0.25], size=n).astype(np.float32)
    return g, dw


def test_gradient_tracking_on_cuda_matches_the_cpu_records_without_a_sync():
    eps = 0.02
    eps32 = np.float32(eps)
    sizes = (1000, 37, 8)
    models = {
        d: nn.ParameterList([nn.Parameter(torch.zeros(n, device=d)) for n in sizes])
        for d in ("cpu", DEVICE)
    }
    trackers = {
        "cpu": GradientTracker(models["cpu"], eps=eps, sign_samples=64),
        "device": GradientTracker(models[DEVICE], eps=eps, sign_samples=64, kernel="torch"),
    }
    rng = np.random.default_rng(0)
    for step in range(6):
        for i, n in enumerate(sizes):
            g, dw = _step_values(rng, n, eps32)
            for d, model in models.items():
                with torch.no_grad():
                    model[i].add_(torch.from_numpy(dw).to(d))
                model[i].grad = torch.from_numpy(g).to(d)
        trackers["cpu"].update()
        if step < 2:  # warm-up: lazy CUDA initialisation may sync
            trackers["device"].update()
            continue
        with no_sync():
            trackers["device"].update()
    assert set(trackers["cpu"].kernels.values()) == {"fused"}
    assert set(trackers["device"].kernels.values()) == {"torch"}
    cpu, gpu = trackers["cpu"].history(), trackers["device"].history()
    for name in cpu.parameters:
        for column in COLUMNS:
            np.testing.assert_allclose(
                gpu.column(name, column), cpu.column(name, column), rtol=2e-6, err_msg=column
            )
        np.testing.assert_array_equal(gpu.signs[name], cpu.signs[name])
    assert cpu.column("0", "near_zero")[0] >= 6  # the edge values are there


def _cnn(device: torch.device) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Flatten(),
        nn.Linear(12 * 6 * 6, 24), nn.ReLU(), nn.Linear(24, 4),
    )  # fmt: skip
    with torch.no_grad():  # dead units in both layers, and one duplicate pair to merge
        model[0].bias[:2] = -100.0
        model[1].bias[:2] = -100.0
        model[4].bias[:3] = -100.0
        model[4].weight[5] = model[4].weight[4]
        model[4].bias[5] = model[4].bias[4]
    return model.to(device)


def _dead_and_redundant(engine: NeuronEngine) -> Plan:
    return engine.propose({"policies": [{"name": "dead"}, {"name": "redundancy"}]})


def _budget(engine: NeuronEngine) -> Plan:
    return engine.propose({"policies": [{"name": "budget", "settings": {"remove_fraction": 0.5}}]})


def _growth(engine: NeuronEngine) -> Plan:
    actions = [
        ExpandAction(layer="0", count=3, init="zero_outgoing", reason="test"),
        ExpandAction(layer="4", count=4, init="net2net", source_indices=[3, 4, 4, 6],
                     source_ids=[15, 16, 16, 18], reason="test"),
    ]  # fmt: skip
    return Plan.create(actions, engine.layout)


@pytest.mark.parametrize(
    ("make_plan", "kinds"),
    [
        (_dead_and_redundant, {"prune", "merge"}),
        (_budget, {"fold"}),
        (_growth, {"expand"}),
    ],
)
def test_a_plan_proposed_and_applied_on_cuda_equals_the_same_plan_on_cpu(make_plan, kinds):
    gpu = _cnn(DEVICE)
    cpu = copy.deepcopy(gpu).cpu()
    opts = {
        "device": torch.optim.Adam(gpu.parameters(), lr=1e-3),
        "cpu": torch.optim.Adam(cpu.parameters(), lr=1e-3),
    }
    x = torch.randn(256, 3, 6, 6)  # more than the redundancy policy's min_samples
    y = torch.randint(0, 4, (256,))
    # one Adam step each, from the CPU gradients (Adam's first step is about lr·sign(g), so
    # device-computed gradients near zero would make the two models differ by up to 2·lr)
    nn.functional.cross_entropy(cpu(x), y).backward()
    with torch.no_grad():
        gpu(x.to(DEVICE))  # the same BatchNorm running statistics
    for p_gpu, p_cpu in zip(gpu.parameters(), cpu.parameters()):
        p_gpu.grad = p_cpu.grad.to(DEVICE)
    opts["device"].step()
    opts["cpu"].step()
    probe = torch.randn(16, 3, 6, 6)
    cpu.eval()
    gpu.eval()
    with torch.no_grad():
        torch.testing.assert_close(gpu(probe.to(DEVICE)).cpu(), cpu(probe), rtol=1e-4, atol=1e-5)
    engine = NeuronEngine(gpu, correlation=True)
    with engine.tracking(), torch.no_grad():
        gpu(x.to(DEVICE))
    plan = make_plan(engine)
    assert {a.kind for a in plan.actions()} == kinds
    record = engine.apply(plan, opts["device"], example_inputs=probe.to(DEVICE))
    cpu_record = apply_plan(cpu, plan, opts["cpu"], probe)
    assert record.max_output_change == pytest.approx(cpu_record.max_output_change, abs=1e-5)
    assert [p.shape for p in gpu.parameters()] == [p.shape for p in cpu.parameters()]
    assert (gpu[0].out_channels, gpu[4].out_features) != (12, 24)
    with torch.no_grad():
        torch.testing.assert_close(gpu(probe.to(DEVICE)).cpu(), cpu(probe), rtol=1e-4, atol=1e-5)
    for p_gpu, p_cpu in zip(gpu.parameters(), cpu.parameters()):
        assert p_gpu.device.type == DEVICE.type
        state_gpu, state_cpu = opts["device"].state[p_gpu], opts["cpu"].state[p_cpu]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state_gpu[key].device.type == DEVICE.type
            torch.testing.assert_close(state_gpu[key].cpu(), state_cpu[key], rtol=1e-4, atol=1e-7)
    loss = nn.functional.cross_entropy(gpu.train()(x.to(DEVICE)), y.to(DEVICE))
    loss.backward()
    opts["device"].step()  # training goes on with the remapped optimizer
    assert torch.isfinite(loss)


def test_cka_on_device_tensors_equals_cka_on_cpu():
    torch.manual_seed(0)
    a = torch.randn(200, 30)
    b = a @ torch.randn(30, 20) + 0.5 * torch.randn(200, 20)
    on_cpu = float(linear_cka(a, b))
    on_gpu = float(linear_cka(a.to(DEVICE), b.to(DEVICE)))
    assert 0.1 < on_cpu < 0.99
    assert on_gpu == pytest.approx(on_cpu, rel=1e-5)


def test_the_self_modifying_loop_runs_on_the_device(tmp_path):
    """Training with statistics, gradient, weight and representation tracking, and a plan from
    the self-modifying demo's policies applied every epoch, all on the device."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10),
    ).to(DEVICE)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    engine = NeuronEngine(model, correlation=True)
    x = torch.randn(512, 1, 8, 8, device=DEVICE)
    y = (x.flatten(1)[:, :10].argmax(1) + (x.mean((1, 2, 3)) > 0).long()) % 10
    weights = WeightTracker(engine, tmp_path / "weights", example_inputs=x[:8])
    engine.add_listener(weights)
    grads = engine.gradient_tracker(eps=1e-6)
    reprs = engine.representation_dynamics(x[:64], directory=tmp_path / "repr")
    config = Path(__file__).resolve().parents[1] / "demos" / "self_modifying.yaml"
    schedule = SurgerySchedule(engine, opt, config, every=1, plans_dir=tmp_path / "plans")
    weights.snapshot("initial", epoch=-1)
    applied = 0
    for epoch in range(4):
        with engine.tracking(), engine.gradient_tracking(opt):
            for batch in range(0, 512, 64):
                opt.zero_grad()
                nn.functional.cross_entropy(
                    model(x[batch : batch + 64]), y[batch : batch + 64]
                ).backward()
                opt.step()
        reprs.record(epoch)
        weights.on_epoch(epoch)
        applied += schedule.epoch_end(epoch) is not None
    assert applied >= 2
    assert all(p.device.type == DEVICE.type for p in model.parameters())
    for state in opt.state.values():
        assert all(
            v.device.type == DEVICE.type for v in state.values() if torch.is_tensor(v) and v.dim()
        )
    assert weights.changes() and grads.resets
    history = grads.history()
    assert np.isfinite(history.column("*", "grad_norm")).all()
    reprs.write_report("4", k=3)
    assert any((tmp_path / "repr").rglob("*.png"))
