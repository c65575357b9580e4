"""Generation jobs: one GPU job at a time, queue position, step progress with ETA, cancel.

All GPU work of a process goes through one :class:`GpuQueue` (a FIFO ticket lock), so two
browser sessions generating at once run one after the other and each sees its queue position.
A job that is running is recorded in the manifest first; a process killed mid-job leaves that
record behind and the next load marks it ``interrupted`` (which jobs run in this process is the
:class:`~unianimate.studio.runtime.StudioRuntime`'s to know).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from unianimate.errors import GenerationCancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One progress report handed to a caller's ``progress`` callback.

    ``stage`` is one of "queued", "loading", "poses", "generating", "saving", "exporting", "done".
    ``step``/``total`` count denoising steps over the whole job (all candidates) while generating,
    frames while extracting poses. ``eta_s`` is None until it can be estimated.
    """

    stage: str
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    candidate: int = 0            # 1-based index of the candidate being generated in this job
    candidates: int = 0
    queue_position: int = 0       # 0 = running now; n = n jobs ahead
    message: str = ""
    preview: Any = field(default=None, repr=False, compare=False)  # uint8 (F,h,w,3) rough preview

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.step / self.total) if self.total else 0.0


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, item: Progress) -> None:
    """Call ``progress`` when given, and log the report at debug level."""
    log.debug("progress %s", item)
    if progress is not None:
        progress(item)


class GpuQueue:
    """A FIFO lock: one holder at a time, waiters served in arrival order with known positions."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    def _ahead(self, ticket: int) -> int:
        """Live jobs ahead of ``ticket`` (abandoned tickets do not count); lock held."""
        return max(0, ticket - self._serving
                   - sum(1 for t in self._abandoned if self._serving <= t < ticket))

    def position(self, ticket: int) -> int:
        """How many jobs are ahead of ``ticket`` (0 = its turn)."""
        with self._cond:
            return self._ahead(ticket)

    @property
    def waiting(self) -> int:
        """Jobs holding or waiting for the GPU."""
        with self._cond:
            return self._ahead(self._next_ticket)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None,
             should_cancel: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold the GPU for the ``with`` body; ``on_wait(position)`` while queued.

        ``should_cancel`` is polled while waiting; a cancelled waiter leaves the queue and raises
        GenerationCancelled.
        """
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            last = -1
            try:
                while self._serving != ticket:
                    pos = self._ahead(ticket)
                    if on_wait is not None and pos != last:
                        last = pos
                        self._cond.release()
                        try:
                            on_wait(pos)
                        finally:
                            self._cond.acquire()
                        continue                  # the queue may have moved meanwhile
                    if should_cancel is not None and should_cancel():
                        raise GenerationCancelled("generation cancelled while waiting in the queue")
                    self._cond.wait(timeout=0.2)
            except BaseException:
                self._abandon(ticket)             # never leave a dead ticket blocking the queue
                raise
        try:
            yield
        finally:
            with self._cond:
                self._advance()

    def _abandon(self, ticket: int) -> None:
        """Mark a waiting ticket as given up: it is skipped when its turn comes."""
        if ticket == self._serving:
            self._advance()
        else:
            self._abandoned.add(ticket)
            self._cond.notify_all()

    def _advance(self) -> None:
        """Serve the next ticket that was not abandoned."""
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


#: the one queue of this process (all Studio instances share the GPU)
GPU_QUEUE = GpuQueue()


class StepClock:
    """Estimates the remaining time of a job from the steps done so far."""

    def __init__(self, total_steps: int) -> None:
        self.total = max(1, int(total_steps))
        self.start = time.monotonic()
        self.done = 0

    def tick(self, steps_done: int) -> float | None:
        """Record ``steps_done`` (over the whole job) and return the ETA in seconds."""
        self.done = steps_done
        if steps_done <= 0:
            return None
        elapsed = time.monotonic() - self.start
        return elapsed / steps_done * max(0, self.total - steps_done)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


class CancelToken:
    """A cancel flag set by :meth:`Studio.cancel` and polled between steps."""

    def __init__(self, external: Callable[[], bool] | None = None) -> None:
        self._event = threading.Event()
        self._external = external

    def cancel(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        if self._event.is_set():
            return True
        if self._external is not None and self._external():
            self._event.set()
            return True
        return False
