"""Per-candidate measures and the colour-drift guard. All inputs are uint8 (…,H,W,3) arrays.

- **seam** (0-255): mean absolute difference between the previous chosen segment's last frame and
  the candidate's first frame; lower = a smoother join. None for the root segment.
- **stability** (0-255): mean absolute frame-to-frame change inside the candidate; lower = steadier
  (it also falls with less motion, so compare candidates of the same segment only).
- **mean_color**: the candidate's mean RGB over all frames.
- **drift** (0-255, Euclidean RGB distance): candidate mean colour vs the reference image's mean
  colour, for every segment alike (root and continuations are on one scale). The root's value is
  how far the model's colours sit from the reference (small for a good model on the reference's
  background, large for the tiny random model's noise); later segments keep about the same value
  unless colours creep across joins, which is what a rising drift along the chosen path shows.
  (Candidates made before this rule measured continuations against the root candidate instead;
  their stored values stay as they were.)
- **color_jump** (0-255, Euclidean RGB distance): mean colour of the previous last frame vs the
  candidate's first frame: the drift added by this join.

Correction (switchable with ``GenerationSettings.color_correction``; threshold
``color_threshold``): when a join's colour jump exceeds the threshold, the new segment is
mapped per channel so that its first frame's mean and standard deviation match those of the
previous segment's last frame (``out = (x - mean_c) * std_t / std_c + mean_t``; the same gain
and offset for every frame, so motion inside the segment is kept). It removes the join's jump, so
drift cannot pile up from join to join.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _f(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, dtype=np.float32)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two equally sized uint8 images (0-255 scale)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return float(np.abs(_f(a) - _f(b)).mean())


def seam(prev_last: np.ndarray, first: np.ndarray) -> float:
    """Seam continuity: mean |previous last frame - candidate first frame| (0-255)."""
    return mean_abs_diff(prev_last, first)


def stability(frames: np.ndarray) -> float:
    """Temporal stability: mean |frame[t+1] - frame[t]| over the clip (0-255; 0 for one frame)."""
    frames = np.asarray(frames)
    if frames.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(_f(frames), axis=0)).mean())


def mean_color(frames: np.ndarray) -> np.ndarray:
    """Mean RGB (3,) of an image (H,W,3) or clip (F,H,W,3)."""
    arr = _f(frames)
    return arr.reshape(-1, arr.shape[-1])[:, :3].mean(axis=0).astype(np.float64)


def color_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two mean colours (0-255 scale per channel)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def color_jump(prev_last: np.ndarray, first: np.ndarray) -> float:
    """Colour change across a join: distance of the two frames' mean colours."""
    return color_distance(mean_color(prev_last), mean_color(first))


def drift(frames: np.ndarray, anchor_color: np.ndarray) -> float:
    """Colour drift of a clip against an anchor mean colour."""
    return color_distance(mean_color(frames), anchor_color)


def match_color(frames: np.ndarray, target: np.ndarray, eps: float = 1e-3
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """Map ``frames`` per channel so frame 0's mean/std equal ``target``'s; returns (frames, params).

    ``params`` = {"gain": [3], "offset": [3]} with ``out = clip(x * gain + offset)``; reapply with
    :func:`apply_color`. Gains are limited to [0.5, 2] so a flat frame cannot blow up.
    """
    src = _f(frames[0]).reshape(-1, 3)
    tgt = _f(target).reshape(-1, 3)
    mu_s, sd_s = src.mean(axis=0), src.std(axis=0)
    mu_t, sd_t = tgt.mean(axis=0), tgt.std(axis=0)
    gain = np.clip(sd_t / np.maximum(sd_s, eps), 0.5, 2.0)
    offset = mu_t - mu_s * gain
    params = {"gain": [round(float(g), 6) for g in gain],
              "offset": [round(float(o), 6) for o in offset]}
    return apply_color(frames, params), params


def apply_color(frames: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply a recorded per-channel gain/offset to uint8 frames (deterministic)."""
    gain = np.asarray(params["gain"], dtype=np.float32)
    offset = np.asarray(params["offset"], dtype=np.float32)
    out = _f(frames) * gain + offset
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def candidate_measures(frames: np.ndarray, prev_last: np.ndarray | None,
                       anchor_color: np.ndarray | None, reference: np.ndarray | None = None
                       ) -> dict[str, Any]:
    """All measures of one candidate as a JSON-ready dict (rounded to 3 decimals)."""
    out: dict[str, Any] = {
        "seam": round(seam(prev_last, frames[0]), 3) if prev_last is not None else None,
        "stability": round(stability(frames), 3),
        "mean_color": [round(float(c), 3) for c in mean_color(frames)],
        "drift": round(drift(frames, anchor_color), 3) if anchor_color is not None else None,
        "color_jump": round(color_jump(prev_last, frames[0]), 3) if prev_last is not None else None,
    }
    if reference is not None and np.asarray(reference).shape == np.asarray(frames[0]).shape:
        out["reference_diff"] = round(mean_abs_diff(reference, frames[0]), 3)
    out["score"] = best_score(out)
    return out


def best_score(measures: dict[str, Any]) -> float:
    """The "best" rule: seam + stability (lower is better); the root (no seam) uses stability."""
    s = measures.get("seam")
    return round(float(measures.get("stability") or 0.0) + (float(s) if s is not None else 0.0), 3)


def pick_best(candidates: Sequence[Any]) -> Any:
    """The done candidate with the lowest :func:`best_score` (ties: the lowest index)."""
    done = [c for c in candidates if getattr(c, "status", "done") == "done"]
    if not done:
        raise ValueError("no finished candidate to pick from")
    return min(done, key=lambda c: (best_score(c.measures), c.index))
