"""Driving input in the formats users have: a driving video (poses are extracted), a video of
already-drawn pose images, a folder or zip of pose images, or a pose JSON file.

Which kind a path is: a folder -> pose images; ``.zip`` -> pose images; ``.json`` -> keypoints;
anything else is opened as a video. For videos, ``kind="auto"`` looks at up to 8 frames spread
over the video and calls it drawn poses when the frames are mostly black (>= 80 % of pixels with
all channels < 24) and what is not black is strongly coloured (mean HSV saturation of those pixels
>= 0.6) - the look of DWPose drawings; ``kind="video"`` or ``"pose_images"`` forces the choice.

Drawn pose images carry no keypoints, so they cannot be aligned to the reference body; the result
says so in ``messages``. Trim (``start``/``end`` in seconds) and ``frame_interval`` apply to every
source alike, on the time grid of :mod:`unianimate.video.reader`: videos at their frame rate, pose
JSON at its ``fps``, folders and zips at ``image_fps``; the messages say what was kept.
``smooth`` (0..1) One-Euro filters keypoints (JSON, extracted videos); ``person`` chooses whom
to follow in a multi-person video (:func:`unianimate.pose.extract.first_frame_people`).

Which sources need the DWPose detector: only real driving videos (:func:`driving_needs_detector`),
decided before any detector is asked for, so drawn-pose videos, JSON, folders and zips work with
no detector files.

Folders: the images directly inside (.png .jpg .jpeg .bmp .webp), natural order; other files are
ignored. Zips are read in memory, never extracted: members with absolute paths or ``..`` parts, members that
are not images, too many members, and oversized or over-compressed members are refused. macOS
``__MACOSX/`` entries and folders are ignored.
"""
from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np

from unianimate.errors import InputError
from unianimate.pose.io import load_pose_sequence
from unianimate.pose.types import PoseSequence
from unianimate.video.reader import VideoReader, check_frame_interval, describe_sampling, sample_indices

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_IMAGES = 5000
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_COMPRESSION_RATIO = 200
MAX_IMAGE_PIXELS = 4096 * 4096
KINDS = ("auto", "video", "pose_images")
#: limits of the frame rate given to a folder / zip of pose images (frames per second)
IMAGE_FPS_RANGE = (1.0, 120.0)
NO_ALIGN = ("drawn pose images carry no keypoints: they are used as they are and cannot be aligned "
            "to the reference body")


@dataclass
class DrivingInput:
    """What the driving source gave: keypoints (alignable) or drawn pose images (not), the fps of
    the frames, messages for the user, and the source video (for its audio) when there is one."""

    keypoints: PoseSequence | None
    pose_images: list[np.ndarray] | None
    fps: float
    messages: list[str] = field(default_factory=list)
    source_video: str | None = None
    kind: str = "video"
    frames_without_person: tuple[int, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.keypoints) if self.keypoints is not None else len(self.pose_images or [])

    @property
    def can_align(self) -> bool:
        return self.keypoints is not None


def natural_key(name: str) -> list:
    """Sort key so that frame2 < frame10 (digits compared as numbers, case-insensitive)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def looks_like_drawn_poses(frames: list[np.ndarray]) -> bool:
    """The documented heuristic: mostly black, and the rest strongly saturated."""
    if not frames:
        return False
    dark_fracs, sats = [], []
    for img in frames:
        dark = (img < 24).all(axis=2)
        dark_fracs.append(dark.mean())
        if (~dark).any():
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            sats.append(hsv[..., 1][~dark].mean() / 255.0)
    if not sats:
        return False
    return float(np.mean(dark_fracs)) >= 0.8 and float(np.mean(sats)) >= 0.6


def _decode_image(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(f"image {name!r} is {w}x{h}; the limit is {MAX_IMAGE_PIXELS} pixels")
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name!r} is not a readable image ({exc})") from None


def _uniform_size(images: list[np.ndarray], names: list[str], messages: list[str]) -> list[np.ndarray]:
    h, w = images[0].shape[:2]
    odd = [n for img, n in zip(images, names) if img.shape[:2] != (h, w)]
    if odd:
        messages.append(f"{len(odd)} pose image(s) differ in size from the first ({w}x{h}) and were "
                        f"resized, e.g. {odd[0]!r}")
        images = [img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
                  for img in images]
    return images


def _safe_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return False
    return ".." not in PurePosixPath(name).parts


def read_zip_images(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """Images of a zip, in natural order of their names, read in memory with the safety checks of
    the module docstring."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path.name!r} is not a readable zip file ({exc})") from None
    with zf:
        members = []
        total = 0
        for info in zf.infolist():
            name = info.filename
            if not _safe_member(name):
                raise InputError(f"the zip contains an unsafe member name {name!r} (absolute path or '..'); "
                                 f"refusing the whole zip")
            if info.is_dir() or name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._"):
                continue
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise InputError(f"the zip contains {name!r}, which is not an image; a pose zip may only "
                                 f"hold {', '.join(IMAGE_EXTENSIONS)} files")
            if info.file_size > MAX_MEMBER_BYTES:
                raise InputError(f"zip member {name!r} is {info.file_size / 1e6:.0f} MB; the limit is "
                                 f"{MAX_MEMBER_BYTES / 1e6:.0f} MB per image")
            if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
                raise InputError(f"zip member {name!r} is compressed {info.file_size // info.compress_size}:1, "
                                 f"which looks like a zip bomb; refusing the zip")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise InputError(f"the zip unpacks to more than {MAX_TOTAL_BYTES / 1e9:.0f} GB; refusing it")
            members.append(info)
        if len(members) > MAX_IMAGES:
            raise InputError(f"the zip has {len(members)} images; the limit is {MAX_IMAGES}")
        if not members:
            raise InputError(f"the zip {path.name!r} contains no images")
        members.sort(key=lambda i: natural_key(i.filename))
        images, names = [], []
        for info in members:
            with zf.open(info) as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)  # never trust the header's size alone
            if len(data) > MAX_MEMBER_BYTES:
                raise InputError(f"zip member {info.filename!r} is larger than its header says; refusing the zip")
            images.append(_decode_image(data, info.filename))
            names.append(info.filename)
    return images, names


