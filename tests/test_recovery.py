"""Recovery: a chosen frame damaged on disk (export names it, re-render repairs it), and a
``kill -9`` during an export (no ffmpeg left running, no half file, the export works after a
restart). Real tiny pipeline and the real ffmpeg."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.studio import Studio
from unianimate.video.writer import probe_media
from tests.test_studio_flow import N, new_project, tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture()
def chosen(tmp_path: Path) -> tuple[Studio, str]:
    """A project whose first segment has a chosen candidate (c0)."""
    studio = Studio(tmp_path / "projects", pipeline_factory=tiny_pipeline)
    p = new_project(studio, tmp_path, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    return studio, p.id


def _children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, name, state) of the live processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2:].split()[:2]
        if int(ppid) == pid:
            out.append((int(stat.parent.name), name, state))
    return out


def _gone(pid: int) -> bool:
    """True when the process no longer runs (a zombie left for its new parent counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def _wait_for(condition, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_damaged_chosen_frame_is_named_and_re_render_repairs_it(chosen) -> None:
    studio, pid = chosen
    before = studio.candidate_frames(pid, "s0", "c0")
    frame = studio.root / pid / "segments/s0/c0/000002.png"
    frame.write_bytes(frame.read_bytes()[:60])               # truncated on disk
    with pytest.raises(InputError) as info:
        studio.export(pid)
    msg = str(info.value)
    assert "frame 2 of segment s0 candidate c0" in msg and "/rerender" in msg
    assert "segment_id='s0'" in msg and "candidate_id='c0'" in msg
    assert str(studio.root) not in msg
    assert not list((studio.root / pid / "exports").iterdir())
    studio.repair_candidate(pid, "s0", "c0")
    np.testing.assert_array_equal(studio.candidate_frames(pid, "s0", "c0"), before)
    assert studio.export(pid).frames == N


CHILD_SCRIPT = textwrap.dedent("""
    import sys, time
    from unianimate.video.writer import start_child
    child = start_child(["sleep", "300"])
    print(child.pid, flush=True)
    time.sleep(300)
""")


def test_a_child_started_by_the_writer_dies_with_its_parent(tmp_path: Path) -> None:
    """``sleep`` ignores a closed pipe: only the death signal ends it when its parent is killed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], env=ENV, stdout=subprocess.PIPE)
    try:
        child = int(proc.stdout.readline())
        assert not _gone(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait_for(lambda: _gone(child), "the child to die with its parent", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


EXPORT_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from unianimate.studio import Studio
    root, pid = sys.argv[1], sys.argv[2]
    result = Studio(root).export(pid)
    print("EXPORTED", result.frames, flush=True)
""")


def test_kill_9_during_an_export_leaves_no_encoder_and_no_half_file(chosen,
                                                                    tmp_path: Path) -> None:
    studio, pid = chosen
    exports = studio.root / pid / "exports"
    frame = studio.root / pid / "segments/s0/c0/000003.png"
    good = frame.read_bytes()
    frame.unlink()
    os.mkfifo(frame)               # reading it blocks: the export stops mid-video, encoder running
    script = tmp_path / "export.py"
    script.write_text(EXPORT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(studio.root), pid], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: any(n.startswith("ffmpeg") for _, n, _ in _children(proc.pid))
                  or proc.poll() is not None, "the export's ffmpeg")
        assert proc.poll() is None, proc.stderr.read().decode()
        encoders = [p for p, n, _ in _children(proc.pid) if n.startswith("ffmpeg")]
        assert list(exports.glob(".*.mp4"))                    # the temp file being written
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait_for(lambda: all(_gone(p) for p in encoders), "the encoder to die with the app", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"EXPORTED" not in proc.stdout.read()
    assert not [f for f in exports.iterdir() if not f.name.startswith(".")]   # no half file
    frame.unlink()
    frame.write_bytes(good)
    # restart (a new process): the dead writer's temp file goes, the export works again
    out = subprocess.run([sys.executable, str(script), str(studio.root), pid], env=ENV,
                         capture_output=True, timeout=300)
    assert f"EXPORTED {N}".encode() in out.stdout, out.stderr.decode()
    assert not list(exports.glob(".*"))
    videos = list(exports.iterdir())
    assert len(videos) == 1 and videos[0].suffix == ".mp4" and probe_media(videos[0]).frames == N
