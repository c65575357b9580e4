"""Keypoint containers: one person's pose (:class:`Pose`) and a timed sequence (:class:`PoseSequence`).

Layout (spec §5, the released model's): ``body`` (20, 2) holds the 18 OpenPose body points
(0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist, 5 left shoulder, 6 left elbow,
7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip, 12 left knee, 13 left ankle,
14 right eye, 15 left eye, 16 right ear, 17 left ear) plus 18 left foot and 19 right foot;
``hands`` (2, 21, 2) is index 0 left, 1 right; ``face`` (68, 2). Coordinates are normalised:
x / image width, y / image height, so (0, 0) is the top-left corner and (1, 1) the bottom-right.

A missing point has both coordinates equal to :data:`MISSING` (-1.0), as in the reference. A
point with either coordinate equal to MISSING is treated as missing and stored with both set.
Scores are the detector's confidences; they are kept for information and do not decide presence.
Valid points may lie slightly outside [0, 1] (e.g. after alignment); only the exact MISSING
marker means "missing".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from unianimate.errors import InputError

MISSING: float = -1.0
"""Coordinate value of a missing keypoint (both x and y)."""

NUM_BODY = 20
NUM_HAND = 21
NUM_FACE = 68

BODY_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_foot", "right_foot",
)

_SHAPES: dict[str, tuple[int, ...]] = {
    "body": (NUM_BODY, 2), "body_scores": (NUM_BODY,),
    "hands": (2, NUM_HAND, 2), "hand_scores": (2, NUM_HAND),
    "face": (NUM_FACE, 2), "face_scores": (NUM_FACE,),
}
FIELDS: tuple[str, ...] = tuple(_SHAPES)
POINT_FIELDS: tuple[str, ...] = ("body", "hands", "face")
SCORE_FIELD: dict[str, str] = {"body": "body_scores", "hands": "hand_scores", "face": "face_scores"}
"""The score field of each point field."""


def missing_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask (...,) of points (..., 2) that are missing (either coordinate is MISSING)."""
    return (points[..., 0] == MISSING) | (points[..., 1] == MISSING)


def _as_field(name: str, value: object) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)  # always a private float64 copy
    except (TypeError, ValueError) as exc:
        raise InputError(f"pose field {name!r} is not numeric ({exc}); give an array of numbers") from None
    if arr.shape != _SHAPES[name]:
        raise InputError(f"pose field {name!r} has shape {arr.shape}, expected {_SHAPES[name]}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"pose field {name!r} contains NaN or infinite values; use {MISSING} for missing points")
    return arr


@dataclass(frozen=True, eq=False)
class Pose:
    """One person's whole-body keypoints in normalised coordinates (see the module docstring).

    Arrays are copied to float64 on construction and validated (shape, finiteness); a point with
    either coordinate equal to MISSING gets both coordinates set to MISSING.
    """

    body: np.ndarray
    body_scores: np.ndarray
    hands: np.ndarray
    hand_scores: np.ndarray
    face: np.ndarray
    face_scores: np.ndarray

    def __post_init__(self) -> None:
        for name in FIELDS:
            arr = _as_field(name, getattr(self, name))
            if name in POINT_FIELDS:
                arr[missing_mask(arr)] = MISSING
            object.__setattr__(self, name, arr)

    @classmethod
    def empty(cls) -> "Pose":
        """A pose with every point missing (e.g. a frame where no person was found)."""
        return cls(
            body=np.full((NUM_BODY, 2), MISSING), body_scores=np.zeros(NUM_BODY),
            hands=np.full((2, NUM_HAND, 2), MISSING), hand_scores=np.zeros((2, NUM_HAND)),
            face=np.full((NUM_FACE, 2), MISSING), face_scores=np.zeros(NUM_FACE),
        )

    def replace(self, **fields: np.ndarray) -> "Pose":
        """A new pose with some fields replaced (validated like the constructor)."""
        values = {name: getattr(self, name) for name in FIELDS}
        values.update(fields)
        return Pose(**values)

    def copy(self) -> "Pose":
        """An independent copy."""
        return self.replace()

    @property
    def body_valid(self) -> np.ndarray:
        """(20,) bool: body points present."""
        return ~missing_mask(self.body)

    @property
    def hands_valid(self) -> np.ndarray:
        """(2, 21) bool: hand points present."""
        return ~missing_mask(self.hands)

    @property
    def face_valid(self) -> np.ndarray:
        """(68,) bool: face points present."""
        return ~missing_mask(self.face)

    def is_empty(self) -> bool:
        """True when no point at all is present."""
        return not (self.body_valid.any() or self.hands_valid.any() or self.face_valid.any())

    def allclose(self, other: "Pose", atol: float = 1e-9) -> bool:
        """Every field equal within ``atol`` (missing markers included)."""
        return all(np.allclose(getattr(self, n), getattr(other, n), rtol=0.0, atol=atol) for n in FIELDS)


@dataclass(eq=False)
class PoseSequence:
    """Poses over time: ``poses[i]`` is shown at time ``i / fps``; ``width`` x ``height`` is the
    size in pixels of the source the normalised coordinates refer to."""

    poses: list[Pose]
    fps: float
    width: int
    height: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.poses = list(self.poses)
        for i, p in enumerate(self.poses):
            if not isinstance(p, Pose):
                raise InputError(f"frame {i} of the pose sequence is a {type(p).__name__}, not a Pose")
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            raise InputError(f"pose sequence fps {self.fps!r} is not a number") from None
        if not np.isfinite(fps) or fps <= 0:
            raise InputError(f"pose sequence fps must be a positive number, got {self.fps!r}")
        self.fps = fps
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
                raise InputError(f"pose sequence {name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))

    def __len__(self) -> int:
        return len(self.poses)

    def __iter__(self) -> Iterator[Pose]:
        return iter(self.poses)

    def __getitem__(self, i: int) -> Pose:
        return self.poses[i]

    def with_poses(self, poses: Sequence[Pose]) -> "PoseSequence":
        """Same fps/size/meta, other poses (e.g. after smoothing or alignment)."""
        return PoseSequence(list(poses), self.fps, self.width, self.height, dict(self.meta))


def stack_poses(poses: Sequence[Pose]) -> dict[str, np.ndarray]:
    """Fields of many poses stacked on a new first axis: body (F,20,2), hands (F,2,21,2), ..."""
    return {name: np.stack([getattr(p, name) for p in poses]) if poses else
            np.zeros((0,) + _SHAPES[name]) for name in FIELDS}


def unstack_poses(arrays: dict[str, np.ndarray]) -> list[Pose]:
    """Inverse of :func:`stack_poses`."""
    n = len(arrays["body"])
    return [Pose(**{name: arrays[name][i] for name in FIELDS}) for i in range(n)]
