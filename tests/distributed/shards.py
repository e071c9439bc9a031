"""Model and data shared by the 2-process workers and the single-process references."""

from __future__ import annotations

import torch
from torch import nn

SIZES = {0: (40, 33, 40), 1: (25, 17, 30)}  # a different shard per rank, other sizes


def make_model(seed: int = 0, width: int = 16) -> nn.Module:
    """Linear → ReLU → Linear → Tanh (bounded: saturation counts) → Linear; units 0–2 of the
    first layer never fire (a plan prunes them)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 8), nn.Tanh(),
                          nn.Linear(8, 3))  # fmt: skip
    with torch.no_grad():
        model[0].bias[:3] = -50.0
        model[2].weight.mul_(3.0)  # some tanh saturation
    return model


def shard(
    rank: int, nan: bool = False, dtype: torch.dtype = torch.float32
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s batches; with ``nan``, rank 1's first batch holds a NaN row. In
    float64 the hot path keeps float64 (no float32 batch sums), so merged statistics and one
    process differ by float64 rounding only."""
    gen = torch.Generator().manual_seed(100 + rank)
    batches = []
    for n in SIZES[rank]:
        x = (torch.randn(n, 6, generator=gen) * 2 + rank).to(dtype)
        batches.append((x, torch.randint(0, 3, (n,), generator=gen)))
    if nan and rank == 1:
        batches[0][0][3, 2] = float("nan")
    return batches


def observe(engine, model: nn.Module, batches) -> None:
    """Forward and backward (the growth signal needs it), no optimizer step."""
    with engine.tracking():
        for x, y in batches:
            nn.functional.cross_entropy(model(x), y).backward()
            model.zero_grad()
