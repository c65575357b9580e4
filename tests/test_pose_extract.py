"""DWPose through onnxruntime with tiny exported models (the real files' names and shapes,
hand-set weights), loaded through DWPoseDetector.from_files like the real ones; extraction end to end."""
from __future__ import annotations

import numpy as np
import pytest

from unianimate.errors import InputError, WeightsMissingError
from unianimate.pose import MISSING
from unianimate.pose.dwpose import DWPoseConfig, DWPoseDetector
from unianimate.pose.extract import extract_poses
from unianimate.pose.synthetic import (default_pose_locs, export_tiny_dwpose, person_frames,
                                       write_video)

BOX_MAIN = (200, 120, 440, 600)
BOX_SMALL = (20, 20, 80, 100)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return export_tiny_dwpose(folder, boxes=[BOX_MAIN, BOX_SMALL], det_scores=[0.8, 0.95])


@pytest.fixture(scope="module")
def detector(models):
    return DWPoseDetector.from_files(*models)


def test_onnx_interface_matches_real_files(models) -> None:
    import onnxruntime as ort
    det = ort.InferenceSession(str(models[0]), providers=["CPUExecutionProvider"])
    pose = ort.InferenceSession(str(models[1]), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in det.get_inputs()] == [("images", [1, 3, 640, 640])]
    assert [(o.name, o.shape) for o in det.get_outputs()] == [("output", [1, 8400, 85])]
    assert [(i.name, i.shape) for i in pose.get_inputs()] == [("input", [1, 3, 384, 288])]
    assert [(o.name, o.shape) for o in pose.get_outputs()] == [("simcc_x", [1, 133, 576]), ("simcc_y", [1, 133, 768])]


def test_keypoints_decoded_and_mapped_to_the_layout(detector) -> None:
    img = person_frames(1, 640, 640)[0]
    res = detector(img)
    assert res.person_count == 2
    # largest/most central person chosen although the small one scores higher
    assert res.chosen is not None and np.allclose(res.boxes[res.chosen], BOX_MAIN, atol=1e-3)
    locs, scores = default_pose_locs()
    x0, y0, x1, y1 = BOX_MAIN
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    scale = np.array([(x1 - x0) * 1.25, (y1 - y0) * 1.25])
    scale = np.array([scale[1] * 0.75, scale[1]]) if scale[0] <= scale[1] * 0.75 else np.array([scale[0], scale[0] / 0.75])
    q = np.round(locs * 2) / 2                                   # SimCC bins of 1/2 pixel
    px = q / np.array([288, 384]) * scale + center - scale / 2    # (133, 2) image pixels
    norm = px / 640.0
    p = res.pose
    np.testing.assert_allclose(p.body[0], norm[0], atol=1e-4)                     # nose
    np.testing.assert_allclose(p.body[1], (norm[5] + norm[6]) / 2, atol=1e-4)     # neck
    np.testing.assert_allclose(p.body[2], norm[6], atol=1e-4)                     # right shoulder = COCO 6
    np.testing.assert_allclose(p.body[5], norm[5], atol=1e-4)
    np.testing.assert_allclose(p.body[8], norm[12], atol=1e-4)                    # right hip = COCO 12
    np.testing.assert_allclose(p.body[14], norm[2], atol=1e-4)                    # right eye = COCO 2
    np.testing.assert_allclose(p.body[18], (norm[17] + norm[18]) / 2, atol=1e-4)  # left foot
    assert p.body[17].tolist() == [MISSING, MISSING]                              # COCO 3 scored 0.1
    assert p.body[19].tolist() == [MISSING, MISSING]                              # toe COCO 20 scored 0.1
    np.testing.assert_allclose(p.face, norm[23:91], atol=1e-4)
    np.testing.assert_allclose(p.hands[1], norm[112:133], atol=1e-4)              # right hand
    assert p.hands[0, 9].tolist() == [MISSING, MISSING]                           # COCO 100 scored 0.1
    np.testing.assert_allclose(np.delete(p.hands[0], 9, axis=0), np.delete(norm[91:112], 9, axis=0), atol=1e-4)
    assert p.body_scores[0] == pytest.approx(scores[0], abs=1e-3)


