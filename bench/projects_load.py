"""Load on the project store: 1,000 projects on disk, how long list / open / timeline take.

Set-up: one real project is made with the tiny pipeline (reference, 40 poses, a first segment
with 2 candidates, one chosen, a continuation with 1 candidate chosen), then copied to N projects
(default 1,000) spread over owners: ``--owners`` owners of ``N / owners`` projects each (the
caller of the main table owns that many), plus rows for a caller owning none and for one owning
``--big`` projects. Each copy gets its own id and is recorded through the store like a new
project (salted owner hash, index entry), so the folder is what the app would have.

Measured, per call (wall time, perf_counter), through the UI handlers the endpoints run (no HTTP:
Gradio's queue adds its own constant):
  * list      ``StudioHandlers.list_projects``  (``/list_projects``)
  * open      ``StudioHandlers.view``           (``/open_project``: the whole page of a project)
  * timeline  ``StudioHandlers.timeline``       (``/timeline``)
and the service call under ``list`` (``Studio.list_projects``); then the same three endpoints over
HTTP (the app launched on 127.0.0.1, ``gradio_client``: Gradio's queue and JSON included; the
typical owner's projects are given to that client's session). Sequential: 50 calls in a row
(after 3 warm-up calls). Concurrent: 10 threads x 5 calls each (over HTTP one client per thread),
started together by a barrier. The table prints p50 / p95 / max in milliseconds.

Usage: python bench/projects_load.py [--projects 1000] [--owners 100] [--big 100]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(1)

from ui.handlers import StudioHandlers  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.studio.manifest import load_project, manifest_path  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _token(i: int) -> str:
    return f"{i:032x}"


def build(root: Path, projects: int, owners: int, big: int) -> tuple[StudioHandlers, dict]:
    """The projects folder: one real project copied ``projects`` times over the owners."""
    models = ModelManager("tiny")
    ui = StudioHandlers(build_studio(root, models), models)
    studio = ui.studio
    tok = _token(0)
    pid, _, _ = ui.create_project(tok, str(ASSETS / "example_reference.png"), "custom", 64, 64,
                                  "crop", "template")
    ui.load_pose_file(tok, pid, [str(ASSETS / "example_dance.json")], 0, 0, 1, True)
    ui.generate_candidates(tok, pid, None, 3, 1, 2.5, 949, 0, 2)
    ui.choose(tok, pid, "s0", "c1")
    ui.continue_segment(tok, pid)
    ui.generate_candidates(tok, pid, "s1", 3, 1, 2.5, 949, 0, 1)
    ui.choose(tok, pid, "s1", "c0")
    template = root / pid
    plan = [(1 + i % owners) for i in range(projects - big - 1)] + [owners + 1] * big
    owned: dict[int, list[str]] = {}
    for owner_index in plan:
        new = uuid.uuid4().hex[:12]
        shutil.copytree(template, root / new)
        project = load_project(root / new, json.loads(manifest_path(root / new).read_text())
                               | {"id": new})
        studio.store.create(project, f"u-{_token(owner_index)}")
        owned.setdefault(owner_index, []).append(new)
    return ui, owned


def measure(fn: Callable[[int], object], sequential: int, threads: int, per_thread: int
            ) -> dict[str, list[float]]:
    """``fn(thread_index)`` timed: ``sequential`` calls in a row, then ``threads`` x
    ``per_thread`` calls at once."""
    for _ in range(3):
        fn(0)
    seq = []
    for _ in range(sequential):
        t0 = time.perf_counter()
        fn(0)
        seq.append((time.perf_counter() - t0) * 1e3)
    conc: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            fn(index)
            with lock:
                conc.append((time.perf_counter() - t0) * 1e3)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"sequential": seq, "concurrent": conc}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=1000)
    ap.add_argument("--owners", type=int, default=100, help="at least 10 (one per HTTP thread)")
    ap.add_argument("--big", type=int, default=100, help="projects of the one big owner")
    ap.add_argument("--keep", action="store_true", help="keep the projects folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="unianimate-load-")) / "projects"
    t0 = time.perf_counter()
    ui, owned = build(root, args.projects, args.owners, args.big)
    on_disk = sum(1 for p in root.iterdir() if not p.name.startswith("."))
    print(f"{on_disk} projects on disk in {root} (built in {time.perf_counter() - t0:.0f} s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    typical = 1
    tok = _token(typical)
    pid = owned[typical][0]
    cases: list[tuple[str, Callable[[int], object]]] = [
        (f"list (owns {len(owned[typical])})", lambda _: ui.list_projects(tok)),
        (f"Studio.list_projects (owns {len(owned[typical])})",
         lambda _: ui.studio.list_projects(owner=f"u-{tok}")),
        ("list (owns 0)", lambda _: ui.list_projects(_token(10**6))),
        (f"list (owns {len(owned[args.owners + 1])})",
         lambda _: ui.list_projects(_token(args.owners + 1))),
        ("open (view)", lambda _: ui.view(tok, pid)),
        ("timeline", lambda _: ui.timeline(tok, pid)),
    ]
    print("\n| call | mode | calls | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|")
    _table(cases)
    _table(_http_cases(ui, root, owned))
    if not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)


def _table(cases: list[tuple[str, Callable[[int], object]]]) -> None:
    for name, fn in cases:
        res = measure(fn, 50, 10, 5)
        for mode, values in res.items():
            label = "50 sequential" if mode == "sequential" else "10 threads x 5"
            print(f"| {name} | {label} | {len(values)} | {pct(values, 0.5):.1f} | "
                  f"{pct(values, 0.95):.1f} | {max(values):.1f} |", flush=True)


def _http_cases(ui: StudioHandlers, root: Path, owned: dict[int, list[str]]
                ) -> list[tuple[str, Callable[[int], object]]]:
    """The same endpoints through the launched app: thread i is an API client of its own session,
    owning owner i+1's projects (a session's queue stream serves one client at a time)."""
    import socket

    from gradio_client import Client

    from ui.blocks import build_ui, launch_kwargs
    demo = build_ui(ui.studio, ui.models, handlers=ui)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(root, port=port))
    clients, pids = [], []
    for i in range(10):
        session = f"benchsession{i}"
        ui.studio.store.transfer(f"u-{_token(i + 1)}", f"s-{session}")
        c = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        c.session_hash = session
        clients.append(c)
        pids.append(owned[i + 1][0])
    owns = len(owned[1])
    return [(f"HTTP /list_projects (owns ~{owns})",
             lambda i: clients[i].predict(api_name="/list_projects")),
            ("HTTP /open_project", lambda i: clients[i].predict(pids[i], None,
                                                                 api_name="/open_project")),
            ("HTTP /timeline", lambda i: clients[i].predict(pids[i], api_name="/timeline"))]


if __name__ == "__main__":
    main()
