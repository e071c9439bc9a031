"""Import an optional integration's package, or say which extra installs it.

>>> require("math", "none").sqrt(4.0)
2.0
>>> try:
...     require("no_such_package_here", "lightning")
... except MissingExtraError as e:
...     print(str(e).split(";")[0])
engine.integrations needs the package 'no_such_package_here'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from engine.errors import MissingExtraError

__all__ = ["MissingExtraError", "available", "require"]


def available(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def require(package: str, extra: str) -> ModuleType:
    """``import package``, or raise :class:`MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingExtraError(
            f"engine.integrations needs the package {package!r}; install it with "
            f"pip install 'neuron-engine[{extra}]' ({exc})"
        ) from exc
