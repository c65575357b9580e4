"""Temporal clean-up of keypoints: One-Euro filtering and filling of short gaps.

One-Euro filter (Casiez et al., CHI 2012): an exponential low-pass whose cutoff rises with the
signal's speed, cutoff = min_cutoff + beta * |dx/dt|; small ``min_cutoff`` removes more jitter when
still, larger ``beta`` follows fast motion with less lag. It runs per coordinate over time at the
sequence's fps. A missing point is left missing and its filter restarts when the point reappears
(stale state would drag it toward where it was before the gap); fill gaps first to bridge them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.types import (MISSING, POINT_FIELDS, SCORE_FIELD, Pose, PoseSequence, stack_poses,
                                   unstack_poses)

PARTS = POINT_FIELDS


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro parameters: cutoffs in Hz, ``fps`` the sampling rate of the poses."""

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0
    fps: float = 8.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff", "fps"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"One-Euro {name} must be a positive number, got {v!r}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise InputError(f"One-Euro beta must be a number >= 0, got {self.beta!r}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    r = 2.0 * math.pi * cutoff * dt
    return r / (r + 1.0)


def one_euro(values: np.ndarray, valid: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    """Filter ``values`` (F, N) over axis 0 where ``valid`` (F, N); invalid entries are kept as given."""
    out = values.copy()
    dt = 1.0 / cfg.fps
    a_d = _alpha(cfg.d_cutoff, dt)
    x_prev = np.zeros(values.shape[1])
    dx_prev = np.zeros(values.shape[1])
    started = np.zeros(values.shape[1], dtype=bool)
    for t in range(values.shape[0]):
        v = valid[t]
        x = values[t]
        fresh = v & ~started                       # (re)start: take the value as is
        run = v & started
        dx = (x - x_prev) / dt
        dx_hat = a_d * dx + (1.0 - a_d) * dx_prev
        a = _alpha(cfg.min_cutoff + cfg.beta * np.abs(dx_hat), dt)
        x_hat = a * x + (1.0 - a) * x_prev
        out[t] = np.where(run, x_hat, x)
        x_prev = np.where(v, out[t], x_prev)
        dx_prev = np.where(run, dx_hat, np.where(fresh, 0.0, dx_prev))
        started = v  # a missing frame resets the point's filter
    return out


def smooth_poses(poses: Sequence[Pose], config: OneEuroConfig = OneEuroConfig(),
                 parts: Sequence[str] = PARTS) -> list[Pose]:
    """One-Euro filter every coordinate of ``parts`` over time; missing points stay missing."""
    poses = list(poses)
    if not poses:
        return []
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise InputError(f"unknown pose parts {sorted(unknown)}; use some of {PARTS}")
    arrays = stack_poses(poses)
    for part in parts:
        pts = arrays[part]                           # (F, ..., 2)
        flat = pts.reshape(len(poses), -1, 2)        # (F, N, 2)
        valid = flat[..., 0] != MISSING              # (F, N)
        for axis in range(2):
            flat[..., axis] = one_euro(flat[..., axis], valid, config)
        arrays[part] = flat.reshape(pts.shape)
    return unstack_poses(arrays)


def smooth_sequence(seq: PoseSequence, min_cutoff: float = 1.0, beta: float = 0.0,
                    d_cutoff: float = 1.0) -> PoseSequence:
    """One-Euro smoothing of a whole sequence at its own fps."""
    cfg = OneEuroConfig(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, fps=seq.fps)
    return seq.with_poses(smooth_poses(seq.poses, cfg))


def fill_gaps(poses: Sequence[Pose], max_gap: int = 3, method: str = "linear",
              parts: Sequence[str] = PARTS) -> list[Pose]:
    """Fill runs of at most ``max_gap`` frames where a point is missing between two frames where
    it is present: ``"linear"`` interpolates (coordinates and scores), ``"hold"`` repeats the last
    value. Gaps at the start or end, and longer gaps, stay missing."""
    if method not in ("linear", "hold"):
        raise InputError(f"unknown gap filling method {method!r}; use 'linear' or 'hold'")
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise InputError(f"max_gap must be an integer >= 0, got {max_gap!r}")
    poses = list(poses)
    if not poses or max_gap == 0:
        return [p.copy() for p in poses]
    arrays = stack_poses(poses)
    F = len(poses)
    for part in parts:
        pts = arrays[part].reshape(F, -1, 2)             # (F, N, 2)
        scores = arrays[SCORE_FIELD[part]].reshape(F, -1)  # (F, N)
        valid = pts[..., 0] != MISSING                   # (F, N)
        for n in np.nonzero(valid.any(axis=0) & ~valid.all(axis=0))[0]:
            idx = np.nonzero(valid[:, n])[0]
            for a, b in zip(idx[:-1], idx[1:]):
                gap = b - a - 1
                if gap == 0 or gap > max_gap:
                    continue
                for t in range(a + 1, b):
                    if method == "hold":
                        w = 0.0
                    else:
                        w = (t - a) / (b - a)
                    pts[t, n] = (1.0 - w) * pts[a, n] + w * pts[b, n]
                    scores[t, n] = (1.0 - w) * scores[a, n] + w * scores[b, n]
        arrays[part] = pts.reshape(arrays[part].shape)
        arrays[SCORE_FIELD[part]] = scores.reshape(arrays[SCORE_FIELD[part]].shape)
    return unstack_poses(arrays)


# ---- one strength control -----------------------------------------------------------------
#: strength 1 -> the steadiest filter offered: 0.25 Hz cutoff when still
MIN_CUTOFF_AT_0, MIN_CUTOFF_AT_1 = 4.0, 0.25
BETA_AT_0, BETA_AT_1 = 1.0, 0.3


def check_strength(strength: float) -> float:
    """``strength`` as a float in [0, 1]; InputError naming the field otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating)) \
            or not math.isfinite(float(strength)) or not 0.0 <= float(strength) <= 1.0:
        raise InputError(f"smoothing strength must be a number from 0 (off) to 1 (strongest), got {strength!r}")
    return float(strength)


def one_euro_for_strength(strength: float, fps: float) -> OneEuroConfig | None:
    """The One-Euro parameters of a 0..1 smoothing strength at ``fps`` (None = off for 0).

    Log-linear in ``strength``: ``min_cutoff`` from 4 Hz (light: removes detector flicker only)
    to 0.25 Hz (heavy: a still pose hardly moves), ``beta`` from 1.0 to 0.3 (speed-dependent
    cutoff: fast motion is followed with less lag, less so at high strength); ``d_cutoff`` 1 Hz.
    Coordinates are normalised, so speeds are in image sizes per second.
    """
    s = check_strength(strength)
    if s == 0.0:
        return None
    min_cutoff = MIN_CUTOFF_AT_0 * (MIN_CUTOFF_AT_1 / MIN_CUTOFF_AT_0) ** s
    beta = BETA_AT_0 * (BETA_AT_1 / BETA_AT_0) ** s
    return OneEuroConfig(min_cutoff=min_cutoff, beta=beta, d_cutoff=1.0, fps=float(fps))


def smooth_with_strength(seq: PoseSequence, strength: float) -> PoseSequence:
    """``seq`` One-Euro filtered at ``strength`` (0..1, see :func:`one_euro_for_strength`); 0
    returns an unchanged copy."""
    cfg = one_euro_for_strength(strength, seq.fps)
    if cfg is None:
        return seq.with_poses([p.copy() for p in seq.poses])
    return seq.with_poses(smooth_poses(seq.poses, cfg))


def jitter(poses: Sequence[Pose]) -> float:
    """Mean size of the frame-to-frame acceleration of the body points present in three
    consecutive frames (normalised units): what smoothing lowers. 0 for fewer than 3 frames."""
    body = stack_poses(list(poses))["body"] if len(poses) else np.zeros((0, 20, 2))
    if len(body) < 3:
        return 0.0
    ok = body[..., 0] != MISSING                                   # (F, 20)
    both = ok[2:] & ok[1:-1] & ok[:-2]                              # (F-2, 20)
    acc = np.linalg.norm(body[2:] - 2 * body[1:-1] + body[:-2], axis=-1)  # (F-2, 20)
    return float(acc[both].mean()) if both.any() else 0.0


@dataclass(frozen=True)
class SmoothingPreview:
    """Drawn frames before/after smoothing at one strength (uint8 (F, H, W, 3) each), which
    frames of the sequence they are, and the jitter of the whole sequence before/after."""

    strength: float
    indices: tuple[int, ...]
    before: np.ndarray
    after: np.ndarray
    jitter_before: float
    jitter_after: float

    @property
    def message(self) -> str:
        if self.strength == 0:
            return "smoothing off"
        drop = 100.0 * (1.0 - self.jitter_after / self.jitter_before) if self.jitter_before > 0 else 0.0
        return (f"smoothing {self.strength:.2f}: jitter {self.jitter_before:.4f} -> "
                f"{self.jitter_after:.4f} ({drop:.0f}% less)")


def smoothing_preview(seq: PoseSequence, strength: float, height: int, width: int,
                      indices: Sequence[int] | None = None, max_frames: int = 16) -> SmoothingPreview:
    """Before/after frames of smoothing ``seq`` at ``strength``, drawn as the model sees poses
    (``draw_pose`` at ``height`` x ``width``); ``indices`` default: up to ``max_frames`` frames
    spread over the sequence."""
    from unianimate.pose.draw import draw_pose

    if len(seq) == 0:
        raise InputError("there are no poses to preview")
    if indices is None:
        step = max(1, math.ceil(len(seq) / max(1, int(max_frames))))
        indices = range(0, len(seq), step)
    indices = tuple(int(i) for i in indices)
    bad = [i for i in indices if not 0 <= i < len(seq)]
    if bad:
        raise InputError(f"preview frame(s) {bad} are outside the {len(seq)} poses")
    after = smooth_with_strength(seq, strength)
    draw = (lambda s: np.stack([draw_pose(s[i], height, width) for i in indices]))
    return SmoothingPreview(check_strength(strength), indices, draw(seq), draw(after),
                            jitter(seq.poses), jitter(after.poses))
