"""Writing results: MP4 (H.264, yuv420p, CRF quality) with optional audio from the driving video,
PNG-sequence zips, side-by-side frames, and a small probe used to check what was written.

Encoding goes through the ffmpeg binary that ``imageio-ffmpeg`` ships (raw RGB frames piped in),
so it works wherever the wheel installs; PyAV is used only to read files back.

Crash safety: every file appears atomically (written as ``.<stem>.<pid>.<random>.<ext>`` beside
the target, then renamed), and the ffmpeg child dies with the process that started it (Linux:
``PR_SET_PDEATHSIG``), so a ``kill -9`` of the app leaves no encoder running and no half file
under the target's name; the store removes the temp files of dead writers at start.
"""
from __future__ import annotations

import io
import logging
import math
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unianimate.errors import InputError, UniAnimateError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioSpan:
    """Audio to mux: ``duration`` seconds of ``path``'s first audio stream from ``start``."""

    path: str
    start: float = 0.0
    duration: float | None = None


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe_media` found in a file."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float
    has_audio: bool
    audio_duration: float | None
    video_codec: str | None
    pix_fmt: str | None


def _death_signal() -> Any:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux), or None.

    libc is loaded here, in the parent; the function the child runs between fork and exec only
    calls ``prctl`` and ``getppid`` (async-signal-safe). The signal is tied to the thread that
    starts the child, which is the one that waits for it (:func:`write_mp4`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)          # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:                      # the parent died before prctl ran
            os._exit(1)
    return die_with_parent


def start_child(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` for a child that must not outlive this process."""
    return subprocess.Popen(cmd, preexec_fn=_death_signal(), **kwargs)


def temp_beside(path: Path, suffix: str) -> str:
    """A new empty temp file beside ``path`` for writing before the atomic rename, named so a
    sweep can tell whether its writer (this process) still runs: ``.<stem>.<pid>.<random><suffix>``.
    Created with mode 0666 minus the umask (0644 usually), not the 0600 of ``mkstemp``: exports
    are meant to be shared."""
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:12]}{suffix}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return str(tmp)


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _fps_arg(fps: float) -> str:
    frac = Fraction(float(fps)).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


def _as_frames(frames: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    arr = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0:
        raise InputError(f"frames must be a non-empty uint8 array (F,H,W,3), got "
                         f"{arr.shape} {arr.dtype}")
    return arr


def _frame_iter(frames: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Frames one by one, each checked to be uint8 (H,W,3) of one size; InputError if none."""
    if isinstance(frames, np.ndarray):
        frames = _as_frames(frames)
    size = None
    count = 0
    for frame in frames:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frame {count} must be uint8 (H,W,3), got {frame.shape} {frame.dtype}")
        if size is None:
            size = frame.shape
        elif frame.shape != size:
            raise InputError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, the first was "
                             f"{size[1]}x{size[0]}")
        count += 1
        yield frame
    if count == 0:
        raise InputError("there are no frames to write")