def read_folder_images(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """Images of a folder (not recursive), natural order; other files are ignored with a count."""
    path = Path(path)
    files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    if not files:
        raise InputError(f"the folder {str(path)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    if len(files) > MAX_IMAGES:
        raise InputError(f"the folder has {len(files)} images; the limit is {MAX_IMAGES}")
    files.sort(key=lambda p: natural_key(p.name))
    images = []
    for p in files:
        if p.stat().st_size > MAX_MEMBER_BYTES:
            raise InputError(f"image {p.name!r} is larger than {MAX_MEMBER_BYTES / 1e6:.0f} MB")
        images.append(_decode_image(p.read_bytes(), p.name))
    return images, [p.name for p in files]


def check_image_fps(image_fps: float) -> float:
    """The frame rate of a folder / zip of pose images, checked against :data:`IMAGE_FPS_RANGE`."""
    lo, hi = IMAGE_FPS_RANGE
    try:
        fps = float(image_fps)
    except (TypeError, ValueError):
        fps = float("nan")
    if isinstance(image_fps, bool) or not lo <= fps <= hi:
        raise InputError(f"the frame rate of pose images must be a number from {lo:g} to {hi:g} fps, "
                         f"got {image_fps!r}")
    return fps


def _video_kind(reader: VideoReader) -> str:
    """``"pose_images"`` when the video's frames look like drawn poses, else ``"video"``."""
    n = max(1, min(8, reader.info.frame_count))
    step = max(1, reader.info.frame_count // n)
    sample = [f.image for f in reader.frames(step, max_frames=n)]
    return "pose_images" if looks_like_drawn_poses(sample) else "video"


def classify_driving(path: str | os.PathLike, kind: str = "auto") -> str:
    """What a driving source is: ``"keypoints"`` (pose JSON), ``"pose_images"`` (a folder or zip
    of images, or a video of drawn poses) or ``"video"`` (a real video: poses must be extracted).
    Reads a few frames of a video for ``kind="auto"``; InputError for a missing or unreadable
    source."""
    if kind not in KINDS:
        raise InputError(f"unknown driving kind {kind!r}; use one of {KINDS}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"driving input {p.name!r} does not exist; upload it again")
    if p.is_dir() or p.suffix.lower() == ".zip":
        return "pose_images"
    if p.suffix.lower() == ".json":
        return "keypoints"
    if kind != "auto":
        VideoReader(p)            # still a readable video?
        return kind
    return _video_kind(VideoReader(p))


def driving_needs_detector(path: str | os.PathLike, kind: str = "auto") -> bool:
    """True only for a real driving video, whose poses must be extracted by DWPose; ask this
    before loading (or downloading) the detector."""
    return classify_driving(path, kind) == "video"


def load_driving(path: str | os.PathLike, detector=None, frame_interval: int = 2, start: float | None = None,
                 end: float | None = None, progress: Callable[[int, int], None] | None = None,
                 kind: str = "auto", image_fps: float = 30.0, max_frames: int | None = None, *,
                 smooth: float = 0.0, person: int | None = None,
                 display_name: str | None = None) -> DrivingInput:
    """Load a driving source (see the module docstring).

    Args:
        path: video file, folder of images, ``.zip`` of images, or pose ``.json``.
        detector: DWPose detector, needed only when poses must be extracted from a real video.
        frame_interval: keep every n-th frame (of every kind of source).
        start, end: trim in seconds (every kind of source).
        progress: ``progress(done, expected)`` per extracted frame.
        kind: ``"auto"``, ``"video"`` (a real driving video) or ``"pose_images"`` (drawn poses).
        image_fps: frame rate of a folder/zip of images before ``frame_interval``.
        max_frames: keep at most this many frames.
        smooth: One-Euro smoothing strength of keypoints, 0 (off) .. 1.
        person: which person of a multi-person video to follow (index in the first frame).
        display_name: the name shown in messages instead of the path's (e.g. the user's file
            name when the path is a temporary copy).
    """
    from unianimate.pose.smooth import check_strength

    if kind not in KINDS:
        raise InputError(f"unknown driving kind {kind!r}; use one of {KINDS}")
    check_frame_interval(frame_interval)
    smooth = check_strength(smooth)
    p = Path(path)
    name = display_name or p.name
    if not p.exists():
        raise InputError(f"driving input {name!r} does not exist; upload it again")

    if p.is_dir() or p.suffix.lower() == ".zip":
        fps_in = check_image_fps(image_fps)
        images, names = read_folder_images(p) if p.is_dir() else read_zip_images(p)
        messages = [f"read {len(images)} pose images from {'folder' if p.is_dir() else 'zip'} {name!r} "
                    f"(natural order: {names[0]!r} ... {names[-1]!r}) at {fps_in:.3g} fps"]
        keep = sample_indices(len(images), fps_in, frame_interval, start, end)[:max_frames]
        images = _uniform_size([images[i] for i in keep], [names[i] for i in keep], messages)
        messages.append(describe_sampling(len(images), len(names), "images", frame_interval, start, end,
                                          fps_in / frame_interval))
        if not looks_like_drawn_poses(images[:: max(1, len(images) // 8)]):
            messages.append("warning: these images do not look like drawn DWPose skeletons on black")
        messages.append(NO_ALIGN)
        _smoothing_unavailable(smooth, messages)
        return DrivingInput(None, images, fps_in / frame_interval, messages, None, "pose_images")

    if p.suffix.lower() == ".json":
        seq = load_pose_sequence(p)
        total = len(seq)
        keep = sample_indices(total, seq.fps, frame_interval, start, end)[:max_frames]
        seq = PoseSequence([seq.poses[i] for i in keep], seq.fps / frame_interval, seq.width, seq.height,
                           dict(seq.meta, frame_interval=frame_interval, start=start, end=end))
        messages = [f"loaded {total} poses at {seq.fps * frame_interval:.3g} fps from {name!r}; "
                    + describe_sampling(len(seq), total, "poses", frame_interval, start, end, seq.fps)]
        seq = _smoothed(seq, smooth, messages)
        return DrivingInput(seq, None, seq.fps, messages, None, "keypoints")

    reader = VideoReader(p)
    info = reader.info
    auto_msg = None
    if kind == "auto":
        kind = _video_kind(reader)
        auto_msg = f"{name!r} looks like {'drawn pose images' if kind == 'pose_images' else 'a real driving video'}" \
                   f" (set the kind explicitly if this is wrong)"
    if kind == "pose_images":
        images = [f.image for f in reader.frames(frame_interval, start, end, max_frames)]
        messages = [m for m in (auto_msg,) if m] + [
            f"read drawn pose frames from {name!r}; " + describe_sampling(
                len(images), None, "frames", frame_interval, start, end, info.fps / frame_interval), NO_ALIGN]
        messages += reader.warnings
        _smoothing_unavailable(smooth, messages)
        return DrivingInput(None, images, info.fps / frame_interval, messages, str(p), "pose_images")

    from unianimate.pose.extract import extract_poses

    if detector is None:
        raise InputError("this driving video needs pose extraction, which needs the DWPose models; "
                         "load the detector (DWPoseDetector.from_pretrained) first")
    result = extract_poses(p, detector, frame_interval=frame_interval, start=start, end=end,
                           progress=progress, max_frames=max_frames, person=person)
    messages = [m for m in (auto_msg,) if m] + list(result.messages)
    seq = _smoothed(result.sequence, smooth, messages)
    return DrivingInput(seq, None, seq.fps, messages, str(p), "video", result.frames_without_person)


def load_pose_input(path: str | os.PathLike, frame_interval: int = 1, start: float | None = None,
                    end: float | None = None, image_fps: float = 30.0, smooth: float = 0.0,
                    display_name: str | None = None) -> DrivingInput:
    """A pose sequence given as poses: a pose JSON, a folder or zip of pose images, or a video of
    drawn poses (``.mp4`` ...). Never needs the detector; a real video is refused with a pointer
    to the driving-video input."""
    p = Path(path)
    if classify_driving(p) == "video":
        raise InputError(f"{display_name or p.name!r} looks like a real video, not drawn poses; load it as a "
                         f"driving video (its poses are extracted)")
    return load_driving(p, None, frame_interval, start, end, kind="pose_images" if _is_video_file(p) else "auto",
                        image_fps=image_fps, smooth=smooth, display_name=display_name)


def _is_video_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() not in (".json", ".zip")


def _smoothed(seq: PoseSequence, strength: float, messages: list[str]) -> PoseSequence:
    from unianimate.pose.smooth import jitter, smooth_with_strength

    if strength == 0:
        return seq
    out = smooth_with_strength(seq, strength)
    messages.append(f"smoothed the keypoints (One-Euro, strength {strength:.2f}): jitter "
                    f"{jitter(seq.poses):.4f} -> {jitter(out.poses):.4f}")
    return out


def _smoothing_unavailable(strength: float, messages: list[str]) -> None:
    if strength > 0:
        messages.append("smoothing needs keypoints; drawn pose images are used as they are")
