"""Network helpers shared by the tests that start a real server on loopback."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_app(tmp_path: Path, env: dict[str, str], *args: str,
                timeout_s: float = 120) -> Iterator[tuple[str, Path]]:
    """``python app.py`` in a subprocess on a free port, projects in ``tmp_path/projects``, its
    output in ``tmp_path/app.log``; yields (url, log path) once ``/`` answers 200, and stops it
    afterwards. Fails with the log when the app exits or does not answer in ``timeout_s``."""
    port = free_port()
    log = tmp_path / "app.log"
    env = dict(env, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--projects-dir",
                                 str(tmp_path / "projects"), *args],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(30)
