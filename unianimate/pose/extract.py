"""Pose extraction from a driving video: sample frames (interval, trim), run DWPose on each, bridge
short runs of frames without a person, and say what happened."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.smooth import fill_gaps
from unianimate.pose.types import Pose, PoseSequence
from unianimate.video.reader import VideoReader

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (frames done, frames expected)


class Detector(Protocol):
    """Anything called on a uint8 RGB frame that returns a result with ``pose`` and ``person_count``."""

    def __call__(self, frame: np.ndarray): ...


@dataclass(frozen=True)
class ExtractionResult:
    """The extracted sequence (one pose per sampled frame; frames where nobody was found and that
    could not be bridged hold an empty pose), the sampled-frame indices without a person, per
    frame person counts, and human-readable messages."""

    sequence: PoseSequence
    frames_without_person: tuple[int, ...]
    person_counts: tuple[int, ...] = ()
    messages: tuple[str, ...] = field(default_factory=tuple)
    filled_frames: tuple[int, ...] = ()


def _ranges(indices: list[int]) -> str:
    parts, i = [], 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        parts.append(str(indices[i]) if i == j else f"{indices[i]}-{indices[j]}")
        i = j + 1
    return ", ".join(parts)


def extract_poses(video_path: str | os.PathLike, detector: Detector, frame_interval: int = 2,
                  start: float | None = None, end: float | None = None,
                  progress: ProgressFn | None = None, max_gap: int = 4,
                  max_frames: int | None = None) -> ExtractionResult:
    """Extract one pose per sampled frame of ``video_path``.

    Args:
        video_path: the driving video.
        detector: e.g. a :class:`~unianimate.pose.dwpose.DWPoseDetector`.
        frame_interval: take every n-th frame (by time; see ``unianimate.video.reader``); the
            sequence's fps is the video's fps / n.
        start, end: trim in seconds.
        progress: called as ``progress(done, expected)`` after every frame.
        max_gap: runs of at most this many frames without a person are bridged by linear
            interpolation of each point between its neighbours; longer runs stay empty.
        max_frames: stop after this many sampled frames.
    """
    if detector is None:
        raise InputError("extracting poses from a video needs a DWPose detector; load one first")
    reader = VideoReader(video_path)
    info = reader.info
    expected = reader.expected_count(frame_interval, start, end)
    if max_frames is not None:
        expected = min(expected, max_frames)
    poses: list[Pose] = []
    counts: list[int] = []
    missing: list[int] = []
    for frame in reader.frames(frame_interval, start, end, max_frames):
        result = detector(frame.image)
        counts.append(int(result.person_count))
        if result.pose is None or result.pose.is_empty():
            missing.append(frame.index)
            poses.append(Pose.empty())
        else:
            poses.append(result.pose)
        if progress is not None:
            progress(len(poses), max(expected, len(poses)))
    if not poses:
        raise InputError(f"no frames were read from {os.path.basename(str(video_path))!r}")

    messages = [f"extracted {len(poses)} poses from {info.width}x{info.height} video at "
                f"{info.fps:.3g} fps, every {frame_interval} frame(s) -> {info.fps / frame_interval:.3g} fps"]
    if info.rotation:
        messages.append(f"the video is rotated by {info.rotation} degrees; frames were turned upright")
    if info.variable_frame_rate:
        messages.append("the video has a variable frame rate; frames were resampled on a uniform time grid "
                        f"at {info.fps:.3g} fps")
    messages += reader.warnings
    several = [i for i, c in enumerate(counts) if c > 1]
    if several:
        policy = getattr(getattr(detector, "config", None), "select", "largest_central")
        chosen = "the highest-scoring person" if policy == "first" else "the largest, most central person"
        messages.append(f"several people found in {len(several)} frame(s) (up to {max(counts)}); "
                        f"{chosen} was used in each")
    filled: list[int] = []
    if missing:
        if len(missing) == len(poses):
            messages.append("no person was found in any frame; check the video shows a person")
        else:
            poses_filled = fill_gaps(poses, max_gap=max_gap, method="linear")
            filled = [i for i in missing if not poses_filled[i].is_empty()]
            poses = poses_filled
            still = sorted(set(missing) - set(filled))
            messages.append(f"no person found in {len(missing)} frame(s): {_ranges(missing)}")
            if filled:
                messages.append(f"bridged {len(filled)} frame(s) by interpolation: {_ranges(filled)}")
            if still:
                messages.append(f"{len(still)} frame(s) stay empty (gaps longer than {max_gap} frames "
                                f"or at the start/end): {_ranges(still)}")
    for m in messages:
        logger.info(m)
    seq = PoseSequence(poses, fps=info.fps / frame_interval, width=info.width, height=info.height,
                       meta={"source": os.path.basename(str(video_path)), "frame_interval": frame_interval,
                             "start": start, "end": end})
    return ExtractionResult(seq, tuple(missing), tuple(counts), tuple(messages), tuple(filled))
