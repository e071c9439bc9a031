"""Atomic writes and strict JSON reads.

A file is written to a temporary file beside it, then renamed into place; a folder of files
(a statistics snapshot) is written into a temporary sibling folder, then swapped into place
(:func:`atomic_write_dir`). A reader never sees a half-written file or folder, a failed write
leaves the old one untouched, and temporaries that a killed writer left behind are removed by
the next write of the same target.

Temporaries are named ``.{name}.tmp-{pid}-{8 hex digits}`` beside the target ``name`` (and a
folder being replaced may briefly be ``.{name}.old-{pid}-{8 hex}``). Only entries matching that
pattern exactly, whose writing process is no longer running on this machine, are ever removed
(none on Windows, where no safe liveness check exists; writers on other machines sharing the
folder are not told apart, as process IDs are this machine's).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
>>> _ = atomic_write_text(p, '{"ok": true}'); p.read_text()
'{"ok": true}'
>>> d = atomic_write_dir(p.parent / "folder", lambda tmp: atomic_write_text(tmp / "a", "1"))
>>> sorted(q.name for q in d.iterdir()), sorted(q.name for q in p.parent.iterdir())
(['a'], ['folder', 'x.json'])

**Rank 0 writes.** Under an initialised ``torch.distributed`` process group every write here
happens on global rank 0 only (:func:`writes_here`): plans, statistics and weight snapshots,
reports, checkpoints and plots are written once, and the other ranks' calls return the path
without touching the disk. ``every_rank=True`` writes on every rank (a per-node cache).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# Temporaries are created 0600/0700; give written files the mode open() would (0666 minus umask).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK
_TEMP = r"\.{name}\.(tmp|old)-([0-9]+)-[0-9a-f]{{8}}"
# what tempfile.mkstemp named the temporaries of earlier versions (inside a snapshot folder only)
_LEGACY_TEMP = r"\.{name}\.[a-z0-9_]{{8}}\.tmp"


def writes_here(every_rank: bool = False) -> bool:
    """Whether this process writes the engine's files: always without ``torch.distributed``
    (or with ``every_rank``); under an initialised process group only on global rank 0.
    Looks at ``torch.distributed`` only when torch has already imported it.

    >>> writes_here()  # no process group here
    True
    """
    dist = sys.modules.get("torch.distributed")
    if every_rank or dist is None or not dist.is_available() or not dist.is_initialized():
        return True
    return dist.get_rank() == 0


def _temp_name(name: str, kind: str = "tmp") -> str:
    return f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _ours(entry: str, name: str) -> tuple[str, int] | None:
    """``(kind, pid)`` when ``entry`` is a temporary of ours for target ``name``, else None."""
    match = re.fullmatch(_TEMP.format(name=re.escape(name)), entry)
    return None if match is None else (match.group(1), int(match.group(2)))


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` may still be writing (unknown counts as alive: nothing is removed)."""
    if pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) would terminate on Windows
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(
    path: str | os.PathLike[str], *, kinds: Collection[str] = ("tmp",)
) -> list[Path]:
    """Remove the temporaries of ours (see the module docstring) for target ``path`` that a
    writer no longer running left beside it; returns what was removed. Anything else, however
    similar its name, is left alone."""
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        ours = _ours(entry.name, path.name)
        if ours is not None and ours[0] in kinds and not _pid_alive(ours[1]):
            _remove(path.parent / entry.name)
            removed.append(path.parent / entry.name)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform that cannot open folders (Windows): rename is all we have
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, every_rank: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); temporaries of
    earlier killed writes of ``path`` are removed first. Rank 0 only (:func:`writes_here`)."""
    path = Path(path)
    if not writes_here(every_rank):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / _temp_name(path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, every_rank: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), every_rank=every_rank)


# --- folders --------------------------------------------------------------------------------
def _load_renameat2() -> Any:
    """Linux ``renameat2`` (glibc 2.28+), which can swap two folders in one step; or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", -1)}


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False where the platform or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the complete folder ``tmp`` at ``path``; at every instant but one (documented in
    :func:`atomic_write_dir`) a complete folder, old or new, is at ``path``."""
    if not path.exists():  # the first write, or an interrupted one left only the aside copy
        os.rename(tmp, path)
    elif _exchange(tmp, path):  # one atomic step; ``tmp`` now holds the old folder
        _remove(tmp)
    else:
        aside = path.parent / _temp_name(path.name, "old")
        os.rename(path, aside)  # the window: ``path`` is missing, readers use the aside copy
        try:
            os.rename(tmp, path)
        except BaseException:
            if not path.exists():
                os.rename(aside, path)
            raise
        _remove(aside)


def _belongs(entry: str, keep: Collection[str]) -> bool:
    """Whether ``entry`` of a folder is one of its files ``keep`` or a temporary of one."""
    return entry in keep or any(
        re.fullmatch(pattern.format(name=re.escape(k)), entry)
        for k in keep
        for pattern in (_TEMP, _LEGACY_TEMP)
    )


def atomic_write_dir(
    path: str | os.PathLike[str],
    fill: Callable[[Path], object],
    *,
    keep: Collection[str] | None = None,
    error: type[Exception] = OSError,
    every_rank: bool = False,
) -> Path:
    """Write the folder ``path`` as a whole: ``fill(tmp)`` writes every file into a new sibling
    folder ``.{name}.tmp-{pid}-{hex}``, which is fsynced and then swapped into place; the old
    folder is removed. Returns ``path``.

    A write that fails or is killed at any point leaves the previous folder complete: on Linux
    the swap is one ``renameat2(RENAME_EXCHANGE)``. Elsewhere (or on a file system without it)
    the old folder is renamed aside to ``.{name}.old-{pid}-{hex}`` and the new one renamed in:
    between those two renames ``path`` is missing, and :func:`resolve_dir` (what readers call)
    returns the aside copy. Temporaries of killed writers are removed by the next write.

    ``keep`` names the files the folder may hold; an existing folder holding anything else (a
    user's file) is refused with ``error`` before anything is written, since it would be
    replaced as a whole. A target that exists and is not a folder is refused the same way.
    Rank 0 only, unless ``every_rank`` (:func:`writes_here`).
    """
    path = Path(os.path.abspath(path))
    if not writes_here(every_rank):  # rank 0 writes (see the module docstring)
        return path
    if not path.name:
        raise error(f"{path}: cannot replace the file-system root with a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise error(f"{path}: exists and is not a folder")
    # an aside copy is stale only once a folder is at ``path`` again
    remove_stale_temporaries(path, kinds=("tmp", "old") if path.is_dir() else ("tmp",))
    if keep is not None and path.is_dir():
        foreign = sorted(e for e in os.listdir(path) if not _belongs(e, keep))
        if foreign:
            shown = ", ".join(repr(e) for e in foreign[:8]) + (", …" if len(foreign) > 8 else "")
            raise error(
                f"{path}: holds {shown} besides its own files ({', '.join(sorted(keep))}); the "
                f"folder is replaced as a whole, so write it into a folder of its own"
            )
    tmp = path.parent / _temp_name(path.name)
    os.mkdir(tmp, 0o700)
    try:
        fill(tmp)
        for entry in os.scandir(tmp):
            if entry.is_file(follow_symlinks=False):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.chmod(tmp, _DIR_MODE)
        _fsync_dir(tmp)
        _swap_in(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)
    remove_stale_temporaries(path, kinds=("old",))
    return path


def resolve_dir(path: str | os.PathLike[str]) -> Path:
    """The folder to read for ``path``: ``path`` itself, or, where it is missing because an
    :func:`atomic_write_dir` was interrupted between its two renames, the complete previous
    folder set aside beside it (the newest, if several)."""
    path = Path(path)
    if path.exists():
        return path
    full = Path(os.path.abspath(path))
    try:
        names = os.listdir(full.parent)
    except OSError:
        return path
    asides = [full.parent / e for e in names if (_ours(e, full.name) or ("",))[0] == "old"]
    asides = [a for a in asides if a.is_dir()]
    return max(asides, key=lambda a: a.stat().st_mtime_ns) if asides else path


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
