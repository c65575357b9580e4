"""Alignment of driving poses to the reference body (spec §5), the reference's method made robust.

The method (mode ``"reference"``), all measured on one driving frame (``from_frame``, the reference
used frame 0) and applied identically to every frame:

1. global scaling of every body, hand and face point: x *= x_ratio (shoulder width 2->5 of the
   reference over the driving frame), y *= y_ratio (torso height, shoulder midpoint to hip midpoint);
2. bone by bone, in the order of :data:`BONES`, parent p -> child c: r = |ref_c - ref_p| / |d_c - d_p|
   measured on the driving frame in its current state (after scaling and the previous bones); in
   every frame the child group moves by (c - p)(r - 1), so that c lands at p + r (c - p);
3. translation of every point by ref[neck] - aligned_d[neck] (one offset, from the measured frame).

Hands follow their arm bones and get the scaling and translation; the face only gets the scaling
and the translation (as in the reference). On valid inputs the result equals the reference's
``run_align_pose.py`` (same operations in the same order, float64).

Beyond the reference (which divides by zero when a point is missing):
- a ratio that cannot be measured on the chosen frame (a point missing there, or a zero-length
  bone) is taken from the nearest driving frame where it can (that frame brought to the same state
  first); when no frame has it, or the reference pose lacks the points, the ratio is 1 (no change);
- a frame whose own parent or child point is missing skips that bone's move;
- missing points stay missing (the reference moved the -1 markers around); results are finite;
- :func:`align_poses_report` says which ratios were skipped or taken from other frames.

Modes: ``"per-limb"`` (alias ``"reference"``, the default: steps 1-3 above, bit-identical to the
reference), ``"scale"`` (steps 1 and 3 only: the whole figure is scaled to the reference's
shoulder width and torso height and moved onto its neck, limb proportions stay the driving
person's), ``"none"`` (poses used as they are).

Parts (``parts``, default both): which keypoint groups take the alignment.
- ``"body"``: body and face points. Without it they keep their driving coordinates.
- ``"hands"``: the hands are scaled and moved with their arms. Without it each hand keeps the
  driving video's size and shape.
Whatever the switches, a hand stays attached to the output body: it is translated by the move
of its wrist (body point 7 for the left hand, 4 for the right) between the hand's own shape and
the output body; in a frame without that wrist, by the move of the hand's centre of mass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from unianimate.errors import InputError
from unianimate.pose.types import MISSING, Pose, stack_poses, unstack_poses

LEFT_HAND, RIGHT_HAND = 0, 1


@dataclass(frozen=True)
class Bone:
    """One adjusted bone: ``parent`` -> ``child`` and the body points / hands moved with the child."""

    name: str
    parent: int
    child: int
    body_group: tuple[int, ...]
    hands: tuple[int, ...] = ()


# The reference's order (neck, shoulders, arms, head, legs); hips and face are not bone-adjusted.
BONES: tuple[Bone, ...] = (
    Bone("neck", 1, 0, (0, 14, 15, 16, 17)),
    Bone("right_shoulder", 1, 2, (2, 3, 4), (RIGHT_HAND,)),
    Bone("left_shoulder", 1, 5, (5, 6, 7), (LEFT_HAND,)),
    Bone("right_upper_arm", 2, 3, (3, 4), (RIGHT_HAND,)),
    Bone("right_forearm", 3, 4, (4,), (RIGHT_HAND,)),
    Bone("left_upper_arm", 5, 6, (6, 7), (LEFT_HAND,)),
    Bone("left_forearm", 6, 7, (7,), (LEFT_HAND,)),
    Bone("right_eye", 0, 14, (14, 16)),
    Bone("left_eye", 0, 15, (15, 17)),
    Bone("right_ear", 14, 16, (16,)),
    Bone("left_ear", 15, 17, (17,)),
    Bone("right_thigh", 8, 9, (9, 10, 19)),
    Bone("right_shin", 9, 10, (10, 19)),
    Bone("left_thigh", 11, 12, (12, 13, 18)),
    Bone("left_shin", 12, 13, (13, 18)),
)

MODES = ("per-limb", "reference", "scale", "none")
USER_MODES = ("per-limb", "scale", "none")     # what the UI and the CLI offer ("reference" = "per-limb")
PARTS = ("body", "hands")
WRIST = {LEFT_HAND: 7, RIGHT_HAND: 4}
_TINY = 1e-9  # a bone or span shorter than this (normalised units) cannot give a ratio


@dataclass(frozen=True)
class AlignmentReport:
    """What :func:`align_poses_report` did.

    ``bone_ratios`` maps bone name -> ratio used (1.0 when skipped); ``skipped`` lists ratios that
    could not be measured anywhere (left at 1, or offset 0); ``fallbacks`` lists ratios taken from
    another driving frame; ``frames_skipping_bone`` counts, per bone, frames whose own points were
    missing so that bone was not moved there; ``messages`` are human-readable lines.
    """

    mode: str
    from_frame: int
    x_ratio: float = 1.0
    y_ratio: float = 1.0
    bone_ratios: dict[str, float] = field(default_factory=dict)
    offset: tuple[float, float] = (0.0, 0.0)
    skipped: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    frames_skipping_bone: dict[str, int] = field(default_factory=dict)
    messages: tuple[str, ...] = ()


class _Frames:
    """Stacked, mutable arrays of many poses with validity masks (float64, missing = MISSING)."""

    def __init__(self, poses: Sequence[Pose]):
        arrays = stack_poses(poses)
        self.arrays = arrays
        self.body = arrays["body"]      # (F, 20, 2)
        self.hands = arrays["hands"]    # (F, 2, 21, 2)
        self.face = arrays["face"]      # (F, 68, 2)
        self.body_ok = self.body[..., 0] != MISSING    # (F, 20)
        self.hands_ok = self.hands[..., 0] != MISSING  # (F, 2, 21)
        self.face_ok = self.face[..., 0] != MISSING    # (F, 68)

    def scale(self, x_ratio: float, y_ratio: float) -> None:
        for pts, ok in ((self.body, self.body_ok), (self.hands, self.hands_ok), (self.face, self.face_ok)):
            pts[..., 0] = np.where(ok, pts[..., 0] * x_ratio, MISSING)
            pts[..., 1] = np.where(ok, pts[..., 1] * y_ratio, MISSING)

    def move_bone(self, bone: Bone, ratio: float) -> np.ndarray:
        """Apply one bone to every frame; returns (F,) bool of frames that skipped it."""
        usable = self.body_ok[:, bone.parent] & self.body_ok[:, bone.child]  # (F,)
        # same expression as the reference: (p - c) * (1 - r)
        off = (self.body[:, bone.parent] - self.body[:, bone.child]) * (1.0 - ratio)  # (F, 2)
        off = np.where(usable[:, None], off, 0.0)
        group = list(bone.body_group)
        ok = self.body_ok[:, group]  # (F, G)
        self.body[:, group] = np.where(ok[..., None], self.body[:, group] + off[:, None, :], MISSING)
        for h in bone.hands:
            ok_h = self.hands_ok[:, h]  # (F, 21)
            self.hands[:, h] = np.where(ok_h[..., None], self.hands[:, h] + off[:, None, :], MISSING)
        return ~usable

    def translate(self, offset: np.ndarray) -> None:
        for pts, ok in ((self.body, self.body_ok), (self.hands, self.hands_ok), (self.face, self.face_ok)):
            pts[:] = np.where(ok[..., None], pts + offset, MISSING)

    def poses(self) -> list[Pose]:
        for pts, ok in ((self.body, self.body_ok), (self.hands, self.hands_ok), (self.face, self.face_ok)):
            # a valid point that lands exactly on the marker would read as missing: nudge it
            clash = ok[..., None] & (pts == MISSING)
            if clash.any():
                pts[clash] = np.nextafter(MISSING, 0.0)
        return unstack_poses(self.arrays)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5)


def _search_order(n: int, start: int) -> list[int]:
    """Frame indices by distance from ``start`` (start first, then start+1, start-1, ...)."""
    return sorted(range(n), key=lambda i: (abs(i - start), i < start))


def _ok(pose_body: np.ndarray, *idx: int) -> bool:
    return all(pose_body[i, 0] != MISSING and pose_body[i, 1] != MISSING for i in idx)


def _global_ratios(ref: np.ndarray, drv: _Frames, order: list[int],
                   skipped: list[str], fallbacks: list[str], start: int) -> tuple[float, float]:
    def x_span(b: np.ndarray) -> float:
        return b[5][0] - b[2][0]

    def y_span(b: np.ndarray) -> float:
        c1 = 0.5 * (b[2] + b[5])
        c2 = 0.5 * (b[8] + b[11])
        return c2[1] - c1[1]

    ratios = []
    for name, pts, span in (("x_ratio (shoulder width)", (2, 5), x_span),
                            ("y_ratio (torso height)", (2, 5, 8, 11), y_span)):
        if not _ok(ref, *pts) or abs(span(ref)) < _TINY:
            skipped.append(f"{name}: the reference pose lacks points {list(pts)}; ratio 1")
            ratios.append(1.0)
            continue
        ratio = None
        for i in order:
            body = drv.body[i]
            if _ok(body, *pts) and abs(span(body)) >= _TINY:
                ratio = span(ref) / span(body)
                if i != start:
                    fallbacks.append(f"{name}: measured on driving frame {i} (missing on frame {start})")
                break
        if ratio is None:
            skipped.append(f"{name}: no driving frame has points {list(pts)}; ratio 1")
            ratio = 1.0
        ratios.append(float(ratio))
    return ratios[0], ratios[1]


def check_parts(parts: Sequence[str] | str) -> tuple[str, ...]:
    """Alignment parts as a tuple in :data:`PARTS` order (a comma-separated string is accepted);
    InputError naming the unknown ones."""
    if isinstance(parts, str):
        parts = [p.strip() for p in parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise InputError(f"unknown alignment part(s) {unknown}; use some of {list(PARTS)}")
    return tuple(p for p in PARTS if p in parts)


def _reattach_hands(aligned: list[Pose], driving: list[Pose], parts: tuple[str, ...]) -> list[Pose]:
    """Apply the part switches (module docstring) to fully aligned poses."""
    out = []
    for al, dr in zip(aligned, driving):
        body_src = al if "body" in parts else dr
        shape_src = al if "hands" in parts else dr
        hands = shape_src.hands.copy()
        for h, w in WRIST.items():
            ok = hands[h, :, 0] != MISSING
            if not ok.any():
                continue
            if body_src.body[w, 0] != MISSING and shape_src.body[w, 0] != MISSING:
                move = body_src.body[w] - shape_src.body[w]
            else:   # no wrist in this frame: the hand's centre as the body carries it
                carried = (al if "body" in parts else dr).hands[h]
                move = carried[ok].mean(axis=0) - hands[h][ok].mean(axis=0)
            hands[h][ok] = hands[h][ok] + move
        out.append(body_src.replace(hands=hands, hand_scores=shape_src.hand_scores.copy()))
    return out


def align_poses_report(reference: Pose, driving: Sequence[Pose], *, from_frame: int = 0,
                       mode: str = "per-limb", parts: Sequence[str] | str = PARTS
                       ) -> tuple[list[Pose], AlignmentReport]:
    """Align ``driving`` to ``reference`` (see the module docstring); returns (poses, report)."""
    if mode not in MODES:
        raise InputError(f"unknown alignment mode {mode!r}; use one of {MODES}")
    parts = check_parts(parts)
    if not isinstance(reference, Pose) or not all(isinstance(p, Pose) for p in driving):
        raise InputError("align_poses needs a reference Pose and a sequence of Pose objects")
    driving = list(driving)
    n = len(driving)
    if n == 0:
        return [], AlignmentReport(mode=mode, from_frame=from_frame, messages=("no driving poses",))
    if isinstance(from_frame, bool) or not isinstance(from_frame, (int, np.integer)) or not 0 <= from_frame < n:
        raise InputError(f"from_frame {from_frame!r} is out of range; the driving sequence has {n} frames")
    from_frame = int(from_frame)
    if mode == "none" or not parts:
        return [p.copy() for p in driving], AlignmentReport(
            mode=mode, from_frame=from_frame, messages=("alignment off: driving poses used as they are",))

    ref = reference.body
    skipped: list[str] = []
    fallbacks: list[str] = []
    order = _search_order(n, from_frame)

    frames = _Frames(driving)
    x_ratio, y_ratio = _global_ratios(ref, frames, order, skipped, fallbacks, from_frame)
    frames.scale(x_ratio, y_ratio)

    bone_ratios: dict[str, float] = {}
    frames_skipping: dict[str, int] = {}
    for bone in (BONES if mode in ("per-limb", "reference") else ()):
        p, c = bone.parent, bone.child
        ratio = 1.0
        if not _ok(ref, p, c):
            skipped.append(f"{bone.name}: the reference pose lacks point {p} or {c}; not adjusted")
        else:
            ref_len = _dist(ref[c], ref[p])
            found = False
            for i in order:
                body = frames.body[i]  # every frame already carries the previous bones
                if _ok(body, p, c):
                    d_len = _dist(body[c], body[p])
                    if d_len >= _TINY:
                        ratio = ref_len / d_len
                        found = True
                        if i != from_frame:
                            fallbacks.append(f"{bone.name}: ratio measured on driving frame {i} "
                                             f"(missing or zero length on frame {from_frame})")
                        break
            if not found:
                skipped.append(f"{bone.name}: no driving frame has points {p} and {c}; not adjusted")
        bone_ratios[bone.name] = float(ratio)
        skipped_frames = frames.move_bone(bone, ratio)
        count = int(skipped_frames.sum())
        if count:
            frames_skipping[bone.name] = count

    offset = np.zeros(2)
    if not _ok(ref, 1):
        skipped.append("neck translation: the reference pose has no neck; not translated")
    else:
        for i in order:
            if _ok(frames.body[i], 1):
                offset = ref[1] - frames.body[i][1]
                if i != from_frame:
                    fallbacks.append(f"neck translation: measured on driving frame {i} (no neck on frame {from_frame})")
                break
        else:
            skipped.append("neck translation: no driving frame has a neck; not translated")
    frames.translate(offset)

    how = "scaled" if mode == "scale" else "aligned"
    messages = [f"{how} {n} frames to the reference from driving frame {from_frame} "
                f"(x ratio {x_ratio:.3f}, y ratio {y_ratio:.3f})"]
    if parts != PARTS:
        kept = "body" if "body" not in parts else "hands"
        messages.append(f"the driving {kept} keep{'s' if kept == 'body' else ''} their own "
                        f"{'coordinates' if kept == 'body' else 'size and shape'}; "
                        f"only {' and '.join(parts)} aligned")
    if x_ratio < 0 or y_ratio < 0:
        messages.append("warning: a negative global ratio (the driving person faces the other way "
                        "than the reference?) mirrors the poses, as the reference method does")
    messages += skipped + fallbacks
    extreme = {k: r for k, r in bone_ratios.items() if not 0.2 <= r <= 5.0}
    if extreme:
        messages.append("warning: extreme bone ratios (check the detections of the reference and of "
                        "the driving frame): " + ", ".join(f"{k} {r:.2f}" for k, r in extreme.items()))
    for name, count in frames_skipping.items():
        messages.append(f"{name}: not moved in {count} frame(s) where its points are missing")
    report = AlignmentReport(
        mode=mode, from_frame=from_frame, x_ratio=x_ratio, y_ratio=y_ratio, bone_ratios=bone_ratios,
        offset=(float(offset[0]), float(offset[1])), skipped=tuple(skipped), fallbacks=tuple(fallbacks),
        frames_skipping_bone=frames_skipping, messages=tuple(messages))
    aligned = frames.poses()
    if parts != PARTS:
        aligned = _reattach_hands(aligned, driving, parts)
    return aligned, report


def align_poses(reference: Pose, driving: Sequence[Pose], *, from_frame: int = 0,
                mode: str = "per-limb", parts: Sequence[str] | str = PARTS) -> list[Pose]:
    """Align driving poses to the reference body; see :func:`align_poses_report` for the report."""
    return align_poses_report(reference, driving, from_frame=from_frame, mode=mode, parts=parts)[0]
