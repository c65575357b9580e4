"""Pose drawing: exactly the images the released model was trained and run on (spec §5), plus an
overlay style for humans.

:func:`draw_pose` reproduces the reference drawing step by step: 19 body+foot limbs as filled
ellipses (``cv2.ellipse2Poly`` + ``cv2.fillConvexPoly``, half-width 4, angle truncated to whole
degrees), the canvas multiplied by 0.6 and truncated to uint8, 20 joints as filled circles of
radius 4, then both hands (20 edges as lines of thickness 2 in HSV colours passed to OpenCV as
floats, 21 points as red circles of radius 4); no face. The reference drew the RGB colour triplets
into an OpenCV (BGR) canvas, saved a JPEG with cv2 and read it back with PIL as RGB, so the model
saw every triplet reversed; we draw the reversed triplets directly (per-channel identical).
Checked against the reference's own ``draw_body_and_foot``/``draw_handpose``: identical pixels at
768x512, 1216x768 and 100x70 on random poses with missing points.

JPEG: by default we return the clean drawing. The model saw the JPEG-compressed drawing
(``cv2.imwrite`` default quality 95, 4:2:0 chroma subsampling, decoded by PIL); JPEG ringing
changes many pixel values slightly around the strokes. ``jpeg_roundtrip=True`` reproduces those
pixels too (cv2 encode with default parameters, PIL decode), at a cost of a few ms per frame.
"""
from __future__ import annotations

import io
import math

import cv2
import numpy as np

from unianimate.errors import InputError
from unianimate.pose.types import MISSING, Pose

STICK_WIDTH = 4
JOINT_RADIUS = 4
HAND_POINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
DIM = 0.6
_EPS = 0.01

# Limbs as (parent, child) indices into Pose.body: OpenPose's 17 + ankle->foot for both legs.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19),
)
# Colour triplets as written in the reference (drawn into a BGR canvas; the model saw them reversed).
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    (170, 255, 255), (255, 255, 0),
)
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
    (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_POINT_COLOR = (0, 0, 255)
# Points further than this many image sizes outside the canvas are not drawn (OpenCV takes int32
# pixel coordinates; only absurd alignments get there, never a detection).
FAR_LIMIT = 64.0
# uint8 v -> uint8(v * 0.6) exactly as ``(canvas * 0.6).astype(np.uint8)`` (float64, truncated), as a LUT
_DIM_LUT = (np.arange(256) * DIM).astype(np.uint8)


def _hsv_full_to_rgb(h: float) -> tuple[float, float, float]:
    """HSV(h, 1, 1) -> RGB floats in [0, 1], with the same float operations as matplotlib's
    ``hsv_to_rgb`` (which the reference used) so the colours round identically in OpenCV."""
    s = v = 1.0
    i = int(h * 6.0)
    f = (h * 6.0) - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]


HAND_EDGE_COLORS: tuple[tuple[float, float, float], ...] = tuple(
    tuple(c * 255 for c in _hsv_full_to_rgb(i / float(len(HAND_EDGES)))) for i in range(len(HAND_EDGES))
)
# Drawing per channel is independent, so drawing the reversed triplets into an RGB canvas gives
# exactly the reference's BGR canvas read as RGB, without a channel swap of the whole image.
_TABLES = {
    False: (COLORS, HAND_EDGE_COLORS, HAND_POINT_COLOR),
    True: (tuple(c[::-1] for c in COLORS), tuple(c[::-1] for c in HAND_EDGE_COLORS), HAND_POINT_COLOR[::-1]),
}


def _check_size(height: int, width: int) -> tuple[int, int]:
    if isinstance(height, bool) or isinstance(width, bool):
        raise InputError("draw size must be integers")
    h, w = int(height), int(width)
    if h != height or w != width or h <= 0 or w <= 0 or h * w > 64_000_000:
        raise InputError(f"cannot draw a pose at {width}x{height}; give positive integer sizes "
                         f"(at most 64 megapixels)")
    return h, w


