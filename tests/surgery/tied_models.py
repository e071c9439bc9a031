"""Small models with tied weights and bias-free consumers, for the surgery tests (CPU, seeded)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.plan import Plan


class TiedLM(nn.Module):
    """Embedding(V, d) → residual ``e + fc2(relu(fc1(e)))`` → head Linear(d, V) tied to the
    embedding (``head.weight is emb.weight``)."""

    def __init__(self, vocab: int = 11, d: int = 6, hidden: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        e = self.emb(x)
        return self.head(e + self.fc2(F.relu(self.fc1(e))))


class ParallelTied(nn.Module):
    """``a`` and ``b`` share one weight, read the same ``h`` and are summed."""

    def __init__(self):
        super().__init__()
        self.p, self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(6, 5)
        self.b.weight = self.a.weight
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h = F.relu(self.p(x))
        return self.out(F.relu(self.a(h) + self.b(h)))


class SequentialTied(nn.Module):
    """``a`` and ``b`` share one square weight and run one after the other."""

    def __init__(self):
        super().__init__()
        self.p, self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(F.relu(self.b(F.relu(self.a(F.relu(self.p(x)))))))


class ConvBlock(nn.Module):
    """ResNet-like: ``conv1 → bn1 → relu → conv2 (no bias) → bn2 → relu → fc``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 5, 1, bias=False), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.fc(h.mean(dim=(2, 3)))


def widths(model: nn.Module, layers: list[str]) -> list[tuple[str, int]]:
    out = []
    for name in layers:
        m = model.get_submodule(name)
        if isinstance(m, nn.Embedding):
            out.append((name, m.embedding_dim))
        else:
            out.append((name, getattr(m, "out_features", None) or m.out_channels))
    return out


def plan(model: nn.Module, layers: list[str], actions) -> Plan:
    return Plan.create(actions, widths(model, layers))


def trained(model: nn.Module, x: torch.Tensor, optimizer=None, steps: int = 2):
    """Adam (or ``optimizer``) after a few steps, so that every parameter has state."""
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(x).float().square().mean().backward()
        opt.step()
    return opt


def optimizer_ids(opt) -> list[int]:
    return [id(p) for g in opt.param_groups for p in g["params"]]


def assert_all_in_optimizer(model: nn.Module, opt) -> None:
    """Every parameter of the model is in the optimizer, each once (a tied one once)."""
    held = optimizer_ids(opt)
    assert len(held) == len(set(held))
    assert set(held) == {id(p) for p in model.parameters()}
