"""The studio's pose step with the issue-11 pose options (tiny hunks in studio/service.py):
a drawn-pose video needs no detector, trim/interval apply to pose JSON, the alignment mode and
parts are kept in the manifest and used; manifests without them open as before (per-limb)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unianimate.errors import InputError, WeightsMissingError
from unianimate.pose import PoseSequence, draw_pose, load_pose_sequence, save_pose_sequence
from unianimate.pose.synthetic import export_tiny_dwpose, synthetic_pose, write_video
from unianimate.studio import Studio

W = H = 64


def _reference() -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    img[10:60, 24:40] = 255                       # bright: the tiny detector fires
    return img


def _no_detector():
    raise WeightsMissingError("the DWPose files are not here (test)")


def _json(tmp_path, n: int = 12, fps: float = 8.0):
    rng = np.random.default_rng(2)
    seq = PoseSequence([synthetic_pose(rng, jitter=0.005, scale=1.2) for _ in range(n)], fps=fps, width=W, height=H)
    return save_pose_sequence(seq, tmp_path / "dance.json")


def test_drawn_pose_video_without_any_detector(tmp_path) -> None:
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "drawn.mp4", [draw_pose(synthetic_pose(rng, jitter=0.01), 192, 128)
                                                 for _ in range(8)], fps=16)
    studio = Studio(tmp_path / "projects", detector_factory=_no_detector)
    p = studio.create_project(_reference(), W, H, "crop")
    info = studio.set_poses_from_file(p.id, video, frame_interval=2)
    assert info.count == 4 and info.fps == 8 and not info.aligned
    assert any("drawn pose" in m for m in info.messages)


def test_json_trim_and_interval_are_recorded(tmp_path) -> None:
    studio = Studio(tmp_path / "projects", detector_factory=_no_detector)
    p = studio.create_project(_reference(), W, H, "crop")
    info = studio.set_poses_from_file(p.id, _json(tmp_path), frame_interval=2, start=0.25,
                                      display_name="my dance.json")
    assert info.source_name == "my dance.json" and any("'my dance.json'" in m for m in info.messages)
    assert info.count == 5 and info.fps == 4 and info.frame_interval == 2 and info.source_fps == 8
    assert any("kept 5 of 12 poses (every 2nd, from 0.25 s to the end) -> 4 fps" in m for m in info.messages)


def test_alignment_mode_and_parts_are_kept_and_used(tmp_path) -> None:
    models = export_tiny_dwpose(tmp_path / "onnx")
    from unianimate.pose.dwpose import DWPoseDetector
    studio = Studio(tmp_path / "projects", detector_factory=lambda: DWPoseDetector.from_files(*models))
    drawn = {}
    for mode, parts in (("per-limb", "body,hands"), ("scale", "body,hands"), ("per-limb", "body")):
        p = studio.create_project(_reference(), W, H, "crop")
        info = studio.set_poses_from_file(p.id, _json(tmp_path), frame_interval=1, align_mode=mode,
                                          align_parts=parts)
        assert info.aligned and info.align_mode == mode and info.align_parts == parts.split(",")
        folder = tmp_path / "projects" / p.id
        drawn[(mode, parts)] = load_pose_sequence(folder / info.aligned_keypoints)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["poses"]["align_mode"] == mode
    a, b, c = drawn.values()
    assert not np.allclose(a[0].body, b[0].body)               # scale-only differs from per-limb
    np.testing.assert_array_equal(a[0].body, c[0].body)         # hands off: same body ...
    assert not np.allclose(a[0].hands, c[0].hands)              # ... driving-size hands
    with pytest.raises(InputError, match="alignment part"):
        studio.set_poses_from_file(p.id, _json(tmp_path), align_parts="feet")


def test_manifest_without_the_new_fields_opens_per_limb(tmp_path) -> None:
    studio = Studio(tmp_path / "projects", detector_factory=_no_detector)
    p = studio.create_project(_reference(), W, H, "crop")
    studio.set_poses_from_file(p.id, _json(tmp_path), frame_interval=1)
    path = tmp_path / "projects" / p.id / "manifest.json"
    data = json.loads(path.read_text())
    del data["poses"]["align_mode"], data["poses"]["align_parts"]      # as written before issue 11
    path.write_text(json.dumps(data))
    from unianimate.studio.manifest import load_project
    loaded = load_project(path.parent)
    assert loaded.poses.align_mode == "per-limb" and loaded.poses.align_parts == ["body", "hands"]


def test_unaligned_landscape_poses_are_letterboxed_like_the_reference(tmp_path) -> None:
    """Issue 11 #10: pad without alignment draws the skeleton where the padded pixels are."""
    from unianimate.pose.fit import fit_pose_list
    rng = np.random.default_rng(3)
    src = [synthetic_pose(rng, jitter=0.005) for _ in range(3)]
    path = save_pose_sequence(PoseSequence(src, fps=8, width=640, height=360), tmp_path / "wide.json")
    studio = Studio(tmp_path / "projects", detector_factory=_no_detector)
    p = studio.create_project(_reference(), W, 2 * H, "pad")
    info = studio.set_poses_from_file(p.id, path, frame_interval=1, align=False)
    drawn = load_pose_sequence(tmp_path / "projects" / p.id / info.aligned_keypoints)
    assert (drawn.width, drawn.height) == (W, 2 * H)
    want = fit_pose_list(src, (640, 360), (W, 2 * H), "pad")
    np.testing.assert_allclose(drawn[0].body, want[0].body, atol=1e-9)
    ys = drawn[0].body[drawn[0].body[:, 1] >= 0, 1]
    assert ys.min() >= 46 / 128 and ys.max() <= 82 / 128       # inside the 64x36 letterbox band
