"""Procedural drawn people with known ground truth: looks, dances, frames, pose drawings.

Grown from ``assets/make_assets.py``'s figure. A :class:`Look` fixes a person's proportions and flat
colours (skin, hair, shirt, trousers, shoes) and a plain background; a :class:`Dance` is a smooth
periodic motion (arm waves, elbow bends, hip sway, knee bounce, side steps, drift). Any
:class:`~unianimate.pose.Pose` (e.g. from a pose JSON) can also drive :func:`render_person`.

:func:`sample_clip` draws one training clip from ``(seed, index)`` alone, so a data position is just
an integer (exact resume) and DataLoader workers need no shared state. :func:`heldout_clips` uses a
separate fixed stream: the same looks and dances every time, never seen in training.

Coordinates follow :class:`Pose`: x and y normalised to the canvas width and height.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from unianimate.pose import Pose, PoseSequence, draw_pose

RGB = tuple[int, int, int]
DEFAULT_WIDTH, DEFAULT_HEIGHT = 64, 128
DEFAULT_FPS = 8.0
HELDOUT_STREAM = 1  # rng stream key of the held-out split (training uses stream 0)
_SUPERSAMPLE = 2


def rotate(vec: np.ndarray, angle: float) -> np.ndarray:
    """``vec`` (2,) rotated by ``angle`` radians (y points down, so positive turns clockwise)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * vec[0] - s * vec[1], s * vec[0] + c * vec[1]])


