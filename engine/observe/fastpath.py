"""Switch off PyTorch's fused transformer fast path while any engine is tracking.

The fast path (``torch.backends.mha``) runs a whole ``TransformerEncoderLayer`` in one kernel
and skips its sub-module calls, and so their hooks. Several engines may track at once: the
first ``acquire`` saves the user's setting, the last ``release`` restores it.

>>> import torch
>>> before = torch.backends.mha.get_fastpath_enabled()
>>> acquire(); acquire(); release(); torch.backends.mha.get_fastpath_enabled()
False
>>> release(); torch.backends.mha.get_fastpath_enabled() == before
True
"""

from __future__ import annotations

import threading

import torch

_lock = threading.Lock()
_users = 0
_saved: bool | None = None


def _available() -> bool:
    return hasattr(torch.backends, "mha") and hasattr(torch.backends.mha, "get_fastpath_enabled")


def acquire() -> None:
    global _users, _saved
    if not _available():
        return
    with _lock:
        if _users == 0:
            _saved = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _users += 1


def release() -> None:
    global _users, _saved
    if not _available():
        return
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0 and _saved is not None:
            torch.backends.mha.set_fastpath_enabled(_saved)
            _saved = None
