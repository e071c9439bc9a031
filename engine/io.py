"""Atomic file writes: write to a temporary file beside the target, then rename into place.

A reader never sees a half-written file, and a failed write leaves the old file untouched.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
>>> _ = atomic_write_text(p, '{"ok": true}'); p.read_text()
'{"ok": true}'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# mkstemp creates files 0600; give written files the mode open() would (0666 minus the umask).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], error: type[Exception]) -> Any:
    """Parse ``path`` as UTF-8 JSON; a bad file is raised as ``error`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


def validate_json(data: Any, model: type[M], path: Any, error: type[Exception]) -> M:
    """Validate parsed JSON with the pydantic ``model``; the first offending field is named."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise error(f"{path}: field {where!r}: {err['msg']}") from None


def read_json_model(path: str | os.PathLike[str], model: type[M], error: type[Exception]) -> M:
    """``read_json`` then ``validate_json``."""
    return validate_json(read_json(path, error), model, path, error)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON (NaN/inf refused) written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