def arm_points(shoulder: np.ndarray, upper: float, lower: float, a_upper: float, a_lower: float,
               aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Elbow and wrist from a shoulder and two angles (0 = straight down); lengths in height units."""
    down = np.array([0.0, 1.0])
    d1 = rotate(down, a_upper)
    d2 = rotate(down, a_upper + a_lower)
    scale = np.array([1.0 / aspect, 1.0])  # keep lengths in pixels equal on a WxH canvas
    elbow = shoulder + d1 * upper * scale
    wrist = elbow + d2 * lower * scale
    return elbow, wrist


def hand_points(wrist: np.ndarray, elbow: np.ndarray, aspect: float, spread: float,
                size: float = 1.0) -> np.ndarray:
    """21 hand points: the wrist, then 5 fingers of 4 joints fanning out along the forearm."""
    scale = np.array([1.0 / aspect, 1.0])
    fore = (wrist - elbow) / scale
    base = math.atan2(fore[1], fore[0])
    pts = [wrist]
    for f, off in enumerate(np.linspace(-0.7, 0.7, 5) * spread):
        direction = np.array([math.cos(base + off), math.sin(base + off)])
        length = (0.011 if f == 0 else 0.013) * size
        for j in range(1, 5):
            pts.append(wrist + direction * length * j * scale)
    return np.asarray(pts)


def face_points(nose: np.ndarray, tilt: float, aspect: float, size: float = 1.0) -> np.ndarray:
    """68 face points: an oval jaw line, brows, nose, eyes and mouth around the nose."""
    scale = np.array([1.0 / aspect, 1.0]) * size

    jaw = [(0.042 * math.cos(a), 0.012 + 0.05 * math.sin(a)) for a in np.linspace(0.05, math.pi - 0.05, 17)]
    brows = [(x, -0.03 - 0.004 * math.sin((x + 0.035) * 40)) for x in np.linspace(-0.035, -0.008, 5)]
    brows += [(x, -0.03 - 0.004 * math.sin((x - 0.008) * 40)) for x in np.linspace(0.008, 0.035, 5)]
    nose_pts = [(0.0, -0.02 + 0.006 * i) for i in range(4)] + [(x, 0.006) for x in np.linspace(-0.008, 0.008, 5)]
    eye = [(math.cos(a) * 0.009, math.sin(a) * 0.004) for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    eyes = [(x - 0.018, y - 0.018) for x, y in eye] + [(x + 0.018, y - 0.018) for x, y in eye]
    mouth = [(0.016 * math.cos(a), 0.024 + 0.007 * math.sin(a))
             for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)]
    inner = [(0.01 * math.cos(a), 0.024 + 0.003 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
    pts = np.asarray(jaw + brows + nose_pts + eyes + mouth + inner, dtype=np.float64)  # (68,2)
    return np.array([nose + rotate(p, tilt) * scale for p in pts])


# ------------------------------------------------------------------------------------------ looks
@dataclass(frozen=True)
class Look:
    """A person's proportions (height units: fractions of the canvas height) and flat colours."""

    centre_x: float = 0.5      # ankle midpoint x (normalised width)
    ground_y: float = 0.9      # ankle y (normalised height)
    size: float = 0.8          # overall scale
    leg: float = 0.34          # hip -> ankle
    torso: float = 0.27        # hip -> neck
    neck: float = 0.075        # neck -> nose
    shoulder: float = 0.085    # half shoulder width
    hip: float = 0.05          # half hip width
    upper_arm: float = 0.12
    lower_arm: float = 0.11
    head: float = 0.055        # head radius
    limb: float = 0.03         # leg thickness (arms are 0.6 of it)
    skin: RGB = (236, 196, 164)
    hair: RGB = (70, 44, 30)
    shirt: RGB = (214, 64, 82)
    trousers: RGB = (44, 62, 112)
    shoes: RGB = (36, 30, 28)
    background: RGB = (214, 222, 236)
    long_sleeves: bool = False
    shorts: bool = False
    long_hair: bool = False


_SKINS = np.array([(255, 224, 196), (240, 200, 170), (224, 172, 130), (198, 134, 96), (150, 96, 64),
                   (110, 70, 46), (86, 56, 40)], dtype=np.float64)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 255) -> RGB:
    return tuple(int(v) for v in rng.integers(lo, hi + 1, size=3))  # type: ignore[return-value]


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def random_look(rng: np.random.Generator) -> Look:
    """Random proportions and flat colours; clothing always contrasts with the background."""
    skin_idx = rng.uniform(0, len(_SKINS) - 1)
    lo = int(skin_idx)
    skin = _SKINS[lo] + (_SKINS[min(lo + 1, len(_SKINS) - 1)] - _SKINS[lo]) * (skin_idx - lo)
    skin_rgb: RGB = tuple(int(v) for v in np.clip(skin + rng.normal(0, 6, 3), 0, 255))  # type: ignore
    background = _colour(rng, 20, 250)
    parts = []
    for _ in range(4):  # hair, shirt, trousers, shoes: resample until they stand out from the background
        c = _colour(rng)
        while _distance(c, background) < 90:
            c = _colour(rng)
        parts.append(c)
    while _distance(skin_rgb, background) < 70:
        background = _colour(rng, 20, 250)
    return Look(centre_x=float(rng.uniform(0.42, 0.58)), ground_y=float(rng.uniform(0.86, 0.93)),
                size=float(rng.uniform(0.72, 0.92)), leg=float(rng.uniform(0.30, 0.38)),
                torso=float(rng.uniform(0.24, 0.30)), neck=float(rng.uniform(0.065, 0.085)),
                shoulder=float(rng.uniform(0.07, 0.10)), hip=float(rng.uniform(0.04, 0.065)),
                upper_arm=float(rng.uniform(0.10, 0.13)), lower_arm=float(rng.uniform(0.09, 0.12)),
                head=float(rng.uniform(0.045, 0.065)), limb=float(rng.uniform(0.025, 0.04)),
                skin=skin_rgb, hair=parts[0], shirt=parts[1], trousers=parts[2], shoes=parts[3],
                background=background, long_sleeves=bool(rng.random() < 0.5),
                shorts=bool(rng.random() < 0.3), long_hair=bool(rng.random() < 0.4))


