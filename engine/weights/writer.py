"""A background writer: serialisation, fsync and rename off the training thread.

A weight snapshot has two costs: copying the tensors (the model keeps training, so this must
happen now) and writing them durably (serialise, write, fsync, rename, then the index). The
second is most of it, and nothing in the training loop waits for it. ``SnapshotWriter`` runs
such jobs in one daemon thread, in submission order, from a bounded queue:

* ``submit(job)`` returns at once while fewer than ``max_pending`` snapshots wait; otherwise
  it blocks until one is written (back-pressure: memory stays bounded when the disk is slower
  than the snapshots). Small jobs (``heavy=False``: an index rewrite, a change-log line, a
  retention pass) never block: they hold no tensors;
* a crash (even SIGKILL) loses only the jobs not yet done: at most ``max_pending`` waiting and
  the one being written. Every job writes atomically (file, then index, each renamed into
  place), so a written snapshot is never corrupted and the index never names a missing file;
* a job that fails does not stop the writer; the first error is raised, as
  :class:`~engine.weights.errors.WeightSnapshotError`, by the next ``submit``, ``flush`` or
  ``close`` (so a failing disk is not silent);
* ``with writer.batch():`` holds the jobs submitted inside and queues them together on exit,
  so the thread does not start (and take the GIL) while the caller still has bookkeeping to
  do;
* ``flush()`` waits for every submitted job; ``close()`` flushes and stops the thread, and runs
  at interpreter exit for every writer still open.

>>> writer = SnapshotWriter()
>>> done = []
>>> writer.submit(lambda: done.append(1)); writer.submit(lambda: done.append(2))
>>> writer.flush(); done
[1, 2]
>>> writer.close(); writer.closed
True
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from engine.errors import ConfigurationError
from engine.weights.errors import WeightSnapshotError

__all__ = ["SnapshotWriter"]

_OPEN: weakref.WeakSet[SnapshotWriter] = weakref.WeakSet()


def _close_all() -> None:  # at interpreter exit: write what is queued
    for writer in list(_OPEN):
        with suppress(WeightSnapshotError):  # reported to the caller, or nobody is left to tell
            writer.close()


atexit.register(_close_all)


class SnapshotWriter:
    """Runs write jobs in a background thread (see the module docstring)."""

    def __init__(self, max_pending: int = 1) -> None:
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(f"max_pending must be an int ≥ 1, got {max_pending!r}")
        self.max_pending = max_pending
        self._queue: queue.Queue[tuple[Callable[[], object], bool] | None] = queue.Queue()
        self._slots = threading.Semaphore(max_pending + 1)  # waiting + the one being written
        self._error: BaseException | None = None
        self._held: list[tuple[Callable[[], object], bool]] | None = None
        self._lock = threading.Lock()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                job, heavy = item
                try:
                    job()
                finally:
                    if heavy:
                        self._slots.release()
            except BaseException as exc:  # kept for the caller; the writer goes on
                with self._lock:
                    if self._error is None:
                        self._error = exc
            finally:
                self._queue.task_done()

    def _raise_pending_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise WeightSnapshotError(
                f"a background snapshot write failed: {type(error).__name__}: {error}"
            ) from error

    def submit(self, job: Callable[[], object], *, heavy: bool = True) -> None:
        """Queue ``job``; a ``heavy`` one (a snapshot file) blocks while ``max_pending`` others
        wait. Raises an earlier job's error first."""
        if self.closed:
            raise WeightSnapshotError("the snapshot writer is closed")
        self._raise_pending_error()
        if heavy:
            self._slots.acquire()
        if self._held is not None:
            self._held.append((job, heavy))
        else:
            self._queue.put((job, heavy))

    @contextmanager
    def batch(self) -> Iterator[SnapshotWriter]:
        """Queue the jobs submitted inside the block together, when it ends (also on error)."""
        if self._held is not None:  # nested: the outer batch queues them
            yield self
            return
        self._held = []
        try:
            yield self
        finally:
            held, self._held = self._held, None
            for item in held:
                self._queue.put(item)

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet done (an estimate while the thread runs)."""
        return self._queue.unfinished_tasks

    def flush(self) -> None:
        """Wait until every submitted job is done; raise the first error among them."""
        if not self.closed:
            self._queue.join()
        self._raise_pending_error()

    def close(self) -> None:
        """Flush and stop the thread (idempotent)."""
        if self.closed:
            self._raise_pending_error()
            return
        self._queue.put(None)
        self._thread.join()
        self.closed = True
        _OPEN.discard(self)
        self._raise_pending_error()

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
