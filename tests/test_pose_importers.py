"""load_driving: folders (natural sort), zips (safety), JSON, drawn-pose videos, real videos, bad files."""
from __future__ import annotations

import zipfile

import cv2
import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose import PoseSequence, draw_pose, save_pose_sequence
from unianimate.pose.importers import load_driving, looks_like_drawn_poses, natural_key
from unianimate.pose.synthetic import export_tiny_dwpose, person_frames, synthetic_pose, write_video


def _pose_image(i: int, h: int = 96, w: int = 64) -> np.ndarray:
    img = draw_pose(synthetic_pose(np.random.default_rng(i), jitter=0.01), h, w)
    img[0, 0] = (i, 0, 0)  # the frame number, to check the order
    return img


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img[:, :, ::-1])[1].tobytes()


def test_natural_sort_key() -> None:
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame100.png"]
    assert sorted(names, key=natural_key) == ["Frame1.png", "frame2.png", "frame10.png", "frame100.png"]


def test_folder_natural_order_and_interval(tmp_path) -> None:
    for i in (1, 2, 10, 11, 3):
        (tmp_path / f"frame{i}.png").write_bytes(_png(_pose_image(i)))
    (tmp_path / "notes.txt").write_text("ignored")
    d = load_driving(tmp_path, frame_interval=1, image_fps=8)
    assert [int(img[0, 0, 0]) for img in d.pose_images] == [1, 2, 3, 10, 11]
    assert d.keypoints is None and not d.can_align and d.fps == 8
    assert any("cannot be aligned" in m for m in d.messages)
    d2 = load_driving(tmp_path, frame_interval=2, image_fps=8)
    assert [int(img[0, 0, 0]) for img in d2.pose_images] == [1, 3, 11] and d2.fps == 4


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_ok_and_macos_junk_ignored(tmp_path) -> None:
    z = _zip(tmp_path / "poses.zip", {"p/frame10.png": _png(_pose_image(10)), "p/frame9.png": _png(_pose_image(9)),
                                      "__MACOSX/p/._frame9.png": b"junk", "p/": b""})
    d = load_driving(z, frame_interval=1)
    assert [int(img[0, 0, 0]) for img in d.pose_images] == [9, 10]
    assert [p.name for p in tmp_path.iterdir()] == ["poses.zip"]  # nothing extracted to disk


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "a/../../evil.png", "C:/evil.png", "a\\..\\evil.png"])
def test_zip_traversal_rejected(tmp_path, name: str) -> None:
    z = _zip(tmp_path / "bad.zip", {"ok1.png": _png(_pose_image(1)), name: _png(_pose_image(2))})
    with pytest.raises(InputError, match="unsafe member"):
        load_driving(z)
    assert not (tmp_path.parent / "evil.png").exists()


def test_zip_non_image_and_bomb_rejected(tmp_path) -> None:
    z = _zip(tmp_path / "mixed.zip", {"ok1.png": _png(_pose_image(1)), "run.sh": b"rm -rf /"})
    with pytest.raises(InputError, match="not an image"):
        load_driving(z)
    z = _zip(tmp_path / "fake.zip", {"fake.png": b"this is not a png at all"})
    with pytest.raises(InputError, match="not a readable image"):
        load_driving(z)
    z = _zip(tmp_path / "bomb.zip", {"bomb.png": bytes(20_000_000)})
    with pytest.raises(InputError, match="zip bomb"):
        load_driving(z)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(InputError, match="not a readable zip"):
        load_driving(tmp_path / "broken.zip")
    _zip(tmp_path / "empty.zip", {})
    with pytest.raises(InputError, match="no images"):
        load_driving(tmp_path / "empty.zip")


def test_json_driving(tmp_path) -> None:
    seq = PoseSequence([synthetic_pose()] * 3, fps=8, width=64, height=96)
    path = save_pose_sequence(seq, tmp_path / "p.json")
    d = load_driving(path)
    assert d.can_align and len(d.keypoints) == 3 and d.fps == 8 and d.pose_images is None


def test_drawn_pose_video_auto_detected(tmp_path) -> None:
    frames = [_pose_image(i, 192, 128) for i in range(8)]
    assert looks_like_drawn_poses(frames)
    video = write_video(tmp_path / "drawn.mp4", frames, fps=16)
    d = load_driving(video, frame_interval=2)
    assert d.kind == "pose_images" and len(d.pose_images) == 4 and d.fps == 8
    assert d.source_video == str(video) and any("cannot be aligned" in m for m in d.messages)


def test_real_video_needs_detector_and_extracts(tmp_path) -> None:
    frames = [np.clip(f.astype(int) * 0 + np.random.default_rng(i).integers(40, 200, f.shape), 0, 255).astype(np.uint8)
              for i, f in enumerate(person_frames(6, 160, 240))]
    for f in frames:
        f[40:200, 50:110] = 255
    assert not looks_like_drawn_poses(frames)
    video = write_video(tmp_path / "real.mp4", frames, fps=16)
    with pytest.raises(InputError, match="detector"):
        load_driving(video)
    from unianimate.pose.dwpose import DWPoseDetector
    det = DWPoseDetector.from_files(*export_tiny_dwpose(tmp_path / "onnx"))
    d = load_driving(video, detector=det, kind="video", frame_interval=2)
    assert d.kind == "video" and d.can_align and len(d.keypoints) == 3 and d.fps == 8


def test_bad_driving_inputs(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_driving(tmp_path / "nothing.mp4")
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(InputError):
        load_driving(tmp_path / "x.mp4")
    with pytest.raises(InputError, match="kind"):
        load_driving(tmp_path / "x.mp4", kind="gif")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        load_driving(empty)
