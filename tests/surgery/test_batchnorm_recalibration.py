"""``recalibrate_batchnorm``: exact re-estimation, modes and momenta kept, no trace on error."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from engine import NeuronEngine
from engine.errors import ConfigurationError
from engine.surgery.batchnorm import recalibrate_batchnorm


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 6, 3, padding=1),
            bn1=nn.BatchNorm2d(6),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(6, 8, 3, padding=1),
            bn2=nn.BatchNorm2d(8, momentum=0.3),
            relu2=nn.ReLU(),
            drop=nn.Dropout(0.9),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(8, 3),
        )
    )


def _stale(model: nn.Sequential, x: torch.Tensor) -> None:
    """Running statistics that describe some other model (as after surgery)."""
    model.train()
    with torch.no_grad():
        model(x)
        model.conv1.weight.mul_(3.0)
        model.conv2.bias.add_(1.0)
    model.eval()


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


def test_one_batch_gives_that_batch_statistics_exactly() -> None:
    model, x = _cnn(), torch.randn(32, 1, 8, 8)
    _stale(model, x)
    assert recalibrate_batchnorm(model, [x]) == 2
    with torch.no_grad():  # bn1 as it ran during the pass: normalised by the batch statistics
        bn1 = model.bn1
        z = nn.functional.batch_norm(
            model.conv1(x), None, None, bn1.weight, bn1.bias, training=True, eps=bn1.eps
        )
        pre = model.conv2(model.relu1(z))
    bn2 = model.bn2
    torch.testing.assert_close(bn2.running_mean, pre.mean((0, 2, 3)))
    torch.testing.assert_close(bn2.running_var, pre.var((0, 2, 3), unbiased=True))
    assert int(bn2.num_batches_tracked) == 1
    # eval mode now computes what the norm computes in train mode on that batch (up to the
    # unbiased variance it stores: a factor n/(n-1) with n = 2048 values per channel)
    expected = nn.functional.batch_norm(
        pre, None, None, bn2.weight, bn2.bias, training=True, eps=bn2.eps
    )
    with torch.no_grad():
        torch.testing.assert_close(bn2(pre), expected, atol=1e-3, rtol=1e-3)


def test_several_batches_are_averaged_with_equal_weights() -> None:
    model, x = _cnn(), torch.randn(48, 1, 8, 8)
    _stale(model, x)
    chunks = list(x.split(16))
    recalibrate_batchnorm(model, chunks)
    with torch.no_grad():
        means = [model.conv1(c).mean((0, 2, 3)) for c in chunks]
    torch.testing.assert_close(model.bn1.running_mean, torch.stack(means).mean(0))
    assert int(model.bn1.num_batches_tracked) == 3


def test_modes_momenta_and_gradients_are_left_alone() -> None:
    model, x = _cnn(), torch.randn(16, 1, 8, 8)
    model.train()
    model.fc.eval()  # mixed modes must come back per module
    seen: list[bool] = []
    model.drop.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    recalibrate_batchnorm(model, [x])
    assert seen == [False]  # dropout off while the statistics are measured
    assert model.training and model.bn1.training and model.drop.training and not model.fc.training
    assert model.bn1.momentum == 0.1 and model.bn2.momentum == 0.3
    assert all(p.grad is None for p in model.parameters())


def test_dropout_does_not_change_the_statistics() -> None:
    model, x = _cnn(), torch.randn(16, 1, 8, 8)
    recalibrate_batchnorm(model, [x])
    first = _buffers(model)
    recalibrate_batchnorm(model, [x])  # random dropout masks would give other numbers
    for name, value in _buffers(model).items():
        torch.testing.assert_close(value, first[name])


def test_tuple_mapping_and_custom_forward_batches() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
            return self.bn(a if b is None else a + b)

    model = TwoInputs()
    a, b = torch.randn(10, 3), torch.randn(10, 3)
    recalibrate_batchnorm(model, [(a, torch.zeros(10, dtype=torch.long))])  # (x, y) pairs
    torch.testing.assert_close(model.bn.running_mean, a.mean(0))
    recalibrate_batchnorm(model, [{"a": a, "b": 2 * b}])
    torch.testing.assert_close(model.bn.running_mean, (a + 2 * b).mean(0))
    recalibrate_batchnorm(model, [(a, b)], forward=lambda m, batch: m(*batch))
    torch.testing.assert_close(model.bn.running_mean, (a + b).mean(0))


def test_empty_batches_are_refused_and_change_nothing() -> None:
    model, x = _cnn(), torch.randn(16, 1, 8, 8)
    _stale(model, x)
    before = _buffers(model)
    with pytest.raises(ConfigurationError, match="at least one batch"):
        recalibrate_batchnorm(model, iter([]))
    for name, value in _buffers(model).items():
        assert torch.equal(value, before[name]), name
    assert not model.training and model.bn1.momentum == 0.1


def test_a_failing_forward_restores_everything() -> None:
    model, x = _cnn(), torch.randn(16, 1, 8, 8)
    _stale(model, x)
    before = _buffers(model)

    def batches():
        yield x
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        recalibrate_batchnorm(model, batches())
    for name, value in _buffers(model).items():
        assert torch.equal(value, before[name]), name
    assert not model.bn2.training and model.bn2.momentum == 0.3


def test_models_without_running_statistics() -> None:
    calls: list[int] = []
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    assert recalibrate_batchnorm(model, [torch.randn(4, 3)]) == 0
    assert calls == []  # nothing to measure: no forward


def test_after_a_real_prune_eval_matches_the_train_mode_function() -> None:
    """The use it is made for: a fold changes conv2's input, bn2's statistics go stale."""
    model, x = _cnn(), torch.randn(256, 1, 8, 8)
    model.drop.p = 0.0
    recalibrate_batchnorm(model, [x])
    model.eval()
    engine = NeuronEngine(model, correlation=True, include=["conv1"])
    with engine.tracking(), torch.no_grad():
        model(x)
    config = {"policies": [{"name": "budget", "settings": {"fractions": {"conv1": 0.5}}}]}
    engine.apply(engine.propose(config))
    assert model.conv1.out_channels < 6

    def gap() -> float:
        with torch.no_grad():
            model.eval()
            evaluated = model(x)
            model.bn1.train(), model.bn2.train()
            batch = model(x)  # train-mode norms on the full batch: exact statistics
            model.eval()
        return float((evaluated - batch).abs().max())

    stale = gap()
    recalibrate_batchnorm(model, [x])
    assert gap() < 1e-4 < stale
