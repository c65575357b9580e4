"""The UI handlers called as plain functions over a real Studio with the tiny pipeline."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from ui.handlers import SLOTS, VIEW_FIELDS, StudioHandlers, parse_size  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ALICE, BOB = "a" * 32, "b" * 32          # owner tokens of two browser sessions


@pytest.fixture()
def ui(tmp_path: Path) -> StudioHandlers:
    models = ModelManager("tiny")
    return StudioHandlers(build_studio(tmp_path / "projects", models), models)


def _project(ui: StudioHandlers, token: str = ALICE, poses: bool = True) -> str:
    pid, msg, data = ui.create_project(token, REF, "custom", 64, 64, "crop", "t")
    assert data["width"] == 64 and "created" in msg
    if poses:
        msg, data = ui.load_pose_file(token, pid, [DANCE], 0, 0, 1, True)
        assert "40 poses" in msg and data["poses"] == 40
    return pid


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args, **kwargs)
    return str(info.value.message)


def test_parse_size_presets_and_custom() -> None:
    assert parse_size("512x768", None, None) == (512, 768)
    assert parse_size("768x512", 1, 1) == (768, 512)
    assert parse_size("768x1216", None, None) == (768, 1216)
    assert parse_size("custom", 128, 192.0) == (128, 192)
    from unianimate.errors import InputError
    for w, h in ((100, 192), (0, 64), (64.5, 64), ("x", 64), (4096, 64)):
        with pytest.raises(InputError):
            parse_size("custom", w, h)
    with pytest.raises(InputError):
        parse_size("999x999", None, None)


def test_bad_uploads_give_clear_messages_and_the_handlers_keep_working(
        ui: StudioHandlers, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    assert "empty" in _error(ui.create_project, ALICE, str(empty), "512x768", 0, 0, "crop", None).lower()
    msg = _error(ui.create_project, ALICE, str(text), "512x768", 0, 0, "crop", None)
    assert "image" in msg.lower()
    assert "reference image" in _error(ui.create_project, ALICE, None, "512x768", 0, 0, "crop", "")
    assert "multiple of 64" in _error(ui.create_project, ALICE, REF, "custom", 100, 64, "crop", "")

    pid = _project(ui, poses=False)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "unianimate-pose", "version": 1, "fps": 8,
                                 "width": 64, "height": 64,
                                 "frames": [{"body": [[0.5, 0.5]] * 3}]}))
    msg = _error(ui.load_pose_file, ALICE, pid, [str(wrong)], 0, 0, 1, True)
    assert "body" in msg and "frame 0" in msg
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "JSON" in _error(ui.load_pose_file, ALICE, pid, [str(broken)], 0, 0, 1, True)
    zero = tmp_path / "zero.json"
    zero.write_bytes(b"")
    assert _error(ui.load_pose_file, ALICE, pid, [str(zero)], 0, 0, 1, True)
    assert "pose sequence" in _error(ui.load_pose_file, ALICE, pid, None, 0, 0, 1, True)
    assert "frame interval" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 0, True)
    assert "driving video" in _error(ui.extract_poses, ALICE, pid, None, 0, 0, 1, True)

    # still serving: the same project takes a good pose file afterwards
    msg, data = ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, False)
    assert data["poses"] == 40 and "not aligned" in msg


def test_choose_or_export_too_early_and_unknown_projects(ui: StudioHandlers) -> None:
    pid = _project(ui)
    assert "generate candidates" in _error(ui.choose, ALICE, pid, None, "c7")
    assert "nothing to export" in _error(ui.export, ALICE, pid, 18, False, False, True).lower()
    assert "Continue" not in _error(ui.continue_segment, ALICE, pid)
    assert "no project" in _error(ui.view, ALICE, "ffffffffffff")
    assert "not a valid project id" in _error(ui.timeline, ALICE, "../etc")
    assert "no project is open" in _error(ui.generate_candidates, ALICE, None, None, 4, 2, 2.5,
                                          949, 0, 1)
    assert ui.cancel(ALICE, pid) == "Nothing is running for this project."
    msg = _error(ui.generate_candidates, ALICE, pid, None, 64, 2, 2.5, 949, 0, 1)
    assert "40 frames, fewer than one segment of 64" in msg


def test_a_project_folder_edited_into_nonsense(ui: StudioHandlers) -> None:
    pid = _project(ui, poses=False)
    manifest = ui.studio.root / pid / "manifest.json"
    data = json.loads(manifest.read_text())
    data["segments"] = "nonsense"
    data["reference"]["fitted"] = "../../etc/passwd"
    manifest.write_text(json.dumps(data))
    update, rows = ui.list_projects(ALICE)
    assert rows[0]["id"] == pid and rows[0]["error"]
    assert "damaged" in update["choices"][0][0]
    assert _error(ui.view, ALICE, pid)
    assert ui.create_project(ALICE, REF, "custom", 64, 64, "pad", "next")[0] != pid


def test_view_survives_a_missing_poster(ui: StudioHandlers) -> None:
    """A chosen candidate's poster deleted by hand: the view still opens (gr.Gallery cannot
    postprocess a None image), the gallery just leaves it out."""
    pid = _project(ui)
    seg, _, _ = ui.generate_candidates(ALICE, pid, None, 3, 1, 2.5, 949, 0, 1)
    ui.choose(ALICE, pid, seg, "c0")
    (ui.studio.root / pid / "segments" / seg / "c0" / "poster.png").unlink()
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid)))
    assert view["path_gallery"] == []
    gr.Gallery().postprocess(view["path_gallery"])


def test_sessions_see_only_their_own_projects(ui: StudioHandlers) -> None:
    pid = _project(ui, ALICE, poses=False)
    update, rows = ui.list_projects(ALICE)
    assert [r["id"] for r in rows] == [pid]
    update, rows = ui.list_projects(BOB)
    assert rows == [] and update["choices"] == []
    assert "no project" in _error(ui.view, BOB, pid)
    assert "no project" in _error(ui.load_pose_file, BOB, pid, [DANCE], 0, 0, 1, True)
    # a session without a stored token falls back to its Gradio session hash
    req = gr.Request(session_hash="abc123")
    assert ui.owner_of(None, req) == "s-abc123" != ui.owner_of(ALICE, req)
    token, same, update, status = ui.init_session(None, req)
    assert token == same and len(token) == 32 and "tiny" in status.lower()
    assert ui.init_session(ALICE, req)[0] == ALICE
    assert ui.init_session("../../evil", req)[0] != "../../evil"


def test_view_generate_choose_continue_reroll_export(ui: StudioHandlers) -> None:
    pid = _project(ui)
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid)))
    assert view["reference_preview"].endswith("fitted.png")
    assert view["pose_video"].endswith(".mp4") and view["pose_overlay"].endswith(".png")
    assert view["frames_per_segment"] == 8 and view["steps"] == 4     # tiny defaults

    seg, msg, cands = ui.generate_candidates(ALICE, pid, None, 3, 2, 2.5, 949, 5, 2)
    assert seg == "s0" and "2 candidate(s)" in msg
    assert [c["seed"] for c in cands] == [5, 6] and all(c["status"] == "done" for c in cands)
    assert all(c["measures"]["stability"] is not None for c in cands)
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))
    assert view["slot0_video"]["value"].endswith("preview.mp4")
    assert "seed 6" in view["slot1_info"]["value"] and not view[f"slot{SLOTS - 1}_info"]["visible"]
    assert [r[0] for r in view["measures"]] == ["c0", "c1"]

    assert "no candidate 'c9'" in _error(ui.choose, ALICE, pid, seg, "c9")
    msg, tl = ui.choose(ALICE, pid, seg, "c1")
    assert "Chose c1" in msg and tl["total_frames"] == 3
    seg1, msg, tl = ui.continue_segment(ALICE, pid)
    assert seg1 == "s1" and "poses 2–4" in msg
    seg1_, msg, cands1 = ui.reroll(ALICE, pid, seg1, 1)
    assert seg1_ == "s1" and [c["seed"] for c in cands1] == [1005]
    assert cands1[0]["measures"]["seam"] is not None
    ui.choose(ALICE, pid, seg1, "c0")
    # re-roll the first segment and choose the new take: a second branch appears
    _, _, more = ui.reroll(ALICE, pid, "s0", 1)
    assert [c["id"] for c in more] == ["c0", "c1", "c2"]
    msg, tl = ui.choose(ALICE, pid, "s0", "c2")
    assert [s["id"] for s in tl["path"]] == ["s0"]
    seg_b, _, tl = ui.continue_segment(ALICE, pid)
    assert seg_b == "s2" and tl["tree"][0]["branch_point"]
    back, msg, tl = ui.select_branch(ALICE, pid, "s1")
    assert [s["id"] for s in tl["path"]] == ["s0", "s1"] and tl["total_frames"] == 5
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid)))
    assert "(fork: 2 branches)" in view["timeline_md"] and len(view["path_gallery"]) == 2

    video, files, msg = ui.export(ALICE, pid, 23, True, True, True)
    assert video.endswith(".mp4") and len(files) == 3 and "5 frames" in msg
    # what the browser gets are this session's copies in Gradio's cache, never a path into the
    # projects folder, byte for byte the exported files
    projects = ui.studio.root
    exported = {p.name: p.read_bytes() for p in (projects / pid / "exports").iterdir()}
    assert len(exported) == 3
    for f in files:
        assert Path(f).resolve().is_relative_to(ui.files.base)
        assert not Path(f).resolve().is_relative_to(projects)
        assert Path(f).read_bytes() == exported[Path(f).name]


def test_cancel_stops_a_running_generation(ui: StudioHandlers) -> None:
    pid = _project(ui)
    out: dict[str, object] = {}

    def run() -> None:
        out["result"] = ui.generate_candidates(ALICE, pid, None, 3, 50, 2.5, 949, 0, 2)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ui.studio.cancel(pid, owner=ui.owner_of(ALICE)):
        time.sleep(0.05)
    worker.join(120)
    assert not worker.is_alive()
    seg, msg, cands = out["result"]
    assert "cancelled" in msg.lower()
    assert cands and cands[-1]["status"] == "interrupted"
    # the app keeps working for this project afterwards
    assert ui.timeline(ALICE, pid)["tree"][0]["id"] == "s0"


def test_model_status_tiny_and_missing_real_weights(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = ModelManager("tiny")
    assert "tiny random-weight" in tiny.status_markdown()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    real = ModelManager("real")
    ui = StudioHandlers(build_studio(tmp_path / "projects", real), real)
    text = ui.model_status()
    assert "unianimate_16f_32f_non_ema_223000.pth" in text and "hf download" in text
    assert "HF_HUB_OFFLINE" in text and "--model tiny" in text
    after = ui.load_model()              # no weights, no network: a message, not a crash
    assert "Last attempt failed" in after and "missing" in after
    assert "does not exist" in ModelManager(str(tmp_path / "weights")).status_markdown()
    (tmp_path / "weights").mkdir()
    text = ModelManager(str(tmp_path / "weights")).status_markdown()
    assert "missing in the folder" in text and f"--local-dir {tmp_path / 'weights'}" in text


class _RecordingProgress(gr.Progress):
    """Gradio's progress object, recording what the handler reports (no server here)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[object, str | None]] = []

    def __call__(self, progress, desc=None, total=None, unit="steps", _tqdm=None):  # noqa: ANN001
        self.calls.append((progress, desc))
        return super().__call__(progress, desc=desc, total=total, unit=unit, _tqdm=_tqdm)


