"""What the browser may fetch, and what a session leaves behind.

The projects folder is never served. A project file the UI shows is linked (or copied) into a
folder of this app under Gradio's cache, at an unguessable path made for the session that asked;
Gradio serves it from there. When the session ends its folder goes, and so do its uploads — but
only uploads no other live session holds and that are not copies of the example files, because
Gradio's upload folder is content-addressed and shared (two sessions uploading the same bytes get
the same path, and clicking an example row hands every session the same cached copy).

Bounds: each session keeps at most ``max_session_bytes`` of served copies (least recently handed
out go first), uploads are journalled so the next start removes what a killed app left, and the
served folders of app processes that no longer run are removed at start.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from unianimate.studio.store import pid_alive
from unianimate.utils import file_sha256

log = logging.getLogger(__name__)

SERVED_DIR = "unianimate-served"
JOURNAL = "uploads.journal"


class SessionFiles:
    """Per-session served copies of project files and the session's uploads."""

    def __init__(self, cache_dir: str | os.PathLike, state_dir: str | os.PathLike,
                 protected: list[Path] | None = None,
                 max_session_bytes: int = 512 * 2**20) -> None:
        self.cache_dir = Path(cache_dir).resolve()
        self.base = self.cache_dir / SERVED_DIR / f"{os.getpid()}-{secrets.token_hex(8)}"
        self.journal = Path(state_dir) / JOURNAL
        self.max_session_bytes = int(max_session_bytes)
        self._protected = {(p.stat().st_size, file_sha256(p)) for p in (protected or []) if p.is_file()}
        self._lock = threading.Lock()
        #: session key -> OrderedDict[(source, mtime_ns, size) -> (served path, bytes)]
        self._served: dict[str, OrderedDict[tuple[str, int, int], tuple[Path, int]]] = {}
        #: upload path -> session keys holding it
        self._uploads: dict[str, set[str]] = {}
        self._sweep_at_start()

    @staticmethod
    def key(session_hash: str) -> str:
        """A session's folder name (the session hash itself is not written to disk)."""
        return hashlib.sha256(session_hash.encode()).hexdigest()[:24]

    # ---- served copies ---------------------------------------------------------------------
    def serve(self, session: str, source: Path) -> str:
        """A path under Gradio's cache holding ``source``'s bytes, for this session only."""
        st = source.stat()
        ident = (str(source), st.st_mtime_ns, st.st_size)
        with self._lock:
            files = self._served.setdefault(session, OrderedDict())
            hit = files.get(ident)
            if hit is not None and hit[0].is_file():
                files.move_to_end(ident)
                return str(hit[0])
            dest = self.base / session / secrets.token_hex(12) / source.name
            dest.parent.mkdir(parents=True)
            try:
                os.link(source, dest)        # no second copy of the bytes on the same disk
            except OSError:
                shutil.copyfile(source, dest)
            files[ident] = (dest, st.st_size)
            self._evict(files, keep=ident)
            return str(dest)

    def _evict(self, files: OrderedDict[tuple[str, int, int], tuple[Path, int]],
               keep: tuple[str, int, int]) -> None:
        total = sum(size for _, size in files.values())
        while total > self.max_session_bytes and len(files) > 1:
            ident, (path, size) = next(iter(files.items()))
            if ident == keep:
                break
            del files[ident]
            shutil.rmtree(path.parent, ignore_errors=True)
            total -= size

    # ---- uploads ---------------------------------------------------------------------------
    def claim_upload(self, session: str, path: str | os.PathLike) -> None:
        """Record that ``session`` handed in this upload (removed when no session holds it)."""
        p = Path(path).resolve()
        if not p.is_relative_to(self.cache_dir):
            return                                   # not an upload (a test's own file, ...)
        with self._lock:
            holders = self._uploads.setdefault(str(p), set())
            if not holders:
                with open(self.journal, "a", encoding="utf-8") as fh:
                    fh.write(str(p) + "\n")
            holders.add(session)

    def end_session(self, session: str) -> None:
        """Remove the session's served copies and the uploads only it held."""
        with self._lock:
            self._served.pop(session, None)
            orphans = []
            for path, holders in list(self._uploads.items()):
                holders.discard(session)
                if not holders:
                    del self._uploads[path]
                    orphans.append(Path(path))
        shutil.rmtree(self.base / session, ignore_errors=True)
        for path in orphans:
            self._remove_upload(path)

    def _remove_upload(self, path: Path) -> None:
        try:
            if not path.is_file() or self._is_protected(path):
                return
            path.unlink()
            path.parent.rmdir()                      # Gradio's per-upload folder, when empty
        except OSError:
            pass                                     # gone already, or the folder is not empty

    def _is_protected(self, path: Path) -> bool:
        size = path.stat().st_size
        return any(size == s for s, _ in self._protected) and \
            (size, file_sha256(path)) in self._protected

    # ---- start -----------------------------------------------------------------------------
    def _sweep_at_start(self) -> None:
        """Served folders of app processes that are gone, and uploads a killed app journalled."""
        root = self.cache_dir / SERVED_DIR
        if root.is_dir():
            for folder in root.iterdir():
                pid = folder.name.split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                    shutil.rmtree(folder, ignore_errors=True)
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            p = Path(line)
            if line and p.is_relative_to(self.cache_dir) and \
                    time.time() - _mtime(p) > 60:    # not one a second app just received
                self._remove_upload(p)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self.journal.write_text("", encoding="utf-8")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


__all__ = ["SessionFiles", "SERVED_DIR"]
