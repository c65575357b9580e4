"""The studio's process-wide state in one object: the GPU queue, the jobs running in this process,
their cancel tokens, and one lock per project folder.

The composition root (:func:`unianimate.compose.build_studio`) creates one and hands it to the
:class:`~unianimate.studio.Studio`; a ``Studio`` built without one uses :func:`default_runtime`,
so every studio of a process shares the GPU and the project locks, as one process must.
"""
from __future__ import annotations

import threading

from unianimate.errors import InputError
from unianimate.studio.jobs import GPU_QUEUE, CancelToken, GpuQueue


class StudioRuntime:
    """GPU queue, live jobs, cancel tokens and project locks of one process."""

    def __init__(self, gpu: GpuQueue | None = None) -> None:
        self.gpu = gpu if gpu is not None else GpuQueue()
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._live: set[str] = set()
        self._tokens: dict[str, CancelToken] = {}
        self._visited: set[str] = set()

    # ---- project locks ---------------------------------------------------------------------
    def lock(self, key: str) -> threading.RLock:
        """The re-entrant lock of one project folder (``key``: its path)."""
        with self._guard:
            return self._locks.setdefault(key, threading.RLock())

    def first_visit(self, key: str) -> bool:
        """True the first time this process asks about ``key`` (once-per-process work)."""
        with self._guard:
            first = key not in self._visited
            self._visited.add(key)
            return first

    # ---- jobs ------------------------------------------------------------------------------
    def mark_live(self, job_id: str) -> None:
        with self._guard:
            self._live.add(job_id)

    def mark_dead(self, job_id: str) -> None:
        with self._guard:
            self._live.discard(job_id)

    def is_live(self, job_id: str | None) -> bool:
        """Whether a job recorded in a manifest runs in this process (else: its process died)."""
        with self._guard:
            return job_id is not None and job_id in self._live

    def claim(self, key: str, token: CancelToken) -> None:
        """Register the one queued/running job of project ``key``; InputError when it has one."""
        with self._guard:
            if key in self._tokens:
                raise InputError("a generation of this project is already queued or running; "
                                 "wait for it or cancel it")
            self._tokens[key] = token

    def release(self, key: str) -> None:
        with self._guard:
            self._tokens.pop(key, None)

    def token(self, key: str) -> CancelToken | None:
        """The cancel token of project ``key``'s queued/running job, if any."""
        with self._guard:
            return self._tokens.get(key)


_DEFAULT: StudioRuntime | None = None
_DEFAULT_GUARD = threading.Lock()


def default_runtime() -> StudioRuntime:
    """The runtime of this process (its GPU queue is :data:`~unianimate.studio.jobs.GPU_QUEUE`)."""
    global _DEFAULT
    with _DEFAULT_GUARD:
        if _DEFAULT is None:
            _DEFAULT = StudioRuntime(GPU_QUEUE)
        return _DEFAULT


__all__ = ["StudioRuntime", "default_runtime"]
