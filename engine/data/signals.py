"""A generated 1-D signal classification set: waveforms told apart through noise and jitter.

Each class is a waveform family (sine, square, sawtooth, triangle, rising and falling chirp, a
two-tone mix, a damped burst) at a random frequency within the family's band, with random
phase, amplitude and time shift, plus Gaussian noise. Deterministic under ``seed``; nothing is
downloaded. Small networks reach well under perfect accuracy, wider ones do better, which is
what a benchmark of sizing needs.

>>> split = make_signals_split(seed=0, train=200, test=100)
>>> split.x_train.shape, split.num_classes, split.y_train.unique().numel()
(torch.Size([200, 64]), 8, 8)
>>> make_signals_split(seed=0, train=8, test=4, images=True).x_test.shape
torch.Size([4, 1, 64])
"""

from __future__ import annotations

import math

import torch

from engine.data.digits import DataSplit
from engine.errors import DatasetError

__all__ = ["SIGNAL_CLASSES", "make_signals_split"]

SIGNAL_CLASSES = (
    "sine",
    "square",
    "sawtooth",
    "triangle",
    "chirp_up",
    "chirp_down",
    "two_tone",
    "burst",
)


def _waveforms(labels: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
    n = len(labels)
    t = torch.linspace(0.0, 1.0, length, dtype=torch.float64).expand(n, length)
    freq = (2.0 + 4.0 * torch.rand(n, 1, generator=g, dtype=torch.float64)).expand(n, length)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g, dtype=torch.float64)
    cycles = freq * t + phase / (2 * math.pi)
    angle = 2 * math.pi * cycles
    frac = cycles - torch.floor(cycles)
    chirp = 2 * math.pi * (freq * 0.5 * t + freq * t.square()) + phase
    chirp_down = 2 * math.pi * (freq * 1.5 * t - freq * 0.5 * t.square()) + phase
    shapes = torch.stack(
        [
            torch.sin(angle),
            torch.sign(torch.sin(angle)),
            2 * frac - 1,
            1 - 4 * (frac - 0.5).abs(),
            torch.sin(chirp),
            torch.sin(chirp_down),
            0.6 * torch.sin(angle) + 0.6 * torch.sin(2.7 * angle),
            torch.exp(-4 * t) * torch.sin(2 * angle) * 1.6,
        ]
    )  # (classes, n, length)
    return shapes[labels, torch.arange(n)]


def make_signals_split(
    seed: int = 0,
    *,
    train: int = 4000,
    test: int = 1000,
    length: int = 64,
    noise: float = 0.25,
    images: bool = False,
) -> DataSplit:
    """``train`` + ``test`` noisy waveforms of ``length`` samples, 8 balanced-at-random classes
    (``SIGNAL_CLASSES``); inputs ``(N, length)``, or ``(N, 1, length)`` with ``images=True``
    (for a ``Conv1d``)."""
    if train < 1 or test < 1 or length < 8:
        raise DatasetError(
            f"signals: need train ≥ 1, test ≥ 1 and length ≥ 8, got {train}, {test}, {length}"
        )
    if not (math.isfinite(noise) and noise >= 0):
        raise DatasetError(f"signals: noise must be a finite number ≥ 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    n = train + test
    labels = torch.randint(len(SIGNAL_CLASSES), (n,), generator=g)
    amplitude = 0.5 + torch.rand(n, 1, generator=g, dtype=torch.float64)
    x = amplitude * _waveforms(labels, length, g)
    shift = torch.randint(length // 4, (n,), generator=g)
    x = x.gather(1, (torch.arange(length) - shift[:, None]) % length)  # circular time shift
    x = x + noise * torch.randn(n, length, generator=g, dtype=torch.float64)
    x = x.float()
    if images:
        x = x.unsqueeze(1)
    return DataSplit(x[:train], labels[:train], x[train:], labels[train:], len(SIGNAL_CLASSES))