def draw_body_bgr(canvas: np.ndarray, body: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Limbs, dimming and joints into a canvas with the reference triplets (``reverse``: reversed
    triplets, i.e. the RGB view of the reference's BGR canvas); returns the new canvas."""
    colors = _TABLES[reverse][0]
    H, W = canvas.shape[:2]
    fW, fH = float(W), float(H)
    present = ((body[:, 0] != MISSING) & (body[:, 1] != MISSING)
               & (np.abs(body) <= FAR_LIMIT).all(axis=1))
    lo = [W, H]   # bounding box of everything drawn so far: only it needs the dimming
    hi = [-1, -1]
    for i, (a, b) in enumerate(LIMBS):
        if not (present[a] and present[b]):
            continue
        Y0, Y1 = float(body[a, 0]) * fW, float(body[b, 0]) * fW  # x in pixels
        X0, X1 = float(body[a, 1]) * fH, float(body[b, 1]) * fH  # y in pixels
        mX = (X0 + X1) / 2
        mY = (Y0 + Y1) / 2
        length = ((X0 - X1) ** 2 + (Y0 - Y1) ** 2) ** 0.5
        angle = math.degrees(math.atan2(X0 - X1, Y0 - Y1))
        polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, colors[i])
        pmin, pmax = polygon.min(axis=0), polygon.max(axis=0)
        lo = [min(lo[0], int(pmin[0])), min(lo[1], int(pmin[1]))]
        hi = [max(hi[0], int(pmax[0])), max(hi[1], int(pmax[1]))]
    # == (canvas * 0.6).astype(np.uint8) on the whole canvas: outside the box every pixel is 0
    x0, y0 = max(lo[0] - 1, 0), max(lo[1] - 1, 0)
    x1, y1 = min(hi[0] + 2, W), min(hi[1] + 2, H)
    if x1 > x0 and y1 > y0:
        roi = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = cv2.LUT(roi, _DIM_LUT)
    for i in range(len(body)):
        if not present[i]:
            continue
        cv2.circle(canvas, (int(body[i, 0] * W), int(body[i, 1] * H)), JOINT_RADIUS, colors[i], thickness=-1)
    return canvas


def draw_hands_bgr(canvas: np.ndarray, hands: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Hand edges and points into the canvas (in place; ``reverse`` as in :func:`draw_body_bgr`);
    points off the top/left edge (truncated pixel coordinate <= 0, which includes missing points)
    are skipped as in the reference."""
    _, edge_colors, point_color = _TABLES[reverse]
    H, W = canvas.shape[:2]
    for peaks in hands:
        peaks = np.where(np.abs(peaks) <= FAR_LIMIT, peaks, MISSING)  # far points: skipped like missing
        px = [(int(x * W), int(y * H)) for x, y in peaks.tolist()]
        for ie, (a, b) in enumerate(HAND_EDGES):
            x1, y1 = px[a]
            x2, y2 = px[b]
            if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
                cv2.line(canvas, (x1, y1), (x2, y2), edge_colors[ie], thickness=HAND_LINE_THICKNESS)
        for x, y in px:
            if x > _EPS and y > _EPS:
                cv2.circle(canvas, (x, y), HAND_POINT_RADIUS, point_color, thickness=-1)
    return canvas


def _jpeg_roundtrip(canvas_bgr: np.ndarray) -> np.ndarray:
    """Encode as the reference did (cv2 JPEG defaults) and decode as it did (PIL, RGB)."""
    ok, buf = cv2.imencode(".jpg", canvas_bgr)
    if not ok:  # pragma: no cover - only on a broken OpenCV build
        raise RuntimeError("OpenCV could not encode the pose drawing as JPEG")
    from PIL import Image

    with Image.open(io.BytesIO(buf.tobytes())) as img:
        return np.asarray(img.convert("RGB")).copy()


def draw_pose(pose: Pose, height: int, width: int, *, jpeg_roundtrip: bool = False) -> np.ndarray:
    """The pose drawn as the model saw it: (H, W, 3) uint8 RGB on black (see the module docstring).

    Args:
        pose: the pose (normalised coordinates, so any target size works).
        height, width: output size in pixels (the reference always used 768 x 512).
        jpeg_roundtrip: also apply the reference's JPEG save/load (default: the clean drawing).
    """
    H, W = _check_size(height, width)
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    if jpeg_roundtrip:  # the reference's BGR canvas, through its JPEG save/load
        canvas = draw_body_bgr(canvas, pose.body)
        return _jpeg_roundtrip(draw_hands_bgr(canvas, pose.hands))
    canvas = draw_body_bgr(canvas, pose.body, reverse=True)
    return draw_hands_bgr(canvas, pose.hands, reverse=True)


def draw_poses(poses, height: int, width: int, *, jpeg_roundtrip: bool = False) -> np.ndarray:
    """Many poses drawn into one uint8 array (F, H, W, 3)."""
    H, W = _check_size(height, width)
    out = np.empty((len(poses), H, W, 3), dtype=np.uint8)
    for i, pose in enumerate(poses):
        out[i] = draw_pose(pose, H, W, jpeg_roundtrip=jpeg_roundtrip)
    return out


def draw_overlay(pose: Pose, image: np.ndarray, alpha: float = 0.8, *, draw_face: bool = True) -> np.ndarray:
    """Skeleton over a picture, for humans (previews of the reference image or driving frames).

    Args:
        pose: normalised keypoints of ``image``.
        image: uint8 RGB (H, W, 3); not modified.
        alpha: opacity of the skeleton strokes in [0, 1].
        draw_face: also draw the 68 face points as small white dots (the model never sees them).
    Returns:
        uint8 RGB (H, W, 3): strokes blended over a darkened copy of the image.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("draw_overlay needs a uint8 RGB image of shape (H, W, 3)")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"overlay alpha must lie in [0, 1], got {alpha}")
    H, W = image.shape[:2]
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    canvas = draw_body_bgr(canvas, pose.body, reverse=True)
    canvas = draw_hands_bgr(canvas, pose.hands, reverse=True)
    if draw_face:
        for x, y in pose.face[pose.face_valid].tolist():
            cv2.circle(canvas, (int(x * W), int(y * H)), max(1, round(min(H, W) / 256)), (255, 255, 255), -1)
    skel = canvas.astype(np.float32)
    # strokes were dimmed to 0.6 for the model; brighten them back for people
    skel = np.clip(skel / DIM, 0, 255)
    mask = (canvas.max(axis=2, keepdims=True) > 0).astype(np.float32) * float(alpha)
    base = image.astype(np.float32) * 0.85  # slightly darkened so colours stand out
    out = base * (1.0 - mask) + skel * mask
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