def test_driving_video_through_dwpose_with_per_frame_progress(tmp_path: Path) -> None:
    from unianimate.pose.synthetic import export_tiny_dwpose, person_frames, write_video
    export_tiny_dwpose(tmp_path / "dwpose")
    video = write_video(tmp_path / "dance.mp4", person_frames(8, 320, 480), fps=8.0)
    models = ModelManager("tiny", dwpose=str(tmp_path / "dwpose"))
    ui = StudioHandlers(build_studio(tmp_path / "projects", models), models)
    pid = _project(ui, poses=False)
    progress = _RecordingProgress()
    msg, data = ui.extract_poses(ALICE, pid, str(video), 0, 0, 2, True, request=None,
                                 progress=progress)
    assert data["poses"] == 4 and "4 poses" in msg and "frame interval 2" in msg
    frames = [c for c in progress.calls if isinstance(c[0], tuple)]
    assert frames and frames[-1][0][1] > 0 and "pose" in (frames[-1][1] or "")


def test_several_pose_images_are_one_sequence(ui: StudioHandlers, tmp_path: Path) -> None:
    from PIL import Image

    from unianimate.pose import draw_pose, load_pose_sequence
    seq = load_pose_sequence(DANCE)
    files = []
    for i in range(3):
        path = tmp_path / f"pose_{i}.png"
        Image.fromarray(draw_pose(seq[i], 96, 64)).save(path)
        files.append(str(path))
    pid = _project(ui, poses=False)
    msg, data = ui.load_pose_file(ALICE, pid, files, 0, 0, 1, False)
    assert data["poses"] == 3
    assert "pose images" in _error(ui.load_pose_file, ALICE, pid, [files[0], DANCE], 0, 0, 1, True)


