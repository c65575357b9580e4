"""A stand-in for the third-party ``spaces`` package that runs ``@spaces.GPU`` generator
functions the way ZeroGPU does (spaces 0.5x, ``spaces/zero/wrappers.py``, read for this):

* ``duration`` (a number or a callable given the call's arguments) is evaluated in the main
  process for every call;
* on the first call a worker process is forked (``multiprocessing`` 'fork' context) and kept for
  later calls; each call's ``(args, kwargs)`` travel to it pickled through a queue, so anything
  unpicklable (a lock, a local closure, a bound method of an object holding a lock) fails there;
* the worker iterates the generator and sends every item back pickled; when the main process
  closes its generator, a stop event is set and the worker closes its copy at the next item;
* an exception in the worker comes back as its class name only (spaces raises a generic error).

Install it with :func:`install`, which returns the module (its ``calls`` record the durations,
the arguments and the worker's pid) and reloads :mod:`unianimate.space` so its decorator sees it.
"""
from __future__ import annotations

import functools
import importlib
import multiprocessing
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

_CTX = multiprocessing.get_context("fork")
_END = "__end__"
_ERROR = "__error__"


def _worker(task: Callable[..., Iterator[Any]], args_q: Any, res_q: Any, stop: Any) -> None:
    while True:
        try:
            payload = args_q.get()
        except (EOFError, OSError):
            return
        if payload is None:
            return
        args, kwargs = pickle.loads(payload)
        stop.clear()
        try:
            gen = task(*args, **kwargs)
            for item in gen:
                if stop.is_set():
                    gen.close()
                    break
                res_q.put(pickle.dumps(item))
        except Exception as err:  # noqa: BLE001 - reported to the main process like spaces does
            res_q.put(pickle.dumps((_ERROR, type(err).__name__)))
        res_q.put(pickle.dumps(_END))


class _Worker:
    def __init__(self, task: Callable[..., Iterator[Any]]) -> None:
        self.args_q = _CTX.SimpleQueue()
        self.res_q = _CTX.SimpleQueue()
        self.stop = _CTX.Event()
        self.process = _CTX.Process(target=_worker, args=(task, self.args_q, self.res_q, self.stop),
                                    daemon=True)
        self.process.start()

    def close(self) -> None:
        self.args_q.put(None)
        self.process.join()


def _make_module() -> types.ModuleType:
    mod = types.ModuleType("spaces")
    mod.calls = []          # type: ignore[attr-defined]  # dicts: duration, args, kwargs, pid
    mod.workers = []        # type: ignore[attr-defined]

    def GPU(task: Callable[..., Any] | None = None, *, duration: Any = None,  # noqa: N802
            size: str | None = None) -> Any:
        def wrap(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
            state: dict[str, _Worker] = {}

            @functools.wraps(fn)
            def handler(*args: Any, **kwargs: Any) -> Iterator[Any]:
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                payload = pickle.dumps((args, kwargs))      # what spaces' queue does
                if "w" not in state or not state["w"].process.is_alive():
                    state["w"] = _Worker(fn)
                    mod.workers.append(state["w"])          # type: ignore[attr-defined]
                worker = state["w"]
                mod.calls.append({"duration": seconds, "args": args, "kwargs": kwargs,  # type: ignore[attr-defined]
                                  "pid": worker.process.pid})
                worker.args_q.put(payload)
                ended = False
                try:
                    while True:
                        item = pickle.loads(worker.res_q.get())
                        if isinstance(item, str) and item == _END:
                            ended = True
                            return
                        if isinstance(item, tuple) and item and item[0] == _ERROR:
                            raise RuntimeError(f"ZeroGPU worker error: {item[1]}")
                        yield item
                finally:
                    if not ended:           # closed early: stop the worker, wait until idle
                        worker.stop.set()
                        while True:
                            item = pickle.loads(worker.res_q.get())
                            if isinstance(item, str) and item == _END:
                                break
            return handler

        return wrap if task is None else wrap(task)

    mod.GPU = GPU  # type: ignore[attr-defined]
    return mod


def install(monkeypatch: Any) -> types.ModuleType:
    """Make ``import spaces`` give the stand-in and reload :mod:`unianimate.space` under it."""
    mod = _make_module()
    monkeypatch.setitem(sys.modules, "spaces", mod)
    import unianimate.space
    importlib.reload(unianimate.space)
    return mod


def uninstall(mod: types.ModuleType) -> None:
    """Stop the workers; reload :mod:`unianimate.space` without the stand-in (call after undo)."""
    for w in mod.workers:  # type: ignore[attr-defined]
        w.close()
    sys.modules.pop("spaces", None)
    import unianimate.space
    importlib.reload(unianimate.space)
