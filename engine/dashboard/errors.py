"""Typed errors of the dashboard: a run folder that is missing, empty, or holds a bad file.

>>> from engine.errors import EngineError
>>> err = MissingRunFileError("outputs/run", "history.json", "per-epoch statistics")
>>> isinstance(err, EngineError), str(err)
(True, 'outputs/run: no history.json (per-epoch statistics); see engine.dashboard')
"""

from __future__ import annotations

from engine.errors import EngineError


class DashboardError(EngineError, ValueError):
    """Base class of the dashboard's errors (names the run folder and the file)."""


class RunFolderError(DashboardError):
    """The run folder does not exist, is not a folder, or holds none of the files read."""


class MissingRunFileError(RunFolderError, FileNotFoundError):
    """A file a panel needs is missing (raised in strict mode; otherwise the panel says so)."""

    def __init__(self, run_dir: object, name: str, what: str) -> None:
        super().__init__(f"{run_dir}: no {name} ({what}); see engine.dashboard")
        self.run_dir, self.name, self.what = run_dir, name, what


class RunFileError(DashboardError):
    """A file of the run folder exists but cannot be read (names the file and the problem)."""
