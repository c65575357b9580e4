"""Issue 11 in the UI handlers: drawn-pose videos without a detector (both tabs), trim and
interval for pose JSON, the pose options, pose messages (names, escaping, no piling up)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from ui.handlers import StudioHandlers  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.pose import draw_pose, load_pose_sequence  # noqa: E402
from unianimate.pose.synthetic import person_frames, synthetic_pose, write_video  # noqa: E402
from unianimate.studio.project import PoseInfo  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ALICE = "a" * 32


@pytest.fixture()
def ui(tmp_path: Path) -> StudioHandlers:
    models = ModelManager("tiny")            # no DWPose files anywhere: no detector
    return StudioHandlers(build_studio(tmp_path / "projects", models), models)


def _project(ui: StudioHandlers) -> str:
    pid, _, _ = ui.create_project(ALICE, REF, "custom", 64, 64, "crop", "t")
    return pid


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args, **kwargs)
    return str(info.value.message)


def _drawn_video(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_video(tmp_path / "drawn.mp4", [draw_pose(synthetic_pose(rng, jitter=0.01), 192, 128)
                                                for _ in range(8)], fps=8)


def test_drawn_pose_video_in_the_pose_tab_and_the_video_tab_needs_no_detector(
        ui: StudioHandlers, tmp_path: Path) -> None:
    video = _drawn_video(tmp_path)
    pid = _project(ui)
    msg, data = ui.load_pose_file(ALICE, pid, [str(video)], 0, 0, 1, True)
    assert data["poses"] == 8 and "`drawn.mp4`" in msg
    msg, data = ui.extract_poses(ALICE, pid, str(video), 0, 0, 2, True, "auto")
    assert data["poses"] == 4 and "frame interval 2" in msg
    real = write_video(tmp_path / "real.mp4", person_frames(4, 64, 96), fps=8)
    assert "Driving video tab" in _error(ui.load_pose_file, ALICE, pid, [str(real)], 0, 0, 1, True)


def test_json_trim_and_interval_in_the_pose_tab(ui: StudioHandlers) -> None:
    pid = _project(ui)
    msg, data = ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 2, True)
    fps = load_pose_sequence(DANCE).fps
    assert data["poses"] == 20 and "frame interval 2" in msg and f"{fps / 2:g} fps" in msg
    msg, data = ui.load_pose_file(ALICE, pid, [DANCE], 1, 0, 1, True)
    assert data["poses"] == 40 - round(fps)


def test_pose_options_are_checked_and_passed(ui: StudioHandlers, tmp_path: Path) -> None:
    pid = _project(ui)
    assert "driving kind" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True, "x")
    assert "smoothing strength" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True,
                                          "auto", 2)
    assert "alignment mode" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True,
                                      "auto", 0, "sideways")
    assert "frame rate of pose images" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1,
                                                 True, "auto", 0, "per-limb", ["body"], 0)
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True, "auto", 0.5, "scale", ["body"], 12)
    poses = ui.studio.page(pid, owner=ui.owner_of(ALICE)).project.poses
    assert poses.align_mode == "scale" and poses.align_parts == ["body"]
    assert any("smooth" in m.lower() for m in poses.messages)


def test_pose_messages_name_the_upload_escape_markup_and_do_not_pile_up(
        ui: StudioHandlers, tmp_path: Path) -> None:
    from PIL import Image
    seq = load_pose_sequence(DANCE)
    files = []
    for i in range(3):
        files.append(tmp_path / f"pose_{i}.png")
        Image.fromarray(draw_pose(seq[i], 96, 64)).save(files[-1])
    pid = _project(ui)
    msg, _ = ui.load_pose_file(ALICE, pid, [str(f) for f in files], 0, 0, 1, False)
    assert "3 images (pose_0.png ... pose_2.png)" in msg and "unianimate-poses" not in msg
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True)
    owner = ui.owner_of(ALICE)
    before = list(ui.studio.page(pid, owner=owner).project.poses.messages)
    for size in (128, 64):                   # the poses are redrawn for each new size
        ui.set_reference(ALICE, pid, None, "custom", size, size, "crop")
    assert ui.studio.page(pid, owner=owner).project.poses.messages == before
    info = PoseInfo(count=1, fps=8.0, images="poses/images",
                    messages=["put the files in <weights folder>"])
    assert "&lt;weights folder&gt;" in StudioHandlers._pose_message(info)