def test_first_person_policy_and_no_person(models) -> None:
    det = DWPoseDetector.from_files(*models, config=DWPoseConfig(select="first"))
    res = det(person_frames(1, 640, 640)[0])
    assert np.allclose(res.boxes[res.chosen], BOX_SMALL, atol=1e-3)  # highest score, as the reference
    black = np.zeros((480, 320, 3), np.uint8)
    res = det(black)
    assert res.pose is None and res.person_count == 0
    full = DWPoseDetector.from_files(*models, config=DWPoseConfig(full_image_when_no_person=True))(black)
    assert full.pose is not None and full.person_count == 0
    with pytest.raises(InputError):
        det(black.astype(np.float32))


def test_missing_files_and_bad_onnx(tmp_path, models) -> None:
    with pytest.raises(WeightsMissingError, match="does not exist"):
        DWPoseDetector.from_files(tmp_path / "nope.onnx", models[1])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(InputError, match="cannot load"):
        DWPoseDetector.from_files(bad, models[1])
    with pytest.raises(InputError, match="does not look like"):
        DWPoseDetector.from_files(models[1], models[0])


def test_extract_video_gaps_and_several_people(tmp_path, detector) -> None:
    video = write_video(tmp_path / "drive.mp4", person_frames(24, 320, 480, empty=(4, 5, 16, 17, 18, 19, 20, 21, 22, 23)), fps=16)
    calls = []
    res = extract_poses(video, detector, frame_interval=2, progress=lambda d, t: calls.append((d, t)))
    seq = res.sequence
    assert len(seq) == 12 and seq.fps == 8.0 and (seq.width, seq.height) == (320, 480)
    assert calls[-1] == (12, 12) and len(calls) == 12
    assert res.frames_without_person == (2, 8, 9, 10, 11)
    assert res.filled_frames == (2,) and not seq[2].is_empty() and seq[9].is_empty()
    assert any("several people" in m for m in res.messages)
    assert any("8-11" in m for m in res.messages)


def test_extract_trim_one_frame_and_no_person(tmp_path, detector) -> None:
    video = write_video(tmp_path / "v.mp4", person_frames(32, 160, 240), fps=16)
    res = extract_poses(video, detector, frame_interval=1, start=0.5, end=1.0)
    assert len(res.sequence) == 8
    one = write_video(tmp_path / "one.mp4", person_frames(1, 160, 240), fps=16)
    res = extract_poses(one, detector, frame_interval=2)
    assert len(res.sequence) == 1 and not res.sequence[0].is_empty()
    dark = write_video(tmp_path / "dark.mp4", person_frames(4, 160, 240, empty=range(4)), fps=16)
    res = extract_poses(dark, detector)
    assert all(p.is_empty() for p in res.sequence) and any("no person was found in any frame" in m for m in res.messages)
    with pytest.raises(InputError, match="detector"):
        extract_poses(one, None)


def test_from_pretrained_resolves_through_the_hub_module(models) -> None:
    pytest.importorskip("unianimate.hub")
    det = DWPoseDetector.from_pretrained(models[0].parent, providers=["CPUExecutionProvider"])
    assert det(person_frames(1, 640, 640)[0]).person_count == 2


def test_extract_rotated_and_variable_frame_rate(tmp_path, detector) -> None:
    import subprocess

    import imageio_ffmpeg
    video = write_video(tmp_path / "upright.mp4", person_frames(8, 160, 240), fps=16)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "270", "-i",
                    str(video), "-c", "copy", str(rotated)], check=True)
    res = extract_poses(rotated, detector, frame_interval=2)
    assert (res.sequence.width, res.sequence.height) == (240, 160) and len(res.sequence) == 4
    assert any("rotated by 270" in m for m in res.messages)
    times = [0.0, 0.04, 0.3, 0.32, 0.34, 0.6, 0.7, 1.0]
    vfr = write_video(tmp_path / "vfr.mp4", person_frames(8, 160, 240), pts_seconds=times)
    res = extract_poses(vfr, detector, frame_interval=1)
    assert any("variable frame rate" in m for m in res.messages)
    assert len(res.sequence) >= 7 and all(not p.is_empty() for p in res.sequence)
