"""Small models and helpers shared by the engine tests.

Import from a test module as ``from engine_models import ...`` (pytest's default ``prepend``
import mode puts ``tests/`` on ``sys.path`` for test modules that live directly in it).

Every model is tiny so that a forward pass costs well under a millisecond on a CPU. Models are
built with a fixed seed by their ``make_*`` helpers (``torch.manual_seed`` is used locally so a
test never depends on the global RNG state left by another test).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "ConvBNFunctional",
    "EmbedLSTM",
    "FlagRaiser",
    "FunctionalMLP",
    "LSTMHead",
    "SharedReLUMLP",
    "SmallResNet",
    "UntraceableBlock",
    "UntraceableChildNet",
    "UntraceableMLP",
    "count_hooks",
    "hooked_modules",
    "make_cnn_bn",
    "make_mlp",
    "seeded",
]


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Run a block with a fixed torch seed and restore the global RNG state afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


# --- hook bookkeeping ----------------------------------------------------------------------
def count_hooks(model: nn.Module) -> int:
    """Forward hooks plus forward pre-hooks over every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def hooked_modules(model: nn.Module) -> dict[str, int]:
    """``{module name: number of forward (pre-)hooks}`` for modules that have any."""
    out = {}
    for name, m in model.named_modules():
        k = len(m._forward_hooks) + len(m._forward_pre_hooks)
        if k:
            out[name] = k
    return out


# --- multilayer perceptrons ----------------------------------------------------------------
def make_mlp(d_in: int = 6, hidden: int = 16, hidden2: int = 12, d_out: int = 3) -> nn.Sequential:
    """``Linear → ReLU → Linear → ReLU → Linear`` (tracked layers '0', '2', '4')."""
    with seeded(1):
        return nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden2),
            nn.ReLU(),
            nn.Linear(hidden2, d_out),
        )


class FunctionalMLP(nn.Module):
    """``fc2(act(fc1(x)))`` with the activation written as a function or a tensor method.

    ``style``: ``"functional"`` (``F.relu``), ``"method"`` (``x.relu()``), ``"torch"``
    (``torch.relu``), ``"sigmoid_method"`` (``x.sigmoid()``), ``"tanh"`` (``torch.tanh``),
    ``"leaky"`` (``F.leaky_relu(x, 0.2)``).
    """

    def __init__(self, d_in: int = 6, hidden: int = 16, d_out: int = 3, style: str = "functional"):
        super().__init__()
        with seeded(2):
            self.fc1 = nn.Linear(d_in, hidden)
            self.fc2 = nn.Linear(hidden, d_out)
        self.style = style

    def act(self, h: torch.Tensor) -> torch.Tensor:
        if self.style == "functional":
            return F.relu(h)
        if self.style == "method":
            return h.relu()
        if self.style == "torch":
            return torch.relu(h)
        if self.style == "sigmoid_method":
            return h.sigmoid()
        if self.style == "tanh":
            return torch.tanh(h)
        if self.style == "leaky":
            return F.leaky_relu(h, 0.2)
        raise ValueError(self.style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SharedReLUMLP(nn.Module):
    """One ``nn.ReLU`` instance used after two different layers."""

    def __init__(self, d_in: int = 6, h1: int = 10, h2: int = 8, d_out: int = 3):
        super().__init__()
        with seeded(3):
            self.fc1 = nn.Linear(d_in, h1)
            self.fc2 = nn.Linear(h1, h2)
            self.fc3 = nn.Linear(h2, d_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


# --- convolutional -------------------------------------------------------------------------
def make_cnn_bn(c_in: int = 3, c1: int = 8, c2: int = 6, n_out: int = 4) -> nn.Sequential:
    """``Conv → BN → ReLU → Conv → BN → ReLU → pool → flatten → Linear``.

    Tracked layers: '0' (c1 channels), '3' (c2 channels), '8' (n_out features).
    """
    with seeded(4):
        return nn.Sequential(
            nn.Conv2d(c_in, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c2, n_out),
        )


class ConvBNFunctional(nn.Module):
    """``F.relu(self.bn1(self.conv1(x)))`` then a second conv (functional activation)."""

    def __init__(self, c_in: int = 3, c1: int = 6, c2: int = 4):
        super().__init__()
        with seeded(5):
            self.conv1 = nn.Conv2d(c_in, c1, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(c1)
            self.conv2 = nn.Conv2d(c1, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


class BasicBlock(nn.Module):
    """ResNet ``BasicBlock``: one shared in-place ``self.relu`` used twice, ``out += identity``."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out += identity
        out = self.relu(out)
        return out


class SmallResNet(nn.Module):
    """Stem conv/BN/ReLU, one ``BasicBlock``, global pool and a Linear head."""

    def __init__(self, c_in: int = 3, channels: int = 4, n_out: int = 5):
        super().__init__()
        with seeded(6):
            self.stem = nn.Conv2d(c_in, channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.block = BasicBlock(channels)
            self.fc = nn.Linear(channels, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.block(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x)


# --- sequences -----------------------------------------------------------------------------
class LSTMHead(nn.Module):
    """``out, _ = lstm(x)`` then ``F.relu`` and a Linear on every step."""

    def __init__(self, d_in: int = 5, hidden: int = 7, d_out: int = 3):
        super().__init__()
        with seeded(7):
            self.lstm = nn.LSTM(d_in, hidden, batch_first=True)
            self.fc = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(F.relu(out))


class EmbedLSTM(nn.Module):
    """``Embedding → LSTM → Linear`` on the last time step."""

    def __init__(self, vocab: int = 20, emb: int = 6, hidden: int = 8, d_out: int = 4):
        super().__init__()
        with seeded(8):
            self.emb = nn.Embedding(vocab, emb)
            self.lstm = nn.LSTM(emb, hidden, batch_first=True)
            self.fc = nn.Linear(hidden, d_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(tokens))
        return self.fc(out[:, -1])


# --- failure cases -------------------------------------------------------------------------
class UntraceableMLP(nn.Module):
    """Data-dependent control flow in the root forward: ``torch.fx`` cannot trace it."""

    def __init__(self, d_in: int = 6, hidden: int = 8, d_out: int = 3):
        super().__init__()
        with seeded(9):
            self.fc1 = nn.Linear(d_in, hidden)
            self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if x.sum() > 0:
            h = h * 1.0
        return self.fc2(F.relu(h))


class UntraceableBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.inner = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return torch.relu(self.inner(x))


class UntraceableChildNet(nn.Module):
    """Traceable root (``F.relu`` after ``fc0`` and ``fc2``) around an untraceable child."""

    def __init__(self, d_in: int = 6, width: int = 8, d_out: int = 3):
        super().__init__()
        with seeded(10):
            self.fc0 = nn.Linear(d_in, width)
            self.child = UntraceableBlock(width)
            self.fc2 = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(self.child(F.relu(self.fc0(x)))))


class FlagRaiser(nn.Module):
    """``Linear → ReLU → Linear`` whose forward raises ``RuntimeError`` when ``fail`` is set."""

    def __init__(self, d_in: int = 4, hidden: int = 6, d_out: int = 2):
        super().__init__()
        with seeded(11):
            self.fc1 = nn.Linear(d_in, hidden)
            self.act = nn.ReLU()
            self.fc2 = nn.Linear(hidden, d_out)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        if self.fail:
            raise RuntimeError("planted failure in forward")
        return self.fc2(h)
