"""One-Euro smoothing and gap filling."""
from __future__ import annotations

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose import MISSING, Pose
from unianimate.pose.smooth import OneEuroConfig, fill_gaps, smooth_poses
from unianimate.pose.synthetic import synthetic_pose


def _noisy_track(n: int = 60, noise: float = 0.01):
    rng = np.random.default_rng(0)
    base = synthetic_pose()
    t = np.arange(n) / 8.0
    clean, noisy = [], []
    for i in range(n):
        shift = np.array([0.05 * np.sin(2 * np.pi * 0.2 * t[i]), 0.0])
        c = base.replace(body=base.body + shift, hands=base.hands + shift, face=base.face + shift)
        clean.append(c)
        noisy.append(c.replace(body=c.body + rng.normal(0, noise, c.body.shape),
                               hands=c.hands + rng.normal(0, noise, c.hands.shape)))
    return clean, noisy


def test_one_euro_reduces_jitter() -> None:
    clean, noisy = _noisy_track()
    smooth = smooth_poses(noisy, OneEuroConfig(min_cutoff=0.5, beta=0.5, fps=8.0))
    err_noisy = np.mean([np.abs(n.body - c.body).mean() for n, c in zip(noisy, clean)])
    err_smooth = np.mean([np.abs(s.body - c.body).mean() for s, c in zip(smooth[5:], clean[5:])])
    jitter = lambda seq: np.mean(np.abs(np.diff(np.stack([p.body for p in seq]), n=2, axis=0)))
    assert jitter(smooth) < 0.5 * jitter(noisy)
    assert err_smooth < err_noisy


def test_one_euro_keeps_missing_points() -> None:
    _, noisy = _noisy_track(10)
    body = noisy[4].body.copy()
    body[3] = MISSING
    noisy[4] = noisy[4].replace(body=body)
    out = smooth_poses(noisy, OneEuroConfig(fps=8.0))
    assert out[4].body[3].tolist() == [MISSING, MISSING]
    assert out[5].body[3].tolist() == noisy[5].body[3].tolist()  # restarts after the gap
    assert all(np.isfinite(p.body).all() for p in out)
    with pytest.raises(InputError):
        OneEuroConfig(min_cutoff=0)
    with pytest.raises(InputError):
        smooth_poses(noisy, parts=("tail",))


def test_fill_gaps_linear_and_hold() -> None:
    poses = [synthetic_pose(shift=(0.01 * i, 0.0)) for i in range(8)]
    poses[2] = Pose.empty()
    poses[3] = Pose.empty()
    for i in (5, 6, 7):
        body = poses[i].body.copy()
        body[4] = MISSING  # trailing gap: never filled
        poses[i] = poses[i].replace(body=body)
    filled = fill_gaps(poses, max_gap=2, method="linear")
    np.testing.assert_allclose(filled[2].body, synthetic_pose(shift=(0.02, 0.0)).body, atol=1e-12)
    np.testing.assert_allclose(filled[3].hands, synthetic_pose(shift=(0.03, 0.0)).hands, atol=1e-12)
    assert filled[6].body[4].tolist() == [MISSING, MISSING]
    held = fill_gaps(poses, max_gap=2, method="hold")
    np.testing.assert_allclose(held[3].body, poses[1].body, atol=0)
    short = fill_gaps(poses, max_gap=1)
    assert short[2].is_empty() and short[3].is_empty()
    with pytest.raises(InputError):
        fill_gaps(poses, method="cubic")


def test_smooth_sequence_uses_its_fps() -> None:
    from unianimate.pose import PoseSequence
    from unianimate.pose.smooth import smooth_sequence
    _, noisy = _noisy_track(12)
    seq = PoseSequence(noisy, fps=8.0, width=512, height=768)
    out = smooth_sequence(seq, min_cutoff=0.5)
    assert len(out) == 12 and out.fps == 8.0 and not out[5].allclose(seq[5])


def test_strength_maps_to_one_euro_and_is_monotone() -> None:
    from unianimate.pose import PoseSequence
    from unianimate.pose.smooth import jitter, one_euro_for_strength, smooth_with_strength
    assert one_euro_for_strength(0, 8.0) is None
    light, heavy = one_euro_for_strength(0.1, 8.0), one_euro_for_strength(1.0, 8.0)
    assert heavy.min_cutoff == pytest.approx(0.25) and heavy.beta == pytest.approx(0.3)
    assert light.min_cutoff > heavy.min_cutoff and light.fps == 8.0
    clean, noisy = _noisy_track()
    seq = PoseSequence(noisy, fps=8.0, width=512, height=768)
    same = smooth_with_strength(seq, 0.0)
    assert all(a.allclose(b, atol=0) for a, b in zip(same.poses, seq.poses))
    jit = [jitter(smooth_with_strength(seq, s).poses) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(jit, jit[1:])), jit
    assert jit[-1] < 0.2 * jit[0]
    for bad in (-0.1, 1.01, float("nan"), "0.5", True):
        with pytest.raises(InputError, match="smoothing strength"):
            one_euro_for_strength(bad, 8.0)


def test_smoothing_preview_draws_before_and_after() -> None:
    from unianimate.pose import PoseSequence, draw_pose
    from unianimate.pose.smooth import smoothing_preview
    _, noisy = _noisy_track(30)
    seq = PoseSequence(noisy, fps=8.0, width=512, height=768)
    prev = smoothing_preview(seq, 0.7, 96, 64, max_frames=8)
    assert prev.indices == (0, 4, 8, 12, 16, 20, 24, 28)
    assert prev.before.shape == prev.after.shape == (8, 96, 64, 3) and prev.before.dtype == np.uint8
    np.testing.assert_array_equal(prev.before[1], draw_pose(noisy[4], 96, 64))
    assert not np.array_equal(prev.before, prev.after)
    assert prev.jitter_after < prev.jitter_before and "less" in prev.message
    with pytest.raises(InputError, match="outside"):
        smoothing_preview(seq, 0.5, 96, 64, indices=[30])
