"""Following one dancer through a multi-person video.

Per-frame choice ("the largest, most central person") switches between dancers whenever they
cross, change size or step forward. :class:`PersonTracker` instead follows one person:

- **Start**: in the first frame where anyone is found, the person ``person`` (an index into that
  frame's boxes, as :func:`unianimate.pose.extract.first_frame_people` lists them) or, when not
  given, the detector's own choice (the largest, most central one by default).
- **Then**, frame by frame: the box overlapping the followed person's last box most (IoU). When
  that is ambiguous (another box within ``ambiguity`` of the best IoU, or the best IoU below
  ``min_iou``), the candidates' poses are compared with the followed person's last pose (mean
  distance of the body points both have, normalised coordinates) and the closest wins.
- **Lost**: when no box overlaps and no pose is within ``max_distance`` of the last one, the
  person is taken as not in the frame (``None``: the frame gets no pose; short gaps are bridged
  later). The last known box and pose are kept, so the person is found again when they return.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.types import MISSING, Pose


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (N, 4), all x0 y0 x1 y1 -> (N,)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    union = area(np.asarray(a, dtype=np.float64)) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_distance(a: Pose, b: Pose) -> float | None:
    """Mean distance of the body points present in both poses (normalised units); None when
    they share fewer than 3 points."""
    ok = (a.body[:, 0] != MISSING) & (b.body[:, 0] != MISSING)
    if ok.sum() < 3:
        return None
    return float(np.linalg.norm(a.body[ok] - b.body[ok], axis=1).mean())


@dataclass
class PersonTracker:
    """Chooses the followed person in each frame (see the module docstring); pass
    :meth:`choose` to a detector as its ``choose`` callback, frame after frame."""

    person: int | None = None
    width: int = 1
    height: int = 1
    min_iou: float = 0.3
    ambiguity: float = 0.2
    max_distance: float = 0.25
    select: str = "largest_central"       # start rule when person is None (DWPoseConfig.select)
    last_box: np.ndarray | None = field(default=None, init=False)
    last_pose: Pose | None = field(default=None, init=False)
    started_at: int | None = field(default=None, init=False)
    lost: list[int] = field(default_factory=list, init=False)
    frame: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.person is not None and (isinstance(self.person, bool) or not isinstance(self.person, (int, np.integer))
                                        or self.person < 0):
            raise InputError(f"person must be a whole number >= 0 (its index in the first frame), got {self.person!r}")

    def choose(self, boxes: np.ndarray, pose_of: Callable[[int], Pose]) -> int | None:
        """Index of the followed person among ``boxes`` (N, 4) in pixels, or None."""
        frame, self.frame = self.frame, self.frame + 1
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            if self.last_box is not None:
                self.lost.append(frame)
            return None
        if self.last_box is None:
            idx = self._start(boxes)
            self.started_at = frame
        else:
            idx = self._follow(boxes, pose_of)
            if idx is None:
                self.lost.append(frame)
                return None
        self.last_box = boxes[idx].copy()
        self.last_pose = pose_of(idx)
        return idx

    def _start(self, boxes: np.ndarray) -> int:
        if self.person is None:
            from unianimate.pose.dwpose import choose_person
            return choose_person(boxes, self.width, self.height, self.select)
        if self.person >= len(boxes):
            raise InputError(f"person {self.person} was asked for, but the first frame with people shows "
                             f"{len(boxes)} (choose 0..{len(boxes) - 1})")
        return int(self.person)

    def _follow(self, boxes: np.ndarray, pose_of: Callable[[int], Pose]) -> int | None:
        iou = box_iou(self.last_box, boxes)
        best = float(iou.max())
        if best >= self.min_iou:
            contenders = [int(i) for i in np.nonzero(iou >= best - self.ambiguity)[0]]
        else:
            contenders = list(range(len(boxes)))
        if len(contenders) == 1 and best >= self.min_iou:
            return contenders[0]
        scored = []
        for i in contenders:
            d = keypoint_distance(self.last_pose, pose_of(i)) if self.last_pose is not None else None
            if d is not None:
                scored.append((d, -float(iou[i]), i))
        if scored:
            d, _, i = min(scored)
            if d <= self.max_distance or iou[i] >= self.min_iou:
                return i
            return None
        if best >= self.min_iou:        # no comparable keypoints: overlap decides
            return int(np.argmax(iou))
        return None
