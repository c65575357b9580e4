"""align_poses: the reference method on valid inputs, and robustness beyond it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose import MISSING, align_poses, align_poses_report
from unianimate.pose.align import BONES
from unianimate.pose.synthetic import synthetic_pose


def _driving(n: int = 5, seed: int = 3):
    rng = np.random.default_rng(seed)
    return [synthetic_pose(rng, jitter=0.004, scale=1.3, shift=(0.1, 0.05)) for _ in range(n)]


def _reference():
    return synthetic_pose(np.random.default_rng(9), jitter=0.004, scale=0.8)


def _spec_align(ref, driving):
    """Spec §5 written out scalar by scalar, with dict-of-lists state (independent of align.py)."""
    R = ref.body.tolist()
    frames = [{"b": p.body.tolist(), "h": p.hands.tolist(), "f": p.face.tolist()} for p in driving]
    d0 = frames[0]["b"]
    xr = (R[5][0] - R[2][0]) / (d0[5][0] - d0[2][0])
    yr = (0.5 * (R[8][1] + R[11][1]) - 0.5 * (R[2][1] + R[5][1])) / (
        0.5 * (d0[8][1] + d0[11][1]) - 0.5 * (d0[2][1] + d0[5][1]))

    def scale(fr):
        for key in ("b", "f"):
            for pt in fr[key]:
                pt[0] *= xr
                pt[1] *= yr
        for hand in fr["h"]:
            for pt in hand:
                pt[0] *= xr
                pt[1] *= yr

    groups = [(1, 0, [0, 14, 15, 16, 17], []), (1, 2, [2, 3, 4], [1]), (1, 5, [5, 6, 7], [0]),
              (2, 3, [3, 4], [1]), (3, 4, [4], [1]), (5, 6, [6, 7], [0]), (6, 7, [7], [0]),
              (0, 14, [14, 16], []), (0, 15, [15, 17], []), (14, 16, [16], []), (15, 17, [17], []),
              (8, 9, [9, 10, 19], []), (9, 10, [10, 19], []), (11, 12, [12, 13, 18], []), (12, 13, [13, 18], [])]
    ratios = []
    scale(frames[0])
    b = frames[0]["b"]
    for p, c, grp, hands in groups:
        r = math.dist(R[c], R[p]) / math.dist(b[c], b[p])
        ratios.append(r)
        off = [(b[c][k] - b[p][k]) * (r - 1.0) for k in range(2)]
        for j in grp:
            b[j] = [b[j][0] + off[0], b[j][1] + off[1]]
        for h in hands:
            frames[0]["h"][h] = [[x + off[0], y + off[1]] for x, y in frames[0]["h"][h]]
    offset = [R[1][0] - b[1][0], R[1][1] - b[1][1]]
    for fr in frames[1:]:
        scale(fr)
        b = fr["b"]
        for (p, c, grp, hands), r in zip(groups, ratios):
            off = [(b[c][k] - b[p][k]) * (r - 1.0) for k in range(2)]
            for j in grp:
                b[j] = [b[j][0] + off[0], b[j][1] + off[1]]
            for h in hands:
                fr["h"][h] = [[x + off[0], y + off[1]] for x, y in fr["h"][h]]
    out = []
    for fr in frames:
        out.append((np.array(fr["b"]) + offset, np.array(fr["h"]) + offset, np.array(fr["f"]) + offset))
    return out


def test_matches_spec_method_on_valid_input() -> None:
    ref, drv = _reference(), _driving()
    aligned = align_poses(ref, drv)
    expected = _spec_align(ref, drv)
    for got, (body, hands, face) in zip(aligned, expected):
        np.testing.assert_allclose(got.body, body, atol=1e-12)
        np.testing.assert_allclose(got.hands, hands, atol=1e-12)
        np.testing.assert_allclose(got.face, face, atol=1e-12)


def test_frame0_bone_lengths_neck_and_global_ratios() -> None:
    ref, drv = _reference(), _driving()
    aligned, report = align_poses_report(ref, drv)
    a0 = aligned[0].body
    for bone in BONES:
        assert math.dist(a0[bone.child], a0[bone.parent]) == pytest.approx(
            math.dist(ref.body[bone.child], ref.body[bone.parent]), abs=1e-12), bone.name
    np.testing.assert_allclose(a0[1], ref.body[1], atol=1e-12)  # necks coincide
    d0 = drv[0].body
    assert report.x_ratio == pytest.approx((ref.body[5, 0] - ref.body[2, 0]) / (d0[5, 0] - d0[2, 0]))
    assert report.x_ratio == pytest.approx(0.8 / 1.3, rel=0.15) and report.y_ratio == pytest.approx(0.8 / 1.3, rel=0.15)
    # hips are not bone-adjusted: the hip span is the globally scaled one
    assert a0[11, 0] - a0[8, 0] == pytest.approx((d0[11, 0] - d0[8, 0]) * report.x_ratio, abs=1e-12)
    assert not report.skipped and not report.fallbacks


def test_from_frame_and_mode_none() -> None:
    ref, drv = _reference(), _driving()
    aligned = align_poses(ref, drv, from_frame=2)
    np.testing.assert_allclose(aligned[2].body[1], ref.body[1], atol=1e-12)
    copies = align_poses(ref, drv, mode="none")
    assert all(a.allclose(b, atol=0) for a, b in zip(copies, drv)) and copies[0] is not drv[0]
    with pytest.raises(InputError, match="from_frame"):
        align_poses(ref, drv, from_frame=5)
    with pytest.raises(InputError, match="mode"):
        align_poses(ref, drv, mode="fancy")
    assert align_poses(ref, []) == []


def test_missing_joints_no_nan_and_reported() -> None:
    ref, drv = _reference(), _driving()
    b0 = drv[0].body.copy()
    b0[3] = MISSING            # right elbow missing on frame 0 -> ratios from frame 1
    b0[2] = MISSING            # right shoulder too (x_ratio from frame 1)
    drv[0] = drv[0].replace(body=b0)
    rb = ref.body.copy()
    rb[17] = MISSING           # reference lacks the left ear -> left_ear bone skipped
    ref = ref.replace(body=rb)
    hands = drv[2].hands.copy()
    hands[1, 4] = MISSING
    drv[2] = drv[2].replace(hands=hands)
    aligned, report = align_poses_report(ref, drv)
    for p in aligned:
        for arr in (p.body, p.hands, p.face):
            assert np.all(np.isfinite(arr))
    assert aligned[0].body[3].tolist() == [MISSING, MISSING] and aligned[0].body[2].tolist() == [MISSING, MISSING]
    assert aligned[2].hands[1, 4].tolist() == [MISSING, MISSING]
    assert any("left_ear" in s for s in report.skipped)
    assert report.bone_ratios["left_ear"] == 1.0
    assert any("x_ratio" in s and "frame 1" in s for s in report.fallbacks)
    assert any("right_upper_arm" in s and "frame 1" in s for s in report.fallbacks)
    assert report.frames_skipping_bone.get("right_upper_arm") == 1
    # frame 1 lengths match the reference for a bone measured there
    a1 = aligned[1].body
    assert math.dist(a1[3], a1[2]) == pytest.approx(math.dist(ref.body[3], ref.body[2]), abs=1e-12)


def test_zero_length_and_all_missing() -> None:
    ref, drv = _reference(), _driving(2)
    b = drv[0].body.copy()
    b[4] = b[3]                # zero-length forearm on frame 0
    drv[0] = drv[0].replace(body=b)
    aligned, report = align_poses_report(ref, drv)
    assert any("right_forearm" in s for s in report.fallbacks)
    assert all(np.isfinite(p.body).all() for p in aligned)
    from unianimate.pose import Pose
    empty = [Pose.empty(), Pose.empty()]
    aligned, report = align_poses_report(ref, empty)
    assert all(p.is_empty() for p in aligned)
    assert report.x_ratio == 1.0 and any("neck translation" in s for s in report.skipped)
    aligned, report = align_poses_report(Pose.empty(), drv)
    assert all(np.isfinite(p.body).all() for p in aligned) and len(report.skipped) >= 15


# ---- issue 11: scale-only mode and per-part switches ----------------------------------------

def test_per_limb_default_is_the_reference_method_bit_for_bit() -> None:
    ref, drv = _reference(), _driving()
    default = align_poses(ref, drv)
    for mode in ("reference", "per-limb"):
        for parts in (("body", "hands"), "hands,body", ["hands", "body"]):
            other = align_poses(ref, drv, mode=mode, parts=parts)
            assert all(a.allclose(b, atol=0) for a, b in zip(default, other))


def test_scale_mode_keeps_the_driving_proportions() -> None:
    ref, drv = _reference(), _driving()
    aligned, report = align_poses_report(ref, drv, mode="scale")
    assert report.bone_ratios == {} and "scaled 5 frames" in report.messages[0]
    xr, yr = report.x_ratio, report.y_ratio
    for a, d in zip(aligned, drv):
        # one affine map for every point: scale by (xr, yr), then the neck offset
        np.testing.assert_allclose(a.body, d.body * [xr, yr] + report.offset, atol=1e-12)
        np.testing.assert_allclose(a.hands, d.hands * [xr, yr] + report.offset, atol=1e-12)
        np.testing.assert_allclose(a.face, d.face * [xr, yr] + report.offset, atol=1e-12)
    np.testing.assert_allclose(aligned[0].body[1], ref.body[1], atol=1e-12)   # on the reference neck
    per_limb = align_poses(ref, drv)
    assert not np.allclose(per_limb[0].body[4], aligned[0].body[4])           # the arms differ


def test_hands_off_keeps_the_driving_hand_at_the_aligned_wrist() -> None:
    ref, drv = _reference(), _driving()
    full = align_poses(ref, drv)
    body_only, report = align_poses_report(ref, drv, parts=["body"])
    assert any("hands keep their own size and shape" in m for m in report.messages)
    for a, f, d in zip(body_only, full, drv):
        np.testing.assert_array_equal(a.body, f.body)                          # body as with both
        for h, w in ((0, 7), (1, 4)):
            # the driving hand's shape, translated so its wrist offset follows the aligned wrist
            np.testing.assert_allclose(a.hands[h] - a.body[w], d.hands[h] - d.body[w], atol=1e-12)


def test_body_off_keeps_the_driving_body_with_aligned_hands() -> None:
    ref, drv = _reference(), _driving()
    full = align_poses(ref, drv)
    hands_only = align_poses(ref, drv, parts="hands")
    for a, f, d in zip(hands_only, full, drv):
        np.testing.assert_array_equal(a.body, d.body)
        np.testing.assert_array_equal(a.face, d.face)
        for h, w in ((0, 7), (1, 4)):
            np.testing.assert_allclose(a.hands[h] - a.body[w], f.hands[h] - f.body[w], atol=1e-12)
    none = align_poses(ref, drv, parts=[])
    assert all(a.allclose(b, atol=0) for a, b in zip(none, drv))
    with pytest.raises(InputError, match="alignment part"):
        align_poses(ref, drv, parts=["feet"])


def test_hands_off_without_a_wrist_uses_the_hand_centre() -> None:
    ref, drv = _reference(), _driving(3)
    b = drv[1].body.copy()
    b[4] = MISSING                                    # no right wrist on frame 1
    drv[1] = drv[1].replace(body=b)
    full = align_poses(ref, drv)
    out = align_poses(ref, drv, parts=("body",))
    centre = lambda pts: pts.mean(axis=0)             # noqa: E731 (all hand points present)
    np.testing.assert_allclose(centre(out[1].hands[1]), centre(full[1].hands[1]), atol=1e-12)
    np.testing.assert_allclose(out[1].hands[1] - centre(out[1].hands[1]),
                               drv[1].hands[1] - centre(drv[1].hands[1]), atol=1e-12)
