"""Download the missing weights in the background, with byte progress, for a UI to poll.

:class:`WeightsDownload` fetches what :func:`unianimate.hub.missing_files` reports (the VAE through
:func:`unianimate.hub.resolve_vae`, so its source order applies) in one background thread; the
app keeps serving meanwhile. :meth:`WeightsDownload.state` returns a snapshot (status, current
file, bytes done/total, files done/total, the error message). No Gradio here.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from . import hub
from .errors import UniAnimateError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownloadState:
    """A snapshot of a download job."""

    status: str = "idle"            # idle | running | done | failed
    current: str | None = None      # file being downloaded
    done_bytes: int = 0             # of the current file
    total_bytes: int | None = None  # of the current file (None: not known yet)
    files_done: int = 0
    files_total: int = 0
    error: str | None = None
    started: float | None = None

    def describe(self) -> str:
        """One line for a status display."""
        if self.status == "idle":
            return "No download started."
        if self.status == "done":
            return f"Download finished: {self.files_done} file(s) in the Hugging Face cache."
        if self.status == "failed":
            return f"Download failed: {self.error}"
        if self.current is None:
            return f"Preparing the download ({self.files_total} file(s))…"
        size = (f"{self.done_bytes / 2**20:,.1f} / {self.total_bytes / 2**20:,.1f} MiB"
                if self.total_bytes else f"{self.done_bytes / 2**20:,.1f} MiB")
        return (f"Downloading {self.current} ({self.files_done + 1}/{self.files_total}): {size}")

    @property
    def fraction(self) -> float:
        """Progress of the current file in [0, 1] (0 when its size is unknown)."""
        return min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 0.0


class WeightsDownload:
    """One background download of the missing weights of ``source`` (see :mod:`unianimate.hub`).

    huggingface_hub checks each download against the size the Hub announces; the released
    files' size table (``hub.MIN_BYTES``) is applied when the model is loaded.
    """

    def __init__(self, source: str | os.PathLike | None = None) -> None:
        self.source = source
        self._state = DownloadState()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def state(self) -> DownloadState:
        with self._lock:
            return self._state

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def needed(self) -> list[hub.HubFile]:
        """What is missing now (never touches the network)."""
        return hub.missing_files(self.source)

    def start(self) -> bool:
        """Start the download in a background thread; False when one is already running or
        downloads are off (``HF_HUB_OFFLINE``) or ``source`` is a local folder."""
        if hub.offline() or hub.is_local_source(self.source):
            return False
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._state = DownloadState(status="running", started=time.time())
            self._thread = threading.Thread(target=self._run, name="unianimate-download",
                                            daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> DownloadState:
        """Block until the running download ends (for tests and scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state()

    def _progress_class(self) -> type:
        job = self

        class Progress:
            """The tqdm interface huggingface_hub drives (context manager + update)."""

            def __init__(self, *args: Any, total: int | None = None, initial: int = 0,
                         **kwargs: Any) -> None:
                self.n = int(initial or 0)
                job._set(done_bytes=self.n, total_bytes=total)

            def update(self, n: int = 1) -> None:
                self.n += int(n)
                job._set(done_bytes=self.n)

            def __enter__(self) -> "Progress":
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def close(self) -> None:
                pass

        return Progress

    def _run(self) -> None:
        try:
            missing = self.needed()
            keys = [f.key for f in missing]
            vae = [k for k in keys if k.startswith("vae_")]
            plan = [k for k in keys if k not in vae] + (["vae"] if vae else [])
            self._set(files_total=len(plan))
            bars = self._progress_class()
            for i, key in enumerate(plan):
                name = "the VAE" if key == "vae" else hub.FILES[key].filename
                self._set(current=name, done_bytes=0, total_bytes=None, files_done=i)
                if key == "vae":
                    hub.resolve_vae(self.source, local_files_only=False, tqdm_class=bars)
                else:
                    hub.resolve_file(key, self.source, local_files_only=False, tqdm_class=bars)
            self._set(status="done", current=None, files_done=len(plan))
            logger.info("weights download finished (%d file(s))", len(plan))
        except UniAnimateError as err:
            logger.warning("weights download failed: %s", err)
            self._set(status="failed", error=str(err))
        except Exception as err:  # noqa: BLE001 - a background thread must report, not vanish
            logger.exception("weights download failed")
            self._set(status="failed", error=f"{type(err).__name__}: {err}")


__all__ = ["DownloadState", "WeightsDownload"]
