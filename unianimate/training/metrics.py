"""Quality measures with ground truth (the procedural people): what matters is the moving person.

* :func:`moving_psnr` — PSNR over the pixels where the target differs from the reference image
  (full-frame PSNR is dominated by the static background: "reference repeated" scores high on it).
* :func:`pose_following` — fraction of generated frames j that are nearer ground-truth frame j than
  every other ground-truth frame of the clip (chance 1/F): does the video follow the driving poses?

All inputs are uint8 arrays: clips (F,H,W,3), images (H,W,3).
"""
from __future__ import annotations

import math

import numpy as np

MOVING_THRESHOLD = 24  # a channel differing by more than this (0-255) marks a pixel as moving


def _f(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def moving_mask(target: np.ndarray, reference: np.ndarray, threshold: int = MOVING_THRESHOLD) -> np.ndarray:
    """(F,H,W) bool: pixels of each target frame that differ from the reference image."""
    return (np.abs(_f(target) - _f(reference)[None]) > threshold).any(axis=-1)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB on the 0-255 scale (inf for a perfect match)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def moving_psnr(generated: np.ndarray, target: np.ndarray, reference: np.ndarray,
                threshold: int = MOVING_THRESHOLD) -> float:
    """PSNR (dB) of ``generated`` vs ``target`` over the moving pixels (pooled over the clip)."""
    mask = moving_mask(target, reference, threshold)
    if not mask.any():
        return math.inf if np.array_equal(generated, target) else psnr_from_mse(
            float(((_f(generated) - _f(target)) ** 2).mean()))
    err = ((_f(generated) - _f(target)) ** 2).mean(axis=-1)  # (F,H,W)
    return psnr_from_mse(float(err[mask].mean()))


def frame_distances(generated: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(F,F) mean squared distance between generated frame j (row) and target frame k (column)."""
    g = _f(generated).reshape(len(generated), -1)
    t = _f(target).reshape(len(target), -1)
    return ((g[:, None, :] - t[None, :, :]) ** 2).mean(axis=-1)


def pose_following(generated: np.ndarray, target: np.ndarray) -> float:
    """Fraction of frames j whose nearest target frame is j (ties count as misses); chance 1/F."""
    d = frame_distances(generated, target)
    hits = 0
    for j in range(len(d)):
        others = np.delete(d[j], j)
        hits += int(d[j, j] < others.min()) if len(others) else 1
    return hits / len(d)
