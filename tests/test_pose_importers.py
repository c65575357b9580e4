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
    d = load_driving(path, frame_interval=1)     # the interval applies to JSON too (issue 11)
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


# ---- issue 11: trim/interval everywhere, drawn-pose videos without a detector, messages -------

def _jittery_json(tmp_path, n: int = 40, fps: float = 8.0, name: str = "dance.json"):
    rng = np.random.default_rng(5)
    seq = PoseSequence([synthetic_pose(rng, jitter=0.01) for _ in range(n)], fps=fps, width=64, height=96)
    for i, p in enumerate(seq.poses):
        p.body[0, 0] = 0.3 + 0.001 * i       # the frame number, to check which poses were kept
    return save_pose_sequence(seq, tmp_path / name)


def _frame_numbers(seq) -> list[int]:
    return [int(round((p.body[0, 0] - 0.3) * 1000)) for p in seq.poses]


def test_json_trim_and_interval_apply_and_are_reported(tmp_path) -> None:
    path = _jittery_json(tmp_path)                      # 40 poses at 8 fps = 5 s
    d = load_driving(path, frame_interval=2)
    assert len(d.keypoints) == 20 and d.fps == 4 and d.keypoints.fps == 4
    assert _frame_numbers(d.keypoints) == list(range(0, 40, 2))
    assert any("kept 20 of 40 poses (every 2nd) -> 4 fps" in m for m in d.messages)
    d = load_driving(path, frame_interval=3, start=1.0, end=3.0)
    assert _frame_numbers(d.keypoints) == [8, 11, 14, 17, 20, 23]
    assert d.fps == pytest.approx(8 / 3)
    assert any("every 3rd, from 1 s to 3 s" in m for m in d.messages)
    with pytest.raises(InputError, match="no frames between 6 s"):
        load_driving(path, frame_interval=1, start=6.0)


def test_folder_and_zip_trim_interval_and_fps(tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(1, 11):
        (folder / f"f{i}.png").write_bytes(_png(_pose_image(i)))
    d = load_driving(folder, frame_interval=2, start=0.25, end=1.0, image_fps=8)   # items 2..7
    assert [int(img[0, 0, 0]) for img in d.pose_images] == [3, 5, 7] and d.fps == 4
    assert any("kept 3 of 10 images (every 2nd, from 0.25 s to 1 s)" in m for m in d.messages)
    z = _zip(tmp_path / "p.zip", {f"f{i}.png": _png(_pose_image(i)) for i in range(1, 7)})
    d = load_driving(z, frame_interval=1, image_fps=12, start=0.25)
    assert [int(img[0, 0, 0]) for img in d.pose_images] == [4, 5, 6] and d.fps == 12
    for bad in (0, -5, 500, float("nan"), "x", True):
        with pytest.raises(InputError, match="frame rate of pose images"):
            load_driving(folder, image_fps=bad)


def test_no_th_for_2_and_user_file_name_not_temp_folder(tmp_path) -> None:
    folder = tmp_path / "unianimate-poses-k2j4h5"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i:06d}.png").write_bytes(_png(_pose_image(i)))
    d = load_driving(folder, frame_interval=2, display_name="my_dance_frames")
    text = " ".join(d.messages)
    assert "2th" not in text and "every 2nd" in text
    assert "my_dance_frames" in text and "k2j4h5" not in text
    frames = [_pose_image(i, 192, 128) for i in range(8)]
    video = write_video(tmp_path / "tmpab12cd.mp4", frames, fps=16)
    d = load_driving(video, frame_interval=2, display_name="drawn.mp4")
    text = " ".join(d.messages)
    assert "drawn.mp4" in text and "tmpab12cd" not in text and "every 2nd" in text


def _real_frames(n: int = 6) -> list[np.ndarray]:
    frames = [np.random.default_rng(i).integers(40, 200, (240, 160, 3)).astype(np.uint8) for i in range(n)]
    for f in frames:
        f[40:200, 50:110] = 255
    return frames


def test_drawn_pose_video_is_known_before_any_detector(tmp_path) -> None:
    from unianimate.pose.importers import classify_driving, driving_needs_detector, load_pose_input
    drawn = write_video(tmp_path / "drawn.mp4", [_pose_image(i, 192, 128) for i in range(8)], fps=16)
    real = write_video(tmp_path / "real.mp4", _real_frames(), fps=16)
    json_path = _jittery_json(tmp_path, 4)
    assert classify_driving(drawn) == "pose_images" and not driving_needs_detector(drawn)
    assert classify_driving(real) == "video" and driving_needs_detector(real)
    assert classify_driving(json_path) == "keypoints" and not driving_needs_detector(json_path)
    assert classify_driving(drawn, kind="video") == "video"          # an explicit kind wins
    with pytest.raises(InputError, match="does not exist"):
        driving_needs_detector(tmp_path / "gone.mp4")
    # the Pose input takes a drawn-pose .mp4 (trim and interval too), never a real video
    d = load_pose_input(drawn, frame_interval=2, start=0.125)       # frames 2, 4, 6 of 8
    assert d.kind == "pose_images" and len(d.pose_images) == 3 and d.fps == 8
    with pytest.raises(InputError, match="real video"):
        load_pose_input(real)
    assert load_pose_input(json_path).kind == "keypoints"


def test_smoothing_strength_in_the_loader(tmp_path) -> None:
    from unianimate.pose.smooth import jitter
    path = _jittery_json(tmp_path)
    raw = load_driving(path, frame_interval=1)
    smooth = load_driving(path, frame_interval=1, smooth=0.8)
    assert jitter(smooth.keypoints.poses) < 0.5 * jitter(raw.keypoints.poses)
    assert any("smoothed the keypoints" in m for m in smooth.messages)
    with pytest.raises(InputError, match="smoothing strength"):
        load_driving(path, smooth=1.5)
    drawn = write_video(tmp_path / "drawn.mp4", [_pose_image(i, 192, 128) for i in range(4)], fps=16)
    d = load_driving(drawn, smooth=0.5)
    assert any("smoothing needs keypoints" in m for m in d.messages)
