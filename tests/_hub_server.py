"""A local Hugging Face Hub for the tests: a real HTTP server on 127.0.0.1 that answers what
``huggingface_hub.hf_hub_download`` (2.x) asks, used through ``HF_ENDPOINT``.

What the client does (read in huggingface_hub/file_download.py): ``HEAD
/{repo}/resolve/{revision}/{path}`` with redirects followed, then it needs ``X-Repo-Commit``
(else "does not seem to be served by a Hugging Face Hub endpoint"), an ``ETag`` (``X-Linked-Etag``
preferred) and the size (``X-Linked-Size`` or ``Content-Length``); then ``GET`` of the same URL,
streamed into ``blobs/<etag>.incomplete``; a dropped connection is resumed with ``Range:
bytes=N-`` (up to 5 tries, 1 s apart); a body that ends short of the announced size raises
"Consistency check failed". Errors are told apart by ``X-Error-Code``: ``RepoNotFound`` (401 as
the real Hub answers for a missing or private repo), ``EntryNotFound`` (404),
``RevisionNotFound`` (404).

Files are served from a dict ``repo_id -> {path: bytes}``; ``faults[(repo_id, path)]`` makes a
file misbehave: ``"cut"`` (the first GET stops half-way and closes the connection, every later
GET answers 503), ``"cut_once"`` (the first GET stops half-way, later ones are served, ``Range:
bytes=N-`` honoured) or ``"short"`` (HEAD announces the full size, GET sends a shorter body).
``requests`` records every (method, path) served.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests._net import free_port


def fresh_hf_home(tmp_path: Path, monkeypatch: Any, offline: bool) -> Path:
    """An empty Hugging Face home in ``tmp_path`` (``HF_HOME``; no ``HF_HUB_CACHE``), with
    downloads off (``HF_HUB_OFFLINE=1``) or allowed."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return home


class LocalHub:
    """The server; ``with LocalHub(repos) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, repos: dict[str, dict[str, bytes]] | None = None) -> None:
        self.repos: dict[str, dict[str, bytes]] = {k: dict(v) for k, v in (repos or {}).items()}
        self.faults: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self._gets: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- content ----------------------------------------------------------------------------
    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        self.repos.setdefault(repo_id, {})[path] = data

    def add_folder(self, repo_id: str, folder: Path, prefix: str = "") -> None:
        """Every file under ``folder`` (recursively), at ``prefix/relative path`` in the repo."""
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                rel = f.relative_to(folder).as_posix()
                self.add_file(repo_id, f"{prefix}/{rel}" if prefix else rel, f.read_bytes())

    def commit(self, repo_id: str) -> str:
        """The repo's commit hash: 40 hex digits derived from its content."""
        h = hashlib.sha1(repo_id.encode())
        for path, data in sorted(self.repos.get(repo_id, {}).items()):
            h.update(path.encode() + hashlib.sha256(data).digest())
        return h.hexdigest()

    def network_requests(self) -> int:
        with self._lock:
            return len(self.requests)

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "LocalHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, head=True)

            def do_GET(self) -> None:  # noqa: N802
                hub._answer(self, head=False)

        port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # ---- protocol ---------------------------------------------------------------------------
    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str | None, message: str,
               commit: str | None = None) -> None:
        body = message.encode()
        handler.send_response(status)
        if code:
            handler.send_header("X-Error-Code", code)
            handler.send_header("X-Error-Message", message)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        with self._lock:
            self.requests.append((handler.command, path))
        parts = path.lstrip("/").split("/")
        # /{owner}/{name}/resolve/{revision}/{path...}
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(handler, 404, None, f"not a file URL: {path}")
            return
        repo_id, revision, file_path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        files = self.repos.get(repo_id)
        if files is None:
            self._error(handler, 401, "RepoNotFound", "Repository not found")
            return
        commit = self.commit(repo_id)
        if revision not in ("main", commit):
            self._error(handler, 404, "RevisionNotFound", "Invalid rev id: " + revision)
            return
        data = files.get(file_path)
        if data is None:
            self._error(handler, 404, "EntryNotFound", "Entry not found", commit)
            return
        etag = hashlib.sha256(data).hexdigest()
        fault = self.faults.get((repo_id, file_path))
        start = 0
        rng = handler.headers.get("Range")
        if not head:
            with self._lock:
                n = self._gets[(repo_id, file_path)] = self._gets.get((repo_id, file_path), 0) + 1
            if fault == "cut" and n > 1:
                self._error(handler, 503, None, "Service Unavailable")
                return
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
            if fault == "cut_once" and n == 1:
                fault = "cut"
        body = data[start:]
        announced = len(body)
        if not head and fault == "short":
            body = body[: len(body) // 2]
            announced = len(body)
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Type", "application/octet-stream")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(announced))
        if not head and fault == "cut":
            handler.send_header("Connection", "close")
        handler.end_headers()
        if head:
            return
        if fault == "cut":
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)