# ------------------------------------------------------------------------------------------ dances
@dataclass(frozen=True)
class Dance:
    """A smooth periodic dance; angles in radians, amplitudes in height units."""

    period: float = 2.0        # seconds per cycle
    phase: float = 0.0
    sway: float = 0.02         # hip sway (x)
    bounce: float = 0.012      # knee bounce (y)
    drift: float = 0.0         # slow side-to-side travel of the whole body
    step: float = 0.0          # leg spread angle amplitude
    r_base: float = 0.3        # right upper-arm angle around which it waves
    r_amp: float = 1.0
    r_elbow: float = 0.5
    l_base: float = 0.3
    l_amp: float = 1.0
    l_elbow: float = 0.5
    l_phase: float = math.pi   # left arm phase relative to the right
    tilt: float = 2.0          # head tilt per unit of sway

    def pose(self, t: float, look: Look, aspect: float) -> Pose:
        """The pose at time ``t`` seconds for a person of ``look`` on a canvas of ``aspect`` = W/H."""
        s = look.size
        w = 2 * math.pi / self.period
        ph = w * t + self.phase
        sway = self.sway * math.sin(ph)
        bounce = self.bounce * (1 - math.cos(2 * ph)) / 2
        drift = self.drift * math.sin(0.5 * ph)
        sx = 1.0 / aspect  # height units -> normalised x

        cx = look.centre_x + drift * sx
        ground = look.ground_y
        hip_y = ground - look.leg * s + bounce
        neck_y = hip_y - look.torso * s
        body = np.zeros((20, 2))
        hip_c = np.array([cx + sway * sx, hip_y])
        body[8] = hip_c + [-look.hip * s * sx, 0.0]    # right hip (image left)
        body[11] = hip_c + [look.hip * s * sx, 0.0]    # left hip
        lean = 0.6 * sway
        neck = np.array([hip_c[0] + lean * sx, neck_y])
        body[1] = neck
        body[2] = neck + [-look.shoulder * s * sx, 0.01 * s]
        body[5] = neck + [look.shoulder * s * sx, 0.01 * s]
        # legs: ankles stay near the floor; knees bend outwards while bouncing; side steps spread them
        spread = self.step * math.sin(ph)
        for hip_i, knee_i, ankle_i, foot_i, side in ((8, 9, 10, 19, -1.0), (11, 12, 13, 18, 1.0)):
            a = side * (0.05 + max(0.0, side * spread))
            ankle = body[hip_i] + rotate(np.array([0.0, look.leg * s]), -a) * [sx, 1.0]
            ankle[1] = min(ankle[1], ground)
            knee = (body[hip_i] + ankle) / 2 + [side * (0.6 * bounce + 0.01 * s) * sx, 0.0]
            body[knee_i], body[ankle_i] = knee, ankle
            body[foot_i] = ankle + [side * 0.03 * s * sx, 0.03 * s]
        # arms
        r_up = self.r_base + self.r_amp * (0.5 + 0.5 * math.sin(ph))
        l_up = self.l_base + self.l_amp * (0.5 + 0.5 * math.sin(ph + self.l_phase))
        r_el, r_wr = arm_points(body[2], look.upper_arm * s, look.lower_arm * s, r_up,
                                self.r_elbow * math.sin(2 * ph), aspect)
        l_el, l_wr = arm_points(body[5], look.upper_arm * s, look.lower_arm * s, -l_up,
                                -self.l_elbow * math.sin(2 * ph + 1.0), aspect)
        body[3], body[4], body[6], body[7] = r_el, r_wr, l_el, l_wr
        # head, tilted with the sway
        tilt = self.tilt * sway
        head = {0: (0.0, -look.neck), 14: (-0.018, -look.neck - 0.018), 15: (0.018, -look.neck - 0.018),
                16: (-0.038, -look.neck - 0.005), 17: (0.038, -look.neck - 0.005)}
        for i, (dx, dy) in head.items():
            body[i] = neck + rotate(np.array([dx * s, dy * s]), tilt) * [sx, 1.0]
        hands = np.stack([hand_points(l_wr, l_el, aspect, 1.0 + 0.2 * math.sin(ph), s),
                          hand_points(r_wr, r_el, aspect, 1.0 + 0.2 * math.cos(ph), s)])
        face = face_points(body[0], tilt, aspect, s)
        return Pose(body=body, body_scores=np.full(20, 0.95), hands=hands,
                    hand_scores=np.full((2, 21), 0.9), face=face, face_scores=np.full(68, 0.9))


