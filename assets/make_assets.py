"""Make the example assets the app ships (all drawn here, no third-party media).

* ``example_reference.png``: a simple synthetic person-like figure (512x768) standing in the pose
  of frame 0 of the dance, drawn with PIL from the keypoints.
* ``example_dance.json``: a short procedural dance (arm waves, hip sway, knee bounce, a step to
  each side) as a :class:`unianimate.pose.PoseSequence` in the project's pose JSON format.
* ``example_dance_preview.png``: a contact sheet of a few drawn poses (for the README / docs).

Run ``python assets/make_assets.py`` from the repository root; the outputs are deterministic.
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent
if str(ROOT.parent) not in sys.path:
    sys.path.insert(0, str(ROOT.parent))

from unianimate.pose import Pose, PoseSequence, draw_pose, save_pose_sequence  # noqa: E402
from unianimate.training.people import arm_points, face_points, hand_points, rotate  # noqa: E402

log = logging.getLogger("make_assets")

WIDTH, HEIGHT = 512, 768
FPS = 8.0
FRAMES = 40

# Standing pose (OpenPose body order + left/right foot), normalised to a 512x768 portrait frame.
_BASE = np.array([
    [0.500, 0.170],  # 0 nose
    [0.500, 0.255],  # 1 neck
    [0.405, 0.262],  # 2 right shoulder
    [0.375, 0.385],  # 3 right elbow
    [0.365, 0.500],  # 4 right wrist
    [0.595, 0.262],  # 5 left shoulder
    [0.625, 0.385],  # 6 left elbow
    [0.635, 0.500],  # 7 left wrist
    [0.445, 0.520],  # 8 right hip
    [0.440, 0.680],  # 9 right knee
    [0.440, 0.840],  # 10 right ankle
    [0.555, 0.520],  # 11 left hip
    [0.560, 0.680],  # 12 left knee
    [0.560, 0.840],  # 13 left ankle
    [0.482, 0.152],  # 14 right eye
    [0.518, 0.152],  # 15 left eye
    [0.462, 0.165],  # 16 right ear
    [0.538, 0.165],  # 17 left ear
    [0.580, 0.875],  # 18 left foot
    [0.420, 0.875],  # 19 right foot
])


def dance_pose(t: float, aspect: float = WIDTH / HEIGHT) -> Pose:
    """The procedural dance at time ``t`` seconds (smooth, periodic over 5 s)."""
    w = 2 * math.pi / 2.5                      # one beat cycle every 2.5 s
    sway = 0.035 * math.sin(w * t)             # hips and torso side to side
    bounce = 0.012 * (1 - math.cos(2 * w * t)) / 2   # knees bend twice per cycle
    body = _BASE.copy()
    body[:, 0] += sway
    body[:18, 1] += bounce
    # legs: knees bend outwards a bit while bouncing, feet stay on the floor
    body[[10, 13, 18, 19], 1] -= bounce
    body[9, 0] -= 0.6 * bounce
    body[12, 0] += 0.6 * bounce
    body[[10, 19], 0] -= sway * 0.5
    body[[13, 18], 0] -= sway * 0.5
    # arms: alternate waves overhead
    ph = w * t
    r_up = 0.3 + 2.1 * (0.5 + 0.5 * math.sin(ph))
    l_up = 0.3 + 2.1 * (0.5 + 0.5 * math.sin(ph + math.pi))
    r_el, r_wr = arm_points(body[2], 0.1, 0.09, r_up, 0.5 * math.sin(2 * ph), aspect)
    l_el, l_wr = arm_points(body[5], 0.1, 0.09, -l_up, -0.5 * math.sin(2 * ph + 1.0), aspect)
    body[3], body[4], body[6], body[7] = r_el, r_wr, l_el, l_wr
    # head tilts with the sway
    tilt = 2.5 * sway
    for i in (0, 14, 15, 16, 17):
        body[i] = body[1] + rotate((body[i] - body[1]) * np.array([aspect, 1.0]), tilt) / np.array([aspect, 1.0])
    hands = np.stack([hand_points(l_wr, l_el, aspect, 1.0 + 0.2 * math.sin(ph)),      # 0 left
                      hand_points(r_wr, r_el, aspect, 1.0 + 0.2 * math.cos(ph))])     # 1 right
    face = face_points(body[0], tilt, aspect)
    return Pose(body=body, body_scores=np.full(20, 0.95), hands=hands,
                hand_scores=np.full((2, 21), 0.9), face=face, face_scores=np.full(68, 0.9))


def dance_sequence(frames: int = FRAMES, fps: float = FPS) -> PoseSequence:
    """The example dance: ``frames`` poses at ``fps`` for a 512x768 canvas."""
    poses = [dance_pose(i / fps) for i in range(frames)]
    return PoseSequence(poses, fps=fps, width=WIDTH, height=HEIGHT,
                        meta={"source": "assets/make_assets.py (procedural dance)",
                              "license": "CC0-1.0"})


def _px(p: np.ndarray) -> tuple[float, float]:
    return float(p[0] * WIDTH), float(p[1] * HEIGHT)


def draw_figure(pose: Pose) -> Image.Image:
    """A flat-shaded person-like figure in ``pose`` on a soft studio backdrop (RGB, WxH)."""
    yy = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    xx = np.linspace(-1.0, 1.0, WIDTH)[None, :, None]
    top = np.array([214, 222, 236], dtype=np.float64)
    bottom = np.array([150, 160, 186], dtype=np.float64)
    bg = top * (1 - yy) + bottom * yy - 18 * xx ** 2
    floor = (yy > 0.86).astype(np.float64)
    bg = bg * (1 - floor) + floor * np.array([120, 104, 92]) * (1.0 - 0.15 * (yy - 0.86) / 0.14)
    img = Image.fromarray(np.clip(bg + np.zeros((1, WIDTH, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    b = pose.body
    skin, shirt, trousers, shoes, hair = (236, 196, 164), (214, 64, 82), (44, 62, 112), (36, 30, 28), (70, 44, 30)
    # floor shadow
    cx = float((b[10, 0] + b[13, 0]) / 2 * WIDTH)
    d.ellipse([cx - 90, 0.87 * HEIGHT - 10, cx + 90, 0.87 * HEIGHT + 12], fill=(96, 82, 74))

    def limb(i: int, j: int, colour: tuple[int, int, int], width: int) -> None:
        d.line([_px(b[i]), _px(b[j])], fill=colour, width=width, joint="curve")
        for k in (i, j):
            x, y = _px(b[k])
            r = width / 2
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    # legs (trousers) and shoes
    for hip, knee, ankle in ((8, 9, 10), (11, 12, 13)):
        limb(hip, knee, trousers, 40)
        limb(knee, ankle, trousers, 34)
    for ankle, foot in ((10, 19), (13, 18)):
        limb(ankle, foot, shoes, 22)
    # torso: a rounded quad from shoulders to hips
    torso = [_px(b[2]), _px(b[5]), _px(b[11]), _px(b[8])]
    d.polygon(torso, fill=shirt)
    for i, j in ((2, 8), (5, 11), (2, 5), (8, 11)):
        limb(i, j, shirt, 26)
    # neck and head
    limb(1, 0, skin, 26)
    hx, hy = _px(b[0])
    d.ellipse([hx - 38, hy - 52, hx + 38, hy + 44], fill=skin)
    d.chord([hx - 41, hy - 60, hx + 41, hy + 20], 180, 360, fill=hair)
    for e in (14, 15):
        ex, ey = _px(b[e])
        d.ellipse([ex - 4, ey - 3, ex + 4, ey + 3], fill=(40, 40, 48))
    d.arc([hx - 14, hy + 4, hx + 14, hy + 22], 20, 160, fill=(150, 60, 60), width=3)
    # arms (sleeves then skin) and hands
    for sh, el, wr in ((2, 3, 4), (5, 6, 7)):
        limb(sh, el, shirt, 24)
        limb(el, wr, skin, 18)
    for hand in pose.hands:
        for finger in range(5):
            pts = [_px(hand[0])] + [_px(hand[1 + 4 * finger + j]) for j in range(4)]
            d.line(pts, fill=skin, width=7, joint="curve")
        x, y = _px(hand[0])
        d.ellipse([x - 10, y - 10, x + 10, y + 10], fill=skin)
    return img.filter(ImageFilter.SMOOTH)


def contact_sheet(seq: PoseSequence, picks: int = 5, scale: float = 0.25) -> Image.Image:
    """A row of ``picks`` drawn poses (what the model sees), scaled down."""
    w, h = int(WIDTH * scale), int(HEIGHT * scale)
    idx = np.minimum(np.arange(picks) * 3, len(seq) - 1)
    sheet = Image.new("RGB", (w * picks, h))
    for k, i in enumerate(idx):
        tile = Image.fromarray(draw_pose(seq[int(i)], HEIGHT, WIDTH)).resize((w, h), Image.BILINEAR)
        sheet.paste(tile, (k * w, 0))
    return sheet


def main(out_dir: Path = ROOT) -> None:
    """Write the three assets into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seq = dance_sequence()
    save_pose_sequence(seq, out_dir / "example_dance.json")
    draw_figure(seq[0]).save(out_dir / "example_reference.png", optimize=True)
    contact_sheet(seq).save(out_dir / "example_dance_preview.png", optimize=True)
    for name in ("example_dance.json", "example_reference.png", "example_dance_preview.png"):
        log.info("wrote %s (%d bytes)", out_dir / name, (out_dir / name).stat().st_size)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
