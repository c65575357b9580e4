"""The GPU queue (one job at a time, FIFO, positions, cancel while waiting) and the ETA clock."""
from __future__ import annotations

import threading
import time

import pytest

from unianimate.errors import GenerationCancelled
from unianimate.studio.jobs import CancelToken, GpuQueue, Progress, StepClock


def test_fifo_one_at_a_time_and_dead_waiters_do_not_block():
    q = GpuQueue()
    order, inside, peak, positions = [], [0], [0], {}
    lock = threading.Lock()

    def job(name, hold, cancel=None, on_wait=None):
        try:
            with q.slot(on_wait=on_wait, should_cancel=cancel):
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                order.append(name)
                time.sleep(hold)
                with lock:
                    inside[0] -= 1
        except (GenerationCancelled, RuntimeError):
            order.append(name + "!")

    def boom(pos):
        raise RuntimeError("progress callback failed")

    threads = [threading.Thread(target=job, args=("a", 0.3)),
               threading.Thread(target=job, args=("b", 0.05, None, boom)),
               threading.Thread(target=job, args=("c", 0.05, lambda: True)),
               threading.Thread(target=job, args=("d", 0.05, None,
                                                  lambda pos: positions.setdefault("d", pos)))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
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
