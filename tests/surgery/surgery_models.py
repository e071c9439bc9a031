"""Models and planting helpers for the surgery tests (seeded, tiny, CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.plan import Plan


def seeded_model(factory, seed: int = 0):
    torch.manual_seed(seed)
    return factory()


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


class FunctionalMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 10), nn.Linear(10, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def cnn_bn(flatten: bool = False) -> nn.Sequential:
    head = (
        [nn.Flatten(), nn.Linear(6 * 4 * 4, 4)]
        if flatten
        else [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)]
    )
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), *head,
    )  # fmt: skip


class ResidualCNN(nn.Module):
    def __init__(self, c: int = 6):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv1, self.bn1 = nn.Conv2d(c, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = F.relu(h + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))))
        return self.fc(h.mean(dim=(2, 3)))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 16)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.block(self.embed(x)).mean(dim=1))


class LayerNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 10), nn.LayerNorm(10), nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.norm(self.fc1(x))))


def inputs_for(model: nn.Module, n: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, Transformer):
        return torch.randn(n, 7, 5, generator=g)
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if isinstance(first, nn.Conv2d):
        return torch.randn(n, 3, 4, 4, generator=g)
    return torch.randn(n, first.in_features, generator=g)


@torch.no_grad()
def make_dead(producer: nn.Module, units: list[int], norm: nn.Module | None = None) -> None:
    """Units that never fire after a ReLU: zero incoming weights and a negative bias."""
    producer.weight[units] = 0.0
    target = norm if norm is not None else producer
    target.bias[units] = -5.0
    if norm is not None:
        norm.weight[units] = 0.0


@torch.no_grad()
def make_duplicate(producer: nn.Module, keep: int, remove: int, scale: float = 1.0,
                   norm: nn.Module | None = None) -> None:  # fmt: skip
    """Unit ``remove`` = ``scale`` × unit ``keep`` (positive scale: exact through ReLU)."""
    producer.weight[remove] = scale * producer.weight[keep]
    if producer.bias is not None:
        producer.bias[remove] = scale * producer.bias[keep]
    if norm is not None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name)[remove] = getattr(norm, name)[keep]


def layout_of(model: nn.Module, layers: list[str]) -> list[tuple[str, int]]:
    out = []
    for name in layers:
        m = model.get_submodule(name)
        width = getattr(m, "out_features", None) or getattr(m, "out_channels", None)
        out.append((name, width))
    return out


def plan_for(model: nn.Module, layers: list[str], actions) -> Plan:
    return Plan.create(actions, layout_of(model, layers))


def state_of(model: nn.Module, optimizer=None) -> dict:
    """Everything a rejected plan must leave bitwise unchanged (objects and values)."""
    out = {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "objects": {k: id(v) for k, v in model.state_dict(keep_vars=True).items()},
        "modes": [m.training for m in model.modules()],
        "reprs": repr(model),
    }
    if optimizer is not None:
        out["groups"] = [[id(p) for p in g["params"]] for g in optimizer.param_groups]
        out["state"] = {
            id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in optimizer.state.items()
        }
    return out


def assert_same_state(before: dict, after: dict) -> None:
    assert before["objects"] == after["objects"]
    assert before["reprs"] == after["reprs"]
    assert before["modes"] == after["modes"]
    for k, v in before["tensors"].items():
        assert torch.equal(v, after["tensors"][k]), k
    if "groups" in before:
        assert before["groups"] == after["groups"]
        assert before["state"].keys() == after["state"].keys()
        for pid, s in before["state"].items():
            for k, v in s.items():
                w = after["state"][pid][k]
                assert torch.equal(v, w) if torch.is_tensor(v) else v == w


def trained():
    """The seeded MLP after two Adam steps (optimizer state set) and its input batch."""
    model = seeded_model(mlp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = inputs_for(model)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model, opt, x
