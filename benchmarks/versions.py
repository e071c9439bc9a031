"""The installed versions a benchmark's numbers depend on, recorded with every result.

Torch-Pruning's speed and grouping change between releases, so a ratio against it means little
without its version.

>>> v = versions()
>>> sorted(v) == ["engine", "numpy", "python", "torch", "torch_pruning"]
True
>>> "Torch-Pruning" in versions_line(v)
True
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """``{"python", "torch", "torch_pruning", "numpy", "engine"}`` → installed version."""
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_pruning": _installed("torch-pruning"),
        "numpy": _installed("numpy"),
        "engine": _installed("neuron-engine"),
    }


def versions_line(v: dict[str, str] | None = None) -> str:
    """One line for a table header: ``torch 2.13.0, Torch-Pruning 1.6.0, Python 3.12.3``."""
    v = v or versions()
    return f"torch {v['torch']}, Torch-Pruning {v['torch_pruning']}, Python {v['python']}"
