"""Video probing and frame reading with PyAV: rotation, variable frame rate, trim, frame interval.

- **fps** is the stream's average frame rate (falling back to frames / duration).
- **Sampling by time.** Frames are taken on a uniform time grid ``start + k * interval / fps``:
  each grid time gets the most recent decoded frame at or before it (half a frame of tolerance).
  For a constant-frame-rate video this is exactly every ``interval``-th frame (the reference's
  ``frame_interval``); for a variable-frame-rate video it resamples to the average rate, repeating
  or dropping frames, so that poses keep the video's timing. The output rate is ``fps / interval``.
- **Rotation.** The display matrix (``frame.rotation``, counter-clockwise degrees) or an old
  ``rotate`` tag (clockwise degrees) is applied, so frames come out the way players show them;
  ``width``/``height`` in :class:`VideoInfo` are the displayed size.
- **Trim.** ``start``/``end`` in seconds from the first frame; ``end`` is exclusive.
- **Errors.** Non-video files, images, corrupt containers and videos without frames raise
  :class:`InputError` saying what is wrong.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from unianimate.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".avif"}
_IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "j2k_pipe",
                  "jpegls_pipe", "pam_pipe", "pgm_pipe", "ppm_pipe", "qoi_pipe", "svg_pipe"}
MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found. ``frame_count`` is the container's count (or an estimate
    from duration x fps when the container has none); ``rotation`` is counter-clockwise degrees."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int
    has_audio: bool
    codec: str
    variable_frame_rate: bool


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: its index in the output, the time of the grid point and of the source
    frame used (seconds from the video's start), and the uint8 RGB image (H, W, 3)."""

    index: int
    time: float
    source_time: float
    image: np.ndarray


def _av():
    import av

    return av


def _open(path: str | os.PathLike):
    av = _av()
    p = Path(path)
    if not p.exists():
        raise InputError(f"video {str(p)!r} does not exist")
    if p.is_dir():
        raise InputError(f"{str(p)!r} is a folder, not a video file")
    if p.stat().st_size == 0:
        raise InputError(f"video {p.name!r} is an empty file")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"{p.name!r} is an image, not a video; give a video file (mp4, mov, webm, ...)")
    try:
        container = av.open(str(p), "r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{p.name!r} is not a readable video ({exc}); the file may be corrupt or "
                         f"not a video at all") from None
    if container.format.name in _IMAGE_FORMATS:
        container.close()
        raise InputError(f"{p.name!r} is an image ({container.format.name}), not a video")
    if not container.streams.video:
        container.close()
        raise InputError(f"{p.name!r} has no video frames (no video stream: an empty, audio-only or "
                         f"non-video file)")
    return container


def _rotation_tag(stream) -> int:
    tag = stream.metadata.get("rotate") if stream.metadata else None
    try:
        return -int(float(tag)) % 360 if tag else 0  # the tag is clockwise
    except ValueError:
        return 0


def _fps(stream, container) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)):
            return float(rate)
    if stream.frames and container.duration:
        return stream.frames / (container.duration / 1e6)
    raise InputError("the video has no usable frame rate; re-encode it (e.g. with ffmpeg -r 25)")


def _stream_duration(stream, container) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1e6
    return 0.0


def _is_vfr(container, stream, fps: float, limit: int = 300) -> bool:
    """Timestamps of the first packets vary by more than a third of a frame -> variable rate."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                pts.append(float(packet.pts * stream.time_base))
            if len(pts) >= limit:
                break
    except _av().FFmpegError:
        return False
    if len(pts) < 3:
        return False
    deltas = np.diff(np.sort(np.array(pts)))
    return bool(np.max(np.abs(deltas - 1.0 / fps)) > 1.0 / (3 * fps))


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, fps, frame count, duration, rotation, audio of a video (decodes one frame)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = _fps(stream, container)
        duration = _stream_duration(stream, container)
        rotation = None
        try:
            for frame in container.decode(stream):
                rotation = int(round(frame.rotation)) % 360 if frame.rotation else 0
                w, h = frame.width, frame.height
                break
        except _av().FFmpegError as exc:
            raise InputError(f"{Path(path).name!r} cannot be decoded ({exc}); the file is corrupt") from None
        if rotation is None:
            raise InputError(f"{Path(path).name!r} contains no video frames")
        rotation = rotation or _rotation_tag(stream)
        if w * h > MAX_PIXELS:
            raise InputError(f"the video is {w}x{h}; the limit is {MAX_PIXELS} pixels per frame")
        if rotation in (90, 270):
            w, h = h, w
        count = int(stream.frames or 0) or max(1, int(round(duration * fps)))
        container.seek(0)
        vfr = _is_vfr(container, stream, fps)
        return VideoInfo(path=str(path), width=w, height=h, fps=fps, frame_count=count, duration=duration,
                         rotation=rotation, has_audio=bool(container.streams.audio),
                         codec=stream.codec_context.name, variable_frame_rate=vfr)
    finally:
        container.close()


def _rotate(img: np.ndarray, ccw_degrees: int) -> np.ndarray:
    k = (ccw_degrees // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def check_frame_interval(frame_interval: int) -> None:
    """Raise ``InputError`` unless ``frame_interval`` is an integer >= 1."""
    if isinstance(frame_interval, bool) or not isinstance(frame_interval, (int, np.integer)) or frame_interval < 1:
        raise InputError(f"frame_interval must be an integer >= 1, got {frame_interval!r}")


def _check_trim(start: float | None, end: float | None) -> tuple[float, float]:
    s = 0.0 if start is None else float(start)
    e = math.inf if end is None else float(end)
    if not math.isfinite(s) or s < 0:
        raise InputError(f"start must be a time in seconds >= 0, got {start!r}")
    if math.isnan(e) or e <= s:
        raise InputError(f"end ({end!r} s) must come after start ({s} s)")
    return s, e


def sample_indices(count: int, fps: float, frame_interval: int = 1, start: float | None = None,
                   end: float | None = None) -> list[int]:
    """Indices of the items of a constant-rate sequence (``count`` items at ``fps``: pose JSON
    frames, a folder of pose images) that :meth:`VideoReader.frames` would give for a video of
    those frames: grid times ``start + k * interval / fps``, each taking the item at
    ``round(t * fps)``; ``end`` exclusive. InputError when the trim keeps nothing."""
    check_frame_interval(frame_interval)
    s, e = _check_trim(start, end)
    if not (fps > 0 and math.isfinite(fps)):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    out: list[int] = []
    k = 0
    while True:
        t = s + k * frame_interval / fps
        i = int(math.floor(t * fps + 0.5 + 1e-9))
        if t >= e or i >= count:
            break
        out.append(i)
        k += 1
    if not out and count > 0:
        raise InputError(f"no frames between {s:g} s and {e:g} s; the sequence is {count / fps:.2f} s "
                         f"long ({count} frames at {fps:.3g} fps)")
    return out


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, ..."""
    n = int(n)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe_sampling(kept: int, total: int | None, what: str, frame_interval: int,
                      start: float | None, end: float | None, fps_out: float) -> str:
    """One line saying what sampling kept, e.g. ``kept 20 of 40 poses (every 2nd, from 1 s to
    3 s) -> 4 fps``; ``total`` None when unknown (a decoded video)."""
    how = []
    if frame_interval > 1:
        how.append(f"every {ordinal(frame_interval)}")
    if start or end is not None:
        span = f"from {float(start or 0):g} s"
        how.append(span + (f" to {float(end):g} s" if end is not None else " to the end"))
    of = f" of {total}" if total is not None else ""
    detail = f" ({', '.join(how)})" if how else ""
    return f"kept {kept}{of} {what}{detail} -> {fps_out:.3g} fps"


