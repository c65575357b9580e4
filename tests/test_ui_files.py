"""ui.files: per-session served copies and uploads, removed when no longer needed, never a file
another session or the examples still use."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from ui.files import SERVED_DIR, SessionFiles  # noqa: E402


def _upload(cache: Path, name: str, data: bytes) -> Path:
    """A file where Gradio puts an upload: <cache>/<content hash>/<name>."""
    folder = cache / f"h{abs(hash(data))}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[SessionFiles, Path, Path]:
    cache, state = tmp_path / "gradio", tmp_path / "state"
    example = tmp_path / "assets" / "example.png"
    example.parent.mkdir()
    example.write_bytes(b"example bytes")
    return SessionFiles(cache, state, protected=[example]), cache, state


def test_served_copies_are_per_session_reused_and_removed_with_the_session(setup, tmp_path):
    files, cache, _ = setup
    src = tmp_path / "projects" / "p" / "poster.png"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"poster v1")
    a1, a2, b = files.serve("a", src), files.serve("a", src), files.serve("b", src)
    assert a1 == a2 != b
    assert Path(a1).is_relative_to(cache / SERVED_DIR) and Path(a1).read_bytes() == b"poster v1"
    src.unlink()
    src.write_bytes(b"poster v2, longer")                    # replaced: a new copy
    a3 = files.serve("a", src)
    assert a3 != a1 and Path(a3).read_bytes() == b"poster v2, longer"
    files.end_session("a")
    assert not Path(a1).exists() and not Path(a3).exists() and Path(b).is_file()


def test_a_session_keeps_a_bounded_amount_of_copies(tmp_path: Path) -> None:
    files = SessionFiles(tmp_path / "gradio", tmp_path / "state", max_session_bytes=250)
    served = []
    for i in range(5):
        src = tmp_path / f"f{i}.bin"
        src.write_bytes(bytes(100))
        served.append(files.serve("a", src))
    alive = [Path(p).exists() for p in served]
    assert alive == [False, False, False, True, True]


def test_uploads_go_when_no_session_holds_them_and_examples_stay(setup) -> None:
    files, cache, _ = setup
    mine = _upload(cache, "mine.png", b"only mine")
    shared = _upload(cache, "same.png", b"two sessions uploaded these bytes")
    example = _upload(cache, "example.png", b"example bytes")   # the example row's copy
    for path in (mine, shared, example):
        files.claim_upload("a", path)
    files.claim_upload("b", shared)
    files.claim_upload("b", example)
    files.end_session("a")
    assert not mine.exists() and not mine.parent.exists()
    assert shared.is_file() and example.is_file()
    files.end_session("b")
    assert not shared.exists() and example.is_file()


def test_a_start_removes_what_a_killed_app_left(setup, tmp_path: Path) -> None:
    files, cache, state = setup
    old = _upload(cache, "old.png", b"left by a killed app")
    fresh = _upload(cache, "fresh.png", b"just received by another app")
    files.claim_upload("a", old)
    files.claim_upload("a", fresh)
    os.utime(old, (1, 1))
    dead = cache / SERVED_DIR / "999999999-abc"              # no such process
    (dead / "s").mkdir(parents=True)
    alive = cache / SERVED_DIR / f"{os.getppid()}-abc"
    alive.mkdir()
    SessionFiles(cache, state)                               # the next start
    assert not old.exists() and fresh.is_file()
    assert not dead.exists() and alive.is_dir()
    outside = tmp_path / "not-an-upload.png"
    outside.write_bytes(b"x")
    files.claim_upload("a", outside)                         # a path outside the cache
    files.end_session("a")
    assert outside.is_file()
