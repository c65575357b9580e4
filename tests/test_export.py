"""The MP4 / PNG-zip writer (unianimate.video.writer)."""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unianimate.errors import InputError
from unianimate.video.writer import (AudioSpan, ffmpeg_exe, probe_media, side_by_side_frames,
                                     write_mp4, write_png_zip)


def make_video_with_audio(path: Path, seconds: float = 2.0, fps: int = 16, size: int = 64) -> Path:
    """A small H.264 + AAC test video made with the bundled ffmpeg (test pattern + sine)."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size={size}x{size}:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
                    "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(path)], check=True)
    return path


def _frames(n=7, h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_mp4_is_h264_yuv420p_with_exact_frames_and_fps(tmp_path):
    out = write_mp4(_frames(7), tmp_path / "a.mp4", fps=7.5, quality=23)
    info = probe_media(out)
    assert (info.frames, info.width, info.height) == (7, 64, 64)
    assert info.fps == pytest.approx(7.5)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert not info.has_audio
    # quality: lower CRF -> bigger file
    hi = write_mp4(_frames(7), tmp_path / "hi.mp4", fps=8, quality=5).stat().st_size
    lo = write_mp4(_frames(7), tmp_path / "lo.mp4", fps=8, quality=45).stat().st_size
    assert hi > lo


def test_odd_sizes_are_padded(tmp_path):
    info = probe_media(write_mp4(_frames(3, 33, 31), tmp_path / "odd.mp4", fps=8))
    assert (info.width, info.height, info.frames) == (32, 34, 3)


def test_audio_is_muxed_and_trimmed(tmp_path):
    src = make_video_with_audio(tmp_path / "drv.mp4", seconds=3.0)
    out = write_mp4(_frames(8), tmp_path / "v.mp4", fps=8,
                    audio=AudioSpan(str(src), start=1.0, duration=1.0))
    info = probe_media(out)
    assert info.has_audio and info.frames == 8
    assert info.audio_duration == pytest.approx(1.0, abs=0.1)


def test_audio_never_cuts_video_frames(tmp_path):
    """The video keeps every frame: a duration of n/fps that rounds down (7.5 fps) or an audio
    source that ends early (padded with silence) must not drop frames via -shortest."""
    src = make_video_with_audio(tmp_path / "drv.mp4", seconds=1.0)
    out = write_mp4(_frames(25, 32, 32), tmp_path / "a.mp4", fps=7.5,
                    audio=AudioSpan(str(src), start=0.0, duration=25 / 7.5))
    info = probe_media(out)
    assert info.has_audio and info.frames == 25
    assert info.audio_duration == pytest.approx(25 / 7.5, abs=0.1)
    out = write_mp4(_frames(16, 32, 32), tmp_path / "b.mp4", fps=8,
                    audio=AudioSpan(str(src), start=1.5, duration=2.0))   # starts past the end
    info = probe_media(out)
    assert info.frames == 16 and info.audio_duration == pytest.approx(2.0, abs=0.1)


def test_png_zip_and_side_by_side(tmp_path):
    frames = _frames(4)
    z = write_png_zip(frames, tmp_path / "f.zip")
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        assert names == [f"frame_{i:06d}.png" for i in range(4)]
        import io
        back = np.asarray(Image.open(io.BytesIO(zf.read(names[2]))))
    np.testing.assert_array_equal(back, frames[2])
    ref = np.full((32, 32, 3), 9, np.uint8)            # resized to the frame size
    poses = np.zeros((4, 64, 64, 3), np.uint8)
    sbs = side_by_side_frames(ref, poses, frames)
    assert sbs.shape == (4, 64, 192, 3)
    assert (sbs[:, :, :64] == 9).all() and (sbs[:, :, 64:128] == 0).all()
    np.testing.assert_array_equal(sbs[:, :, 128:], frames)


def test_bad_writer_inputs(tmp_path):
    with pytest.raises(InputError):
        write_mp4(np.zeros((0, 8, 8, 3), np.uint8), tmp_path / "x.mp4", fps=8)
    with pytest.raises(InputError):
        write_mp4(_frames(2), tmp_path / "x.mp4", fps=0)
    with pytest.raises(InputError):
        write_mp4(_frames(2), tmp_path / "x.mp4", fps=float("inf"))   # was an OverflowError
    with pytest.raises(InputError):
        write_mp4(_frames(2), tmp_path / "x.mp4", fps=8, quality=60)
    with pytest.raises(InputError):
        probe_media(tmp_path / "missing.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_frames_can_be_streamed_from_a_generator(tmp_path):
    frames = _frames(5)
    out = write_mp4((f for f in frames), tmp_path / "g.mp4", fps=10)
    assert probe_media(out).frames == 5
    z = write_png_zip(iter(frames), tmp_path / "g.zip")
    assert len(zipfile.ZipFile(z).namelist()) == 5
    mixed = [frames[0], np.zeros((32, 32, 3), np.uint8)]
    with pytest.raises(InputError, match="the first was"):
        write_mp4(iter(mixed), tmp_path / "m.mp4", fps=10)
    with pytest.raises(InputError, match="no frames"):
        write_mp4(iter([]), tmp_path / "e.mp4", fps=10)
    assert not (tmp_path / "m.mp4").exists() and not list(tmp_path.glob(".m.*"))


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_exports_get_the_umask_permissions_not_0600(tmp_path, umask, mode) -> None:
    """Issue 11 #15: exports are meant to be shared; mkstemp's 0600 made them private."""
    import os
    import stat
    old = os.umask(umask)
    try:
        mp4 = write_mp4(_frames(3), tmp_path / "out.mp4", fps=8)
        zp = write_png_zip(_frames(2), tmp_path / "out_frames.zip")
    finally:
        os.umask(old)
    for path in (mp4, zp):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out_frames.zip"]  # no temp left
