"""JSON import/export of pose sequences, so a sequence can be saved, edited elsewhere and uploaded again.

Format (UTF-8 JSON, one object)::

    {
      "format": "unianimate-pose",      # required, exactly this string
      "version": 1,                     # required; files with a newer version are refused
      "fps": 8.0,                       # frames per second of the sequence (> 0)
      "width": 512, "height": 768,      # pixel size of the source the coordinates refer to
      "missing": -1.0,                  # informative: the marker of missing points
      "meta": {},                       # optional free-form object, kept as is
      "frames": [                       # one object per frame, in time order
        {
          "body":        [[x, y], ...],            # 20 points (18 OpenPose body + left/right foot)
          "body_scores": [s, ...],                 # 20
          "hands":       [[[x, y], ...], [...]],   # 2 x 21 points: index 0 left hand, 1 right hand
          "hand_scores": [[s, ...], [...]],        # 2 x 21
          "face":        [[x, y], ...],            # 68 points
          "face_scores": [s, ...]                  # 68
        }
      ]
    }

Coordinates are normalised (x / width, y / height). A missing point is ``[-1.0, -1.0]``; ``null``
is also accepted on load for a missing point or coordinate. Scores may be omitted on load (they
default to 1 for present points and 0 for missing ones). Anything else that is wrong (a missing
field, a wrong shape, a string, NaN or infinity) raises :class:`InputError` naming the frame and
the field.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.types import (FIELDS, MISSING, POINT_FIELDS, SCORE_FIELD, Pose, PoseSequence, _SHAPES,
                                   missing_mask)
from unianimate.utils import atomic_write_bytes

FORMAT_NAME = "unianimate-pose"
FORMAT_VERSION = 1
MAX_JSON_BYTES = 256 * 1024 * 1024  # a 10 000-frame file is ~100 MB; refuse anything far beyond


def _round(arr: np.ndarray) -> Any:
    return arr.tolist()  # float64 -> Python float: repr round-trips exactly


def pose_to_dict(pose: Pose) -> dict[str, Any]:
    """One frame as a JSON-ready dict."""
    return {name: _round(getattr(pose, name)) for name in FIELDS}


def sequence_to_dict(seq: PoseSequence) -> dict[str, Any]:
    """The whole sequence as a JSON-ready dict (the documented format)."""
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "fps": float(seq.fps), "width": int(seq.width), "height": int(seq.height),
        "missing": MISSING, "meta": dict(seq.meta),
        "frames": [pose_to_dict(p) for p in seq.poses],
    }


def _field_array(frame: dict, name: str, where: str) -> np.ndarray | None:
    if name not in frame:
        return None
    value = frame[name]
    point_depth = len(_SHAPES[name]) - 1 if name in POINT_FIELDS else -1

    def convert(v: Any, depth: int = 0) -> Any:
        if v is None and depth == point_depth:
            return [np.nan, np.nan]  # a whole point given as null
        if isinstance(v, list):
            return [convert(x, depth + 1) for x in v]
        if v is None:
            return np.nan  # marked below
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{where}, field {name!r}: {v!r} is not a number; use numbers "
                             f"(or {MISSING} / null for missing points)")
        return float(v)

    try:
        arr = np.array(convert(value), dtype=np.float64)
    except ValueError:
        raise InputError(f"{where}, field {name!r}: ragged nested lists; expected shape "
                         f"{_SHAPES[name]}") from None
    if arr.shape != _SHAPES[name]:
        raise InputError(f"{where}, field {name!r} has shape {arr.shape}, expected {_SHAPES[name]}")
    if np.isinf(arr).any():
        raise InputError(f"{where}, field {name!r} contains an infinite (overflowing) number")
    return arr


def pose_from_dict(frame: Any, index: int = 0) -> Pose:
    """Parse and validate one frame object; errors name the frame and the field."""
    where = f"frame {index}"
    if not isinstance(frame, dict):
        raise InputError(f"{where} is a {type(frame).__name__}, expected an object with fields {list(FIELDS)}")
    unknown = sorted(set(frame) - set(FIELDS))
    if unknown:
        raise InputError(f"{where} has unknown fields {unknown}; allowed: {list(FIELDS)}")
    values: dict[str, np.ndarray] = {}
    for name in POINT_FIELDS:
        arr = _field_array(frame, name, where)
        if arr is None:
            raise InputError(f"{where} lacks the field {name!r}")
        null = np.isnan(arr)  # only nulls can be NaN here (json.loads NaN is caught below)
        arr[null.any(axis=-1)] = MISSING
        values[name] = arr
        score_name = SCORE_FIELD[name]
        scores = _field_array(frame, score_name, where)
        if scores is None:
            scores = (~missing_mask(arr)).astype(np.float64)
        else:
            scores = np.where(np.isnan(scores), 0.0, scores)
        values[score_name] = scores
    return Pose(**values)


def _reject_constant(token: str) -> float:
    raise InputError(f"the pose JSON contains {token}, which is not allowed; use {MISSING} for missing points")


def sequence_from_dict(data: Any) -> PoseSequence:
    """Validate a parsed JSON object in the documented format and build the sequence."""
    if not isinstance(data, dict):
        raise InputError("the pose JSON must be an object with \"format\": \"unianimate-pose\"")
    if data.get("format") != FORMAT_NAME:
        raise InputError(f"not a UniAnimate pose file: \"format\" is {data.get('format')!r}, "
                         f"expected {FORMAT_NAME!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"the pose JSON \"version\" must be an integer, got {version!r}")
    if version > FORMAT_VERSION or version < 1:
        raise InputError(f"the pose JSON has version {version}; this program reads version "
                         f"{FORMAT_VERSION}. Update the program or re-export the file.")
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise InputError("the pose JSON lacks a \"frames\" list")
    for key in ("fps", "width", "height"):
        if key not in data:
            raise InputError(f"the pose JSON lacks {key!r}")
    width, height = (int(v) if isinstance(v, float) and v.is_integer() else v  # 512.0 -> 512
                     for v in (data["width"], data["height"]))
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError("the pose JSON \"meta\" must be an object")
    poses = [pose_from_dict(f, i) for i, f in enumerate(frames)]
    return PoseSequence(poses, data["fps"], width, height, meta)


def dumps(seq: PoseSequence) -> str:
    """The sequence as a JSON string."""
    return json.dumps(sequence_to_dict(seq), allow_nan=False, default=str)


def loads(text: str | bytes) -> PoseSequence:
    """Parse a JSON string in the documented format."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"the pose file is not valid JSON ({exc}); export it again") from None
    except UnicodeDecodeError:
        raise InputError("the pose file is not UTF-8 text; is it really a JSON pose file?") from None
    return sequence_from_dict(data)


def save_pose_sequence(seq: PoseSequence, path: str | os.PathLike) -> Path:
    """Write the sequence to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    atomic_write_bytes(path, dumps(seq).encode("utf-8"))
    return path


def load_pose_sequence(path: str | os.PathLike) -> PoseSequence:
    """Read and validate a pose JSON file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pose file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"pose file {path.name!r} is {size / 1e6:.0f} MB; the limit is "
                         f"{MAX_JSON_BYTES / 1e6:.0f} MB")
    return loads(path.read_bytes())
