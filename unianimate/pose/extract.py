"""Pose extraction from a driving video: sample frames (interval, trim), run DWPose on each, follow
one person through the video (:mod:`unianimate.pose.track`), bridge short runs of frames without
that person, and say what happened. :func:`first_frame_people` lists the people of the first
frame so that a user can choose whom to follow (``extract_poses(..., person=i)``)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.smooth import fill_gaps
from unianimate.pose.track import PersonTracker
from unianimate.pose.types import Pose, PoseSequence
from unianimate.video.reader import VideoReader, describe_sampling

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (frames done, frames expected)


class Detector(Protocol):
    """Anything called on a uint8 RGB frame that returns a result with ``pose``,
    ``person_count`` and ``boxes``, and takes an optional ``choose(boxes, pose_of)`` callback
    that picks the person (see ``DWPoseDetector.__call__``)."""

    def __call__(self, frame: np.ndarray, choose=None): ...


@dataclass(frozen=True)
class PersonCandidate:
    """One person of the first frame: ``index`` (what ``person=`` takes), the box x0 y0 x1 y1 in
    pixels of the displayed frame, and the box normalised to [0, 1]."""

    index: int
    box: tuple[float, float, float, float]
    box_normalised: tuple[float, float, float, float]


@dataclass(frozen=True)
class FirstFramePeople:
    """The first sampled frame with anyone in it: its index among the sampled frames, the RGB
    image, the people found (detector order) and the one followed by default."""

    frame_index: int
    image: np.ndarray
    candidates: tuple[PersonCandidate, ...]
    default: int | None

    def annotated(self) -> np.ndarray:
        """The frame with each person's box and index drawn (the default one in yellow)."""
        import cv2

        img = self.image.copy()
        size = max(img.shape[:2])
        thick = max(2, round(size / 300))
        scale = max(0.6, size / 320)          # numbers stay readable when the UI shrinks the frame
        for c in self.candidates:
            x0, y0, x1, y1 = (int(round(v)) for v in c.box)
            color = (255, 220, 0) if c.index == self.default else (0, 200, 255)
            cv2.rectangle(img, (x0, y0), (x1, y1), color, thick)
            text = str(c.index)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            # the number on a filled tag in the box's colour, inside the box's top-left corner
            cv2.rectangle(img, (x0, y0), (x0 + tw + 2 * thick, y0 + th + base + 2 * thick), color, -1)
            cv2.putText(img, text, (x0 + thick, y0 + th + thick), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), thick, cv2.LINE_AA)
        return img


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


def first_frame_people(video_path: str | os.PathLike, detector: Detector, frame_interval: int = 2,
                       start: float | None = None, end: float | None = None,
                       max_search: int = 64) -> FirstFramePeople:
    """The people of the first sampled frame (same ``frame_interval``/``start``/``end`` as the
    extraction) where the detector finds anyone, looking at up to ``max_search`` frames;
    ``candidates[i].index`` is what ``extract_poses(..., person=i)`` follows."""
    if detector is None:
        raise InputError("finding the people of a video needs a DWPose detector; load one first")
    reader = VideoReader(video_path)
    for frame in reader.frames(frame_interval, start, end, max_search):
        result = detector(frame.image)
        boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes):
            h, w = frame.image.shape[:2]
            cands = tuple(PersonCandidate(i, tuple(float(v) for v in b),
                                          (float(b[0] / w), float(b[1] / h), float(b[2] / w), float(b[3] / h)))
                          for i, b in enumerate(boxes))
            return FirstFramePeople(frame.index, frame.image, cands, result.chosen)
    raise InputError(f"no person found in the first {max_search} sampled frames of "
                     f"{os.path.basename(str(video_path))!r}")


def extract_poses(video_path: str | os.PathLike, detector: Detector, frame_interval: int = 2,
                  start: float | None = None, end: float | None = None,
                  progress: ProgressFn | None = None, max_gap: int = 4,
                  max_frames: int | None = None, person: int | None = None,
                  track: bool = True) -> ExtractionResult:
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
        person: whom to follow: the index of a person of the first frame with people (as
            :func:`first_frame_people` lists them); None = the largest, most central one.
        track: follow that person through the video (default); False chooses per frame with
            the detector's own rule (``select``), as before tracking existed.
    """
    if detector is None:
        raise InputError("extracting poses from a video needs a DWPose detector; load one first")
    if person is not None and not track:
        raise InputError("choosing a person needs tracking (track=True)")
    reader = VideoReader(video_path)
    policy = getattr(getattr(detector, "config", None), "select", "largest_central")
    tracker = PersonTracker(person, reader.info.width, reader.info.height, select=policy) if track else None
    info = reader.info
    expected = reader.expected_count(frame_interval, start, end)
    if max_frames is not None:
        expected = min(expected, max_frames)
    poses: list[Pose] = []
    counts: list[int] = []
    missing: list[int] = []
    for frame in reader.frames(frame_interval, start, end, max_frames):
        if tracker is None:
            result = detector(frame.image)
        else:
            tracker.frame = frame.index      # the detector skips choose() when nobody is found
            result = detector(frame.image, choose=tracker.choose)
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

    messages = [f"extracted {len(poses)} poses from a {info.width}x{info.height} video at {info.fps:.3g} fps; "
                + describe_sampling(len(poses), None, "frames", frame_interval, start, end,
                                    info.fps / frame_interval)]
    if info.rotation:
        messages.append(f"the video is rotated by {info.rotation} degrees; frames were turned upright")
    if info.variable_frame_rate:
        messages.append("the video has a variable frame rate; frames were resampled on a uniform time grid "
                        f"at {info.fps:.3g} fps")
    messages += reader.warnings
    several = [i for i, c in enumerate(counts) if c > 1]
    if tracker is not None and tracker.started_at is not None and (several or person is not None):
        who = f"person {person}" if person is not None else (
            "the highest-scoring person" if policy == "first" else "the largest, most central person")
        messages.append(f"several people found in {len(several)} frame(s) (up to {max(counts)}); "
                        f"followed {who} of frame {tracker.started_at} through the video "
                        f"(box overlap and keypoint distance)")
        if tracker.lost:
            messages.append(f"the followed person was not found in {len(tracker.lost)} frame(s): "
                            f"{_ranges(tracker.lost)}")
    elif several:
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
                             "start": start, "end": end, "person": person})
    return ExtractionResult(seq, tuple(missing), tuple(counts), tuple(messages), tuple(filled))
