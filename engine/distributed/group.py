"""Which ranks the engine agrees with, and the one collective it uses: ``all_gather``.

An engine's ``process_group`` setting is ``None`` (the default group, once
``torch.distributed.init_process_group`` has run and holds more than one rank), ``False``
(never merge: every rank keeps to itself) or a ``ProcessGroup``. :func:`rank_group` turns the
setting into a :class:`RankGroup`, or None when there is nothing to agree with (no process
group, one rank): then every engine call runs exactly as on one machine.

Rows are gathered as they are (same length on every rank) and come back in rank order on the
CPU, so every rank reads the same bytes and merges them in the same order.

>>> rank_group(None) is None  # no process group in this process
True
>>> digest_words("abc") == digest_words("abc"), len(digest_words("abc"))
(True, 2)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from engine.errors import ConfigurationError, RankMismatchError

__all__ = ["RankGroup", "check_same", "digest_words", "rank_group"]


@dataclass(frozen=True)
class RankGroup:
    """An initialised process group as the engine sees it: ``group`` (None: the default
    one), this process's ``rank`` in it, its ``world`` size and the ``device`` collectives run
    on (the current CUDA device for NCCL, the CPU otherwise)."""

    group: Any
    rank: int
    world: int
    device: torch.device

    def gather(self, row: torch.Tensor) -> torch.Tensor:
        """``all_gather`` of one vector (the same length and dtype on every rank): a
        ``(world, len)`` CPU tensor, row ``r`` from rank ``r``."""
        row = row.reshape(-1).to(self.device)
        out = [torch.empty_like(row) for _ in range(self.world)]
        dist.all_gather(out, row, group=self.group)
        return torch.stack(out).cpu()


def rank_group(setting: Any) -> RankGroup | None:
    """The group named by an engine's ``process_group`` setting (see the module docstring),
    or None when statistics and plans stay local."""
    if setting is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if setting is None:
            return None
        raise ConfigurationError(
            f"process_group={setting!r} was given but torch.distributed is not initialised: "
            "call torch.distributed.init_process_group first (or leave process_group=None)"
        )
    group = None if setting is None or setting is True else setting
    world = dist.get_world_size(group)
    if world <= 1:
        return None
    backend = str(dist.get_backend(group)).lower()
    device = torch.device("cpu")
    if "nccl" in backend and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return RankGroup(group, dist.get_rank(group), world, device)


def digest_words(text: str | bytes) -> list[int]:
    """Two signed 64-bit words of the SHA-256 of ``text``: a digest that fits a tensor row."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    raw = hashlib.sha256(data).digest()
    return [int.from_bytes(raw[i : i + 8], "little", signed=True) for i in (0, 8)]


def check_same(rows: torch.Tensor, parts: list[tuple[str, slice, str]]) -> None:
    """Raise :class:`RankMismatchError` on every rank when a part of the gathered ``rows``
    (``(world, len)``) differs from rank 0's. ``parts`` are ``(what, columns, message)``; the
    error says which ranks differ, then the message."""
    for what, columns, message in parts:
        block = rows[:, columns]
        differ = [r for r in range(1, rows.shape[0]) if not torch.equal(block[r], block[0])]
        if differ:
            many = len(differ) > 1
            who = f"rank{'s' if many else ''} {', '.join(str(r) for r in differ)}"
            raise RankMismatchError(
                what, differ, f"{who} {'differ' if many else 'differs'} from rank 0: {message}"
            )