def write_mp4(frames: np.ndarray | Iterable[np.ndarray], path: str | os.PathLike, fps: float,
              quality: int = 18, audio: AudioSpan | None = None, preset: str = "medium") -> Path:
    """Encode frames (uint8 (F,H,W,3) array, or any iterable of (H,W,3) frames, streamed) to an
    H.264/yuv420p MP4 at ``fps``; CRF ``quality`` (0 best .. 51 worst, 18 visually lossless).
    Odd sizes are padded by one black pixel (yuv420p needs even sizes). With ``audio`` the span
    is muxed as AAC: cut to ``audio.duration`` (padded with silence where the source's audio
    ends early), else to the video's length; the video keeps every frame. The file appears
    atomically (temp + rename)."""
    if not (fps and float(fps) > 0 and math.isfinite(float(fps))):
        raise InputError(f"fps must be a positive number, got {fps}")
    if not (0 <= int(quality) <= 51):
        raise InputError(f"quality (CRF) must be in 0..51, got {quality}")
    if audio is not None and not Path(audio.path).is_file():
        raise InputError(f"audio source {audio.path!r} does not exist")
    it = _frame_iter(frames)
    first = next(it)
    h0, w0 = first.shape[:2]
    pad_h, pad_w = h0 % 2, w0 % 2
    h, w = h0 + pad_h, w0 + pad_w
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, ".mp4")
    cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", _fps_arg(fps), "-i", "-"]
    if audio is not None:
        cmd += ["-ss", f"{max(0.0, audio.start):.6f}"]
        if audio.duration:
            cmd += ["-t", f"{audio.duration:.6f}"]
        cmd += ["-i", str(audio.path), "-map", "0:v:0", "-map", "1:a:0?",
                "-c:a", "aac", "-b:a", "160k"]
        # The video's frames always all stay: an audio span that ends early (a source whose
        # audio is shorter, a start past its end, or a duration rounded down by a microsecond)
        # is padded with silence. "-shortest" alone would cut the video to the audio and drop
        # frames; with a known duration the audio is exactly that long and nothing is cut.
        if audio.duration:
            cmd += ["-af", f"apad=whole_dur={audio.duration:.6f}"]
        else:
            cmd += ["-af", "apad", "-shortest"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(int(quality)),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", tmp]
    log.debug("ffmpeg: %s", " ".join(cmd))
    count = 0
    try:
        with tempfile.TemporaryFile() as errlog:
            proc = start_child(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=errlog)
            assert proc.stdin is not None
            try:
                for frame in _chain(first, it):
                    if pad_h or pad_w:
                        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
                    proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                    count += 1
                proc.stdin.close()
            except BrokenPipeError:
                pass                                  # ffmpeg died: its message follows
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            if code != 0:
                errlog.seek(0)
                text = errlog.read().decode("utf-8", "replace").strip()
                raise UniAnimateError(f"video encoding failed (ffmpeg exit {code}): {text[-800:]}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("wrote %s (%d frames, %dx%d, %.3f fps%s)", path.name, count, w, h, float(fps),
             ", with audio" if audio is not None else "")
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def write_png_zip(frames: np.ndarray | Iterable[np.ndarray], path: str | os.PathLike,
                  prefix: str = "frame_") -> Path:
    """Frames as ``frame_000000.png`` ... in a zip (stored: PNG is already compressed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, ".zip")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, frame in enumerate(_frame_iter(frames)):
                buf = io.BytesIO()
                Image.fromarray(frame).save(buf, format="PNG")
                zf.writestr(f"{prefix}{i:06d}.png", buf.getvalue())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def side_by_side_frames(reference: np.ndarray, poses: np.ndarray, frames: np.ndarray
                        ) -> np.ndarray:
    """(reference | pose | result) per frame; every panel resized to the result's size."""
    frames = _as_frames(frames)
    f, h, w, _ = frames.shape
    poses = np.asarray(poses)
    if len(poses) != f:
        raise InputError(f"{len(poses)} pose images for {f} frames")

    def fit(img: np.ndarray) -> np.ndarray:
        img = np.asarray(img, dtype=np.uint8)[..., :3]
        if img.shape[:2] != (h, w):
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        return img

    ref = fit(reference)
    out = np.empty((f, h, 3 * w, 3), dtype=np.uint8)
    out[:, :, :w] = ref
    for i in range(f):
        out[i, :, w:2 * w] = fit(poses[i])
    out[:, :, 2 * w:] = frames
    return out


def probe_media(path: str | os.PathLike) -> MediaInfo:
    """Decode a media file with PyAV: frame count, fps, size, duration, audio presence."""
    import av
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"cannot read {path.name}: {err}") from err
    with container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        frames = 0
        fps = 0.0
        width = height = 0
        codec = pix = None
        if v is not None:
            fps = float(v.average_rate or v.guessed_rate or 0)
            width, height = v.codec_context.width, v.codec_context.height
            codec, pix = v.codec_context.name, v.codec_context.pix_fmt
            for _ in container.decode(video=0):
                frames += 1
        duration = float(container.duration / 1e6) if container.duration else (
            frames / fps if fps else 0.0)
        audio_duration = None
        if a is not None and a.duration is not None and a.time_base is not None:
            audio_duration = float(a.duration * a.time_base)
    return MediaInfo(frames=frames, fps=fps, width=width, height=height, duration=duration,
                     has_audio=a is not None, audio_duration=audio_duration, video_codec=codec,
                     pix_fmt=pix)


__all__ = ["AudioSpan", "MediaInfo", "write_mp4", "write_png_zip", "side_by_side_frames",
           "probe_media", "ffmpeg_exe", "start_child"]
