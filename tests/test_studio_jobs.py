"""The GPU queue (one job at a time, FIFO, positions, cancel while waiting) and the ETA clock."""
from __future__ import annotations

import threading
import time

import pytest

from unianimate.errors import GenerationCancelled
from unianimate.studio.jobs import CancelToken, GpuQueue, Progress, StepClock


def test_fifo_one_at_a_time_and_dead_waiters_do_not_block():
    """Ordered by events, not sleeps: a holds the GPU until released; b's progress callback
    fails and c is cancelled while they wait (both leave the queue); d then waits behind a only."""
    q = GpuQueue()
    order, inside, peak, positions = [], [0], [0], {}
    lock = threading.Lock()
    a_inside, release_a, d_waiting = threading.Event(), threading.Event(), threading.Event()

    def job(name, hold=None, cancel=None, on_wait=None):
        try:
            with q.slot(on_wait=on_wait, should_cancel=cancel):
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                order.append(name)
                if hold is not None:
                    a_inside.set()
                    assert hold.wait(60)
                with lock:
                    inside[0] -= 1
        except (GenerationCancelled, RuntimeError):
            order.append(name + "!")

    def boom(pos):
        raise RuntimeError("progress callback failed")

    def d_queued(pos):
        positions.setdefault("d", pos)
        d_waiting.set()

    a = threading.Thread(target=job, args=("a", release_a))
    a.start()
    assert a_inside.wait(60)
    for args in (("b", None, None, boom), ("c", None, lambda: True)):
        t = threading.Thread(target=job, args=args)
        t.start()
        t.join(60)                              # gave up while a holds the GPU
    d = threading.Thread(target=job, args=("d", None, None, d_queued))
    d.start()
    assert d_waiting.wait(60)
    release_a.set()
    for t in (a, d):
        t.join(60)
    assert order == ["a", "b!", "c!", "d"]
    assert peak[0] == 1 and q.waiting == 0
    assert positions["d"] == 1            # abandoned tickets are not counted as ahead


def test_cancel_token_and_clock():
    flag = {"stop": False}
    token = CancelToken(lambda: flag["stop"])
    assert not token()
    flag["stop"] = True
    assert token() and token()
    other = CancelToken()
    other.cancel()
    assert other()
    clock = StepClock(10)
    assert clock.tick(0) is None
    time.sleep(0.05)
    eta = clock.tick(5)
    assert eta == pytest.approx(clock.elapsed, rel=0.5)
    assert Progress("generating", step=5, total=10).fraction == 0.5
    assert Progress("queued").fraction == 0.0