def random_dance(rng: np.random.Generator) -> Dance:
    """Random tempo, arm pattern, sway, bounce, steps and drift."""
    mirrored = rng.random() < 0.4
    r_base, r_amp = float(rng.uniform(0.1, 1.2)), float(rng.uniform(0.4, 1.6))
    l_base, l_amp = (r_base, r_amp) if mirrored else (float(rng.uniform(0.1, 1.2)), float(rng.uniform(0.4, 1.6)))
    return Dance(period=float(rng.uniform(1.0, 2.6)), phase=float(rng.uniform(0, 2 * math.pi)),
                 sway=float(rng.uniform(0.0, 0.035)), bounce=float(rng.uniform(0.0, 0.02)),
                 drift=float(rng.uniform(0.0, 0.04)), step=float(rng.uniform(0.0, 0.35)),
                 r_base=r_base, r_amp=r_amp, r_elbow=float(rng.uniform(0.0, 0.9)),
                 l_base=l_base, l_amp=l_amp, l_elbow=float(rng.uniform(0.0, 0.9)),
                 l_phase=0.0 if mirrored else float(rng.uniform(0, 2 * math.pi)),
                 tilt=float(rng.uniform(0.0, 3.0)))


# ------------------------------------------------------------------------------------------ drawing
def render_person(pose: Pose, look: Look, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> np.ndarray:
    """The flat-colour figure of ``look`` in ``pose`` on its plain background: uint8 (H,W,3)."""
    ss = _SUPERSAMPLE
    W, H = width * ss, height * ss
    img = Image.new("RGB", (W, H), look.background)
    d = ImageDraw.Draw(img)
    b = pose.body
    u = look.size * H  # one height unit in supersampled pixels

    def px(p: np.ndarray) -> tuple[float, float]:
        return float(p[0] * W), float(p[1] * H)

    def dot(p: np.ndarray, r: float, colour: RGB) -> None:
        x, y = px(p)
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    def limb(i: int, j: int, colour: RGB, width_u: float) -> None:
        wpx = max(2.0, width_u * u)
        d.line([px(b[i]), px(b[j])], fill=colour, width=int(round(wpx)))
        for k in (i, j):
            dot(b[k], wpx / 2, colour)

    leg_w, arm_w = look.limb, 0.6 * look.limb
    # long hair behind the body
    if look.long_hair:
        hx, hy = px(b[0])
        r = look.head * u
        d.rectangle([hx - 1.1 * r, hy - 0.4 * r, hx + 1.1 * r, hy + 1.9 * r], fill=look.hair)
    # legs and shoes
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        limb(hip, knee, look.trousers, leg_w)
        limb(knee, ankle, look.skin if look.shorts else look.trousers, 0.85 * leg_w)
    for ankle, foot in ((10, 19), (13, 18)):
        limb(ankle, foot, look.shoes, 0.7 * leg_w)
    # torso
    d.polygon([px(b[2]), px(b[5]), px(b[11]), px(b[8])], fill=look.shirt)
    for i, j in ((2, 8), (5, 11), (2, 5), (8, 11)):
        limb(i, j, look.shirt, arm_w)
    # neck and head
    limb(1, 0, look.skin, 0.6 * arm_w + 0.01)
    hx, hy = px(b[0])
    r = look.head * u
    d.ellipse([hx - r, hy - 1.2 * r, hx + r, hy + 0.9 * r], fill=look.skin)
    d.chord([hx - 1.05 * r, hy - 1.35 * r, hx + 1.05 * r, hy + 0.3 * r], 180, 360, fill=look.hair)
    # arms (sleeves then skin) and hands
    for sh, el, wr in ((2, 3, 4), (5, 6, 7)):
        limb(sh, el, look.shirt, arm_w)
        limb(el, wr, look.shirt if look.long_sleeves else look.skin, 0.85 * arm_w)
        dot(b[wr], 0.75 * arm_w * u, look.skin)
    small = img.resize((width, height), Image.BOX)
    return np.asarray(small, dtype=np.uint8).copy()


def pose_image(pose: Pose, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> np.ndarray:
    """The pose drawing the model is conditioned on (body and hands, as DWPose draws them)."""
    return draw_pose(pose, height, width)


# ------------------------------------------------------------------------------------------ clips
@dataclass
class Clip:
    """One training or evaluation example; every image uint8 (H,W,3), sequences (F,H,W,3)."""

    name: str
    reference: np.ndarray
    reference_pose: np.ndarray
    poses: np.ndarray
    frames: np.ndarray
    reference_index: int | None = None  # frame of ``frames`` the reference equals, if any

    def __len__(self) -> int:
        return len(self.frames)


def render_clip(look: Look, poses: list[Pose], reference_pose: Pose, name: str,
                width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Clip:
    """Ground-truth frames and pose drawings of ``look`` along ``poses``."""
    frames = np.stack([render_person(p, look, width, height) for p in poses])
    drawn = np.stack([pose_image(p, width, height) for p in poses])
    return Clip(name=name, reference=render_person(reference_pose, look, width, height),
                reference_pose=pose_image(reference_pose, width, height), poses=drawn, frames=frames)


def dance_clip(look: Look, dance: Dance, frames: int, start: float, reference_time: float, name: str,
               width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT, fps: float = DEFAULT_FPS) -> Clip:
    """``frames`` frames of ``dance`` from ``start`` seconds; the reference at ``reference_time``."""
    aspect = width / height
    poses = [dance.pose(start + i / fps, look, aspect) for i in range(frames)]
    return render_clip(look, poses, dance.pose(reference_time, look, aspect), name, width, height)


def sequence_clip(look: Look, sequence: PoseSequence, name: str, reference_index: int = 0,
                  width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> Clip:
    """A person of ``look`` driven by any pose sequence (e.g. a pose JSON); the reference is frame
    ``reference_index`` of the sequence."""
    poses = list(sequence)
    clip = render_clip(look, poses, poses[reference_index], name, width, height)
    clip.reference_index = reference_index
    return clip


def sample_clip(seed: int, index: int, frames: int = 8, width: int = DEFAULT_WIDTH,
                height: int = DEFAULT_HEIGHT, fps: float = DEFAULT_FPS, stream: int = 0) -> Clip:
    """Clip ``index`` of the stream ``(seed, stream)``: a function of its arguments alone.

    The reference is a random moment of the same dance (the paper draws it from the same video).
    """
    rng = np.random.default_rng([int(seed), int(stream), int(index)])
    look, dance = random_look(rng), random_dance(rng)
    start = float(rng.uniform(0, 10))
    ref_t = float(rng.uniform(0, 10))
    return dance_clip(look, dance, frames, start, ref_t, f"procedural-{stream}-{seed}-{index}",
                      width, height, fps)


def heldout_clips(count: int, frames: int = 8, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                  fps: float = DEFAULT_FPS) -> list[Clip]:
    """The fixed held-out set: looks and dances from their own stream, never drawn in training."""
    return [sample_clip(0, i, frames, width, height, fps, stream=HELDOUT_STREAM) for i in range(count)]


def example_for_size(sequence: PoseSequence, width: int, height: int, look_index: int = 0,
                     fit: str = "crop") -> tuple[np.ndarray, PoseSequence]:
    """An in-domain example for a model trained on these people: ``sequence`` fitted onto a
    ``width`` x ``height`` canvas (as the studio fits it) and a held-out look drawn in its first
    pose -> (reference uint8 (H,W,3), fitted sequence). The studio's reference pose without a
    detector is the first driving pose, so reference and poses agree exactly."""
    from unianimate.pose.fit import fit_poses

    fitted = fit_poses(sequence, (width, height), fit)
    return render_person(fitted.poses[0], example_look(look_index), width, height), fitted


def example_look(index: int = 0) -> Look:
    """Held-out look ``index`` (the look of held-out clip ``index``): the demo example's person."""
    return random_look(np.random.default_rng([0, HELDOUT_STREAM, int(index)]))
