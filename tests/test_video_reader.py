"""Video probing and reading: fps, interval, trim, rotation metadata, variable frame rate, bad files."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose.synthetic import write_video
from unianimate.video.reader import VideoReader, probe_video, read_frames


def _frames(n: int, w: int = 64, h: int = 96) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:16, :24] = 255                 # a marker in the top-left corner shows orientation
        img[h - 16:, :, 1] = min(255, i * 20)  # frame number encoded in the bottom band
        out.append(img)
    return out


def _frame_no(img: np.ndarray) -> int:
    return int(round(img[-8:, :, 1].mean() / 20))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "cfr.mp4", _frames(12), fps=16)


def test_probe_and_interval(video) -> None:
    info = probe_video(video)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 96, 16.0, 12)
    assert not info.has_audio and info.rotation == 0 and not info.variable_frame_rate
    frames, _ = read_frames(video, frame_interval=2)
    assert [_frame_no(f) for f in frames] == [0, 2, 4, 6, 8, 10]
    assert frames[0].dtype == np.uint8 and frames[0].shape == (96, 64, 3)
    reader = VideoReader(video)
    assert reader.expected_count(2) == 6 and reader.expected_count(3, start=0.25) == 3


def test_trim(video) -> None:
    frames, _ = read_frames(video, frame_interval=1, start=0.25, end=0.5)
    assert [_frame_no(f) for f in frames] == [4, 5, 6, 7]
    with pytest.raises(InputError, match="end"):
        read_frames(video, start=0.5, end=0.25)
    with pytest.raises(InputError, match="no frames between"):
        read_frames(video, start=5.0)
    with pytest.raises(InputError, match="frame_interval"):
        read_frames(video, frame_interval=0)
    with pytest.raises(InputError, match="frame_interval"):  # was a ZeroDivisionError
        VideoReader(video).expected_count(frame_interval=0)


def test_rotation_matches_ffmpeg_autorotate(tmp_path, video) -> None:
    import imageio_ffmpeg
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    rotated = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg, "-y", "-v", "error", "-display_rotation", "90", "-i", str(video), "-c", "copy",
                    str(rotated)], check=True)
    info = probe_video(rotated)
    assert info.rotation == 90 and (info.width, info.height) == (96, 64)
    ours, _ = read_frames(rotated, max_frames=1)
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(64, 96, 3)   # ffmpeg applies the rotation itself
    assert ours[0].shape == theirs.shape
    assert np.abs(ours[0].astype(int) - theirs.astype(int)).mean() < 2


def test_variable_frame_rate(tmp_path) -> None:
    times = [0.0, 0.05, 0.1, 0.3, 0.31, 0.32, 0.5, 0.6, 0.7, 0.9]
    vfr = write_video(tmp_path / "vfr.mp4", _frames(10), pts_seconds=times)
    info = probe_video(vfr)
    assert info.variable_frame_rate
    reader = VideoReader(vfr)
    got = list(reader.frames(1))
    step = 1.0 / info.fps
    assert len(got) == int(0.9 / step + 0.5) + 1
    for f in got:  # each grid time uses the latest frame at or before it (half a frame of slack)
        assert f.source_time <= f.time + 0.5 * step + 1e-9
        later = [t for t in times if f.source_time < t <= f.time + 0.5 * step - 1e-9]
        assert not later
        assert f.time == pytest.approx(f.index * step)


def test_bad_inputs(tmp_path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("hello, not a video")
    with pytest.raises(InputError, match="not a readable video|no video"):
        probe_video(text)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe_video(empty)
    import cv2
    png = tmp_path / "still.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="image"):
        probe_video(png)
    disguised = tmp_path / "still.mov"
    disguised.write_bytes(png.read_bytes())
    with pytest.raises(InputError, match="image"):
        probe_video(disguised)
    good = write_video(tmp_path / "good.mp4", _frames(12), fps=16)
    corrupt = tmp_path / "corrupt.mp4"
    data = good.read_bytes()
    corrupt.write_bytes(data[:48] + bytes(len(data) - 48))
    with pytest.raises(InputError):
        read_frames(corrupt)
    with pytest.raises(InputError, match="does not exist"):
        probe_video(tmp_path / "missing.mp4")


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_zero_frame_video(tmp_path, ext: str) -> None:
    import av
    path = tmp_path / f"zero.{ext}"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=16)
        s.width, s.height, s.pix_fmt = 64, 96, "yuv420p"
        out.start_encoding()
    with pytest.raises(InputError, match="no video frames|not a readable video"):
        read_frames(path)


def test_audio_detected(tmp_path) -> None:
    import av
    from fractions import Fraction
    path = tmp_path / "av.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=16)
        v.width, v.height, v.pix_fmt = 64, 96, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        for img in _frames(4):
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        samples = np.zeros((1, 4096), np.float32)
        af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        af.sample_rate, af.pts, af.time_base = 16000, 0, Fraction(1, 16000)
        for p in a.encode(af):
            out.mux(p)
        for p in a.encode():
            out.mux(p)
    assert probe_video(path).has_audio


@pytest.mark.parametrize("interval,start,end", [(1, None, None), (2, None, None), (3, 0.2, None),
                                                (2, 0.1, 0.5), (1, 0.33, 0.4)])
def test_sample_indices_match_the_video_time_grid(video, interval, start, end) -> None:
    """Pose JSON and image folders are sampled exactly like a constant-rate video of them."""
    from unianimate.video.reader import sample_indices
    got = [_frame_no(f.image) for f in VideoReader(video).frames(interval, start, end)]
    assert sample_indices(12, 16.0, interval, start, end) == got


def test_sample_indices_errors_and_ordinals() -> None:
    from unianimate.video.reader import describe_sampling, ordinal, sample_indices
    with pytest.raises(InputError, match="no frames between 2 s"):
        sample_indices(12, 16.0, 1, 2.0)
    with pytest.raises(InputError, match="frame_interval"):
        sample_indices(12, 16.0, 0)
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]
    assert describe_sampling(20, 40, "poses", 2, None, None, 4.0) == "kept 20 of 40 poses (every 2nd) -> 4 fps"
