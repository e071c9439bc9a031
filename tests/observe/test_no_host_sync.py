"""The hot path never synchronises with the device.

On CPU, host-sync methods are patched to raise while tracked forwards run (flushes included);
on CUDA (where available) ``torch.cuda.set_sync_debug_mode("error")`` checks the real thing.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import NeuronEngine

SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _model(device: str) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16), nn.Sigmoid(), nn.Linear(16, 4),
    ).to(device)  # fmt: skip


def _train_steps(model: nn.Module, engine: NeuronEngine, device: str, steps: int = 6) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(steps, 5, 3, 6, 6, device=device)
    y = torch.randint(0, 4, (steps, 5), device=device)
    with engine.tracking():
        for i in range(steps):
            loss = nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_hooks_and_flushes_call_no_host_sync_method(monkeypatch):
    model = _model("cpu")
    engine = NeuronEngine(model, correlation=True, flush_every=2)  # flushes inside hooks too

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name} called in the hot path")

        return method

    with monkeypatch.context() as patch:
        for name in SYNCING:
            patch.setattr(torch.Tensor, name, refuse(name))
        _train_steps(model, engine, "cpu")
    assert engine.snapshot().layers["0"].count == 6 * 5 * 6 * 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tracking_makes_no_device_sync_and_keeps_state_on_device():
    model = _model("cuda")
    engine = NeuronEngine(model, correlation=True, flush_every=2)
    _train_steps(model, engine, "cuda", steps=1)  # warm-up: lazy CUDA init may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _train_steps(model, engine, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    acc = engine.layers["4"].accumulator
    assert acc.total().mean.device.type == "cuda"
    snap = engine.snapshot()
    assert snap.layers["0"].count == 7 * 5 * 6 * 6
    # and the device statistics equal a CPU float64 recomputation on the same activations
    with torch.no_grad():
        x = torch.randn(64, 3, 6, 6, device="cuda")
        fresh = NeuronEngine(model)
        with fresh.tracking():
            h = model[2](model[1](model[0](x)))
        ref = h.double().movedim(1, -1).reshape(-1, 8).cpu()
    got = fresh.snapshot().layers["0"]
    torch.testing.assert_close(got.mean, ref.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.variance, ref.var(0, correction=0), rtol=1e-4, atol=1e-6)
