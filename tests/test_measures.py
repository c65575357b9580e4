"""Measures per candidate and the colour-drift guard (unianimate.studio.measures)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from unianimate.studio import measures as M


def _clip(values, h=8, w=8):
    """A clip whose frame i is flat grey ``values[i]``."""
    return np.stack([np.full((h, w, 3), v, np.uint8) for v in values])


def test_seam_and_stability_on_known_values():
    prev_last = np.full((8, 8, 3), 100, np.uint8)
    clip = _clip([110, 110, 130, 130])
    assert M.seam(prev_last, clip[0]) == pytest.approx(10.0)
    # changes 0, 20, 0 -> mean 20/3
    assert M.stability(clip) == pytest.approx(20 / 3)
    assert M.stability(clip[:1]) == 0.0
    with pytest.raises(ValueError):
        M.seam(prev_last, np.zeros((4, 4, 3), np.uint8))


def test_color_drift_and_jump():
    ref = np.zeros((4, 4, 3), np.uint8)
    ref[..., 0] = 100
    seg = np.zeros((2, 4, 4, 3), np.uint8)
    seg[..., 0] = 103
    seg[..., 1] = 4
    assert M.drift(seg, M.mean_color(ref)) == pytest.approx(5.0)
    assert M.color_jump(ref, seg[0]) == pytest.approx(5.0)
    anchor = M.mean_color(_clip([50, 50]))
    drifts = [M.drift(c, anchor) for c in (_clip([50, 50]), _clip([60, 60]), _clip([70, 70]))]
    assert drifts[0] == 0.0 and drifts[2] == pytest.approx(np.sqrt(3) * 20)


def test_match_color_removes_a_join_jump_and_is_reproducible():
    rng = np.random.default_rng(0)
    target = rng.integers(60, 120, (16, 16, 3)).astype(np.uint8)
    clip = np.clip(target.astype(int)[None] * 0.7 + 50 + rng.integers(0, 5, (3, 16, 16, 3)), 0,
                   255).astype(np.uint8)
    before = M.color_jump(target, clip[0])
    fixed, params = M.match_color(clip, target)
    after = M.color_jump(target, fixed[0])
    assert before > 10 and after < 1.0
    assert fixed.dtype == np.uint8 and fixed.shape == clip.shape
    np.testing.assert_array_equal(M.apply_color(clip, params), fixed)
    # motion inside the clip is kept: one gain/offset for all frames
    assert M.stability(fixed) > 0


def test_candidate_measures_and_best_rule():
    prev_last = np.full((8, 8, 3), 100, np.uint8)
    smooth = _clip([101, 101, 102])
    jumpy = _clip([140, 100, 140])
    m1 = M.candidate_measures(smooth, prev_last, M.mean_color(prev_last))
    m2 = M.candidate_measures(jumpy, prev_last, M.mean_color(prev_last))
    assert m1["seam"] == pytest.approx(1.0) and m1["score"] < m2["score"]
    root = M.candidate_measures(smooth, None, None)
    assert root["seam"] is None and root["color_jump"] is None and root["drift"] is None
    cands = [SimpleNamespace(index=0, status="done", measures=m2),
             SimpleNamespace(index=1, status="done", measures=m1),
             SimpleNamespace(index=2, status="failed", measures={})]
    assert M.pick_best(cands).index == 1
    with pytest.raises(ValueError):
        M.pick_best([cands[2]])