@dataclass
class VideoReader:
    """Reads frames of one video; ``warnings`` collects problems met while decoding."""

    path: str | os.PathLike
    info: VideoInfo = field(init=False)
    warnings: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.info = probe_video(self.path)

    def expected_count(self, frame_interval: int = 1, start: float | None = None, end: float | None = None) -> int:
        """How many frames :meth:`frames` will give (from the probed duration; an estimate)."""
        check_frame_interval(frame_interval)
        s, e = _check_trim(start, end)
        span = min(e, self.info.frame_count / self.info.fps) - s
        step = frame_interval / self.info.fps
        return max(0, int(math.floor(span / step - 1e-9)) + 1) if span > 0 else 0

    def frames(self, frame_interval: int = 1, start: float | None = None, end: float | None = None,
               max_frames: int | None = None) -> Iterator[SampledFrame]:
        """Sampled frames on the time grid described in the module docstring."""
        check_frame_interval(frame_interval)
        s, e = _check_trim(start, end)
        av = _av()
        fps = self.info.fps
        step = frame_interval / fps
        tol = 0.5 / fps
        container = _open(self.path)
        emitted = 0
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            if s > 0:
                container.seek(int((s + t0) / stream.time_base), stream=stream, backward=True, any_frame=False)
            prev = None  # (time, frame)
            k = 0
            decoded = 0

            def grid(k: int) -> float:
                return s + k * step

            def emit(k: int, item) -> SampledFrame:
                t, frame = item
                img = frame.to_ndarray(format="rgb24")
                return SampledFrame(emitted, grid(k) , t, _rotate(img, self.info.rotation))

            try:
                for frame in container.decode(stream):
                    t = (float(frame.pts * frame.time_base) - t0) if frame.pts is not None else decoded / fps
                    decoded += 1
                    while prev is not None and t > grid(k) + tol and grid(k) < e:
                        yield emit(k, prev)
                        emitted += 1
                        k += 1
                        if max_frames is not None and emitted >= max_frames:
                            return
                    if grid(k) >= e:
                        break
                    prev = (t, frame)
            except av.FFmpegError as exc:
                if decoded == 0:
                    raise InputError(f"{Path(self.path).name!r} cannot be decoded ({exc}); the file is corrupt") from None
                msg = f"decoding stopped after {decoded} frames ({exc}); the rest of the video is unreadable"
                logger.warning(msg)
                self.warnings.append(msg)
            # the last decoded frame covers grid points up to half a frame after it
            while prev is not None and grid(k) <= prev[0] + tol and grid(k) < e:
                if max_frames is not None and emitted >= max_frames:
                    return
                yield emit(k, prev)
                emitted += 1
                k += 1
            if decoded == 0:
                raise InputError(f"{Path(self.path).name!r} contains no video frames")
            if emitted == 0 and s > 0:
                raise InputError(f"no frames between {s} s and {e} s; the video is "
                                 f"{self.info.duration:.2f} s long")
        finally:
            container.close()


def read_frames(path: str | os.PathLike, frame_interval: int = 1, start: float | None = None,
                end: float | None = None, max_frames: int | None = None) -> tuple[list[np.ndarray], VideoInfo]:
    """All sampled frames as uint8 RGB arrays, and the video's info."""
    reader = VideoReader(path)
    frames = [f.image for f in reader.frames(frame_interval, start, end, max_frames)]
    return frames, reader.info