def test_export_names_a_damaged_frame_and_rerender_repairs_it(ui: StudioHandlers) -> None:
    pid = _project(ui)
    seg, _, _ = ui.generate_candidates(ALICE, pid, None, 3, 1, 2.5, 949, 0, 1)
    ui.choose(ALICE, pid, seg, "c0")
    (ui.studio.root / pid / "segments" / seg / "c0" / "000001.png").write_bytes(b"not a png")
    msg = _error(ui.export, ALICE, pid, 18, False, False, True)
    assert "segment s0 candidate c0" in msg and "Re-render" in msg and "/rerender" in msg
    assert "/tmp" not in msg and str(ui.studio.root) not in msg
    assert "no project" in _error(ui.rerender, BOB, pid, seg, "c0")
    assert "Re-rendered c0 of segment s0" in ui.rerender(ALICE, pid, seg, "c0")[0]
    video, files, msg = ui.export(ALICE, pid, 18, False, False, True)
    assert "3 frames" in msg
    update, msg = ui.delete_project(ALICE, pid)
    assert update["choices"] == [] and not (ui.studio.root / pid).exists()


def test_opening_a_project_reads_it_once_and_writes_nothing(ui: StudioHandlers) -> None:
    pid = _project(ui)
    folder = ui.studio.root / pid
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid)))
    assert view["pose_video"] and view["pose_overlay"] and view["reference_preview"]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
