"""Synthetic material for tests and benchmarks: plausible poses, small DWPose-shaped ONNX models and
small videos. Nothing here is used on the real inference path.

The ONNX models have the real files' input/output names and shapes (``yolox_l.onnx``: input
``images`` (1, 3, 640, 640), output ``output`` (1, 8400, 85); ``dw-ll_ucoco_384.onnx``: input
``input`` (1, 3, 384, 288), outputs ``simcc_x`` (1, 133, 576) and ``simcc_y`` (1, 133, 768)) and
hand-set weights: ``output = A * max(pixel) / 255 + B`` (the SimCC outputs likewise, scaled to
the normalised input), so
a test chooses which anchors fire and where the keypoints peak, and a frame without any bright
pixel (only the 114 letterbox grey and darker) yields no person. ``onnx`` is imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unianimate.pose.types import NUM_FACE, NUM_HAND, Pose

# A standing person, normalised to a 512x768 portrait frame (OpenPose body order + feet).
STANDING_BODY = np.array([
    [0.50, 0.16], [0.50, 0.25], [0.40, 0.25], [0.36, 0.38], [0.34, 0.50], [0.60, 0.25],
    [0.64, 0.38], [0.66, 0.50], [0.44, 0.52], [0.44, 0.68], [0.44, 0.84], [0.56, 0.52],
    [0.56, 0.68], [0.56, 0.84], [0.48, 0.145], [0.52, 0.145], [0.46, 0.155], [0.54, 0.155],
    [0.57, 0.87], [0.43, 0.87],
])


def synthetic_pose(rng: np.random.Generator | None = None, jitter: float = 0.0,
                   scale: float = 1.0, shift: Sequence[float] = (0.0, 0.0)) -> Pose:
    """A plausible standing pose (body, hands at the wrists, face around the nose)."""
    rng = rng or np.random.default_rng(0)
    centre = np.array([0.5, 0.5])
    body = (STANDING_BODY - centre) * scale + centre + np.asarray(shift)
    body = body + rng.normal(0.0, jitter, body.shape) if jitter else body.copy()
    # a hand: wrist (0), then 5 fingers of 4 joints spreading downwards
    dirs = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0.3 * np.pi, 0.7 * np.pi, 5)])  # (5, 2)
    steps = np.arange(1, 5)[:, None] * 0.022 * scale                                              # (4, 1)
    fingers = (dirs[:, None, :] * steps[None]).reshape(20, 2)                                       # (20, 2)
    shape = np.concatenate([np.zeros((1, 2)), fingers])                                             # (21, 2)
    hands = np.stack([body[7] + shape, body[4] + shape])  # 0 left, 1 right
    fa = np.linspace(0, 2 * np.pi, NUM_FACE, endpoint=False)
    face = body[0] + 0.03 * scale * np.stack([np.cos(fa), np.sin(fa)], axis=1)
    return Pose(body=body, body_scores=np.full(20, 0.9), hands=hands, hand_scores=np.full((2, NUM_HAND), 0.8),
                face=face, face_scores=np.full(NUM_FACE, 0.7))


# ---------------------------------------------------------------------------------------------
# ONNX models shaped like the real DWPose pair

DET_INPUT, DET_OUTPUT = "images", "output"
POSE_INPUT, POSE_OUTPUTS = "input", ("simcc_x", "simcc_y")
DET_SIZE = 640
POSE_W, POSE_H = 288, 384
NUM_KPTS = 133
WHITE_NORMALISED = (255 - 103.53) / 57.375  # largest normalised value of a white pixel in the crop
NUM_ANCHORS = sum((DET_SIZE // s) ** 2 for s in (8, 16, 32))  # 8400


def _affine_by_max_model(input_name: str, input_shape: tuple[int, ...],
                         outputs: Sequence[tuple[str, np.ndarray, np.ndarray]], full_scale: float = 255.0):
    """ONNX graph: each output = A * ReduceMax(input) / full_scale + B (A, B initializers)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMax", [input_name], ["mx"], keepdims=1),   # (1,1,1,1)
        helper.make_node("Reshape", ["mx", "shape3"], ["mx3"]),            # (1,1,1)
        helper.make_node("Div", ["mx3", "c255"], ["m"]),
    ]
    inits = [numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "shape3"),
             numpy_helper.from_array(np.array(full_scale, dtype=np.float32), "c255")]
    outs = []
    for name, a, b in outputs:
        inits += [numpy_helper.from_array(a.astype(np.float32), f"{name}_A"),
                  numpy_helper.from_array(b.astype(np.float32), f"{name}_B")]
        nodes += [helper.make_node("Mul", ["m", f"{name}_A"], [f"{name}_ma"]),
                  helper.make_node("Add", [f"{name}_ma", f"{name}_B"], [name])]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)))
    graph = helper.make_graph(nodes, "tiny_dwpose", [helper.make_tensor_value_info(
        input_name, TensorProto.FLOAT, list(input_shape))], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def anchor_index(cx: float, cy: float, stride: int = 32) -> tuple[int, int, int]:
    """(anchor index, grid x, grid y) of the YOLOX anchor of ``stride`` covering (cx, cy) in 640 px."""
    offset = 0
    for s in (8, 16, 32):
        n = DET_SIZE // s
        if s == stride:
            gx, gy = int(cx // s), int(cy // s)
            return offset + gy * n + gx, gx, gy
        offset += n * n
    raise ValueError(f"stride {stride} is not one of 8, 16, 32")


def tiny_detector_model(boxes: Sequence[Sequence[float]], scores: Sequence[float] | None = None):
    """Detector firing on ``boxes`` (x0, y0, x1, y1 in 640x640 letterboxed pixels) when the image's
    brightest pixel is 255 (objectness 2*max/255 - 1), with class-0 scores ``scores`` (default 0.9)."""
    a = np.zeros((1, NUM_ANCHORS, 85), dtype=np.float32)
    b = np.zeros((1, NUM_ANCHORS, 85), dtype=np.float32)
    scores = list(scores) if scores is not None else [0.9] * len(boxes)
    for (x0, y0, x1, y1), sc in zip(boxes, scores):
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        k, gx, gy = anchor_index(cx, cy)
        b[0, k, 0:4] = [cx / 32 - gx, cy / 32 - gy, np.log(w / 32), np.log(h / 32)]
        a[0, k, 4], b[0, k, 4] = 2.0, -1.0
        b[0, k, 5] = sc
    return _affine_by_max_model(DET_INPUT, (1, 3, DET_SIZE, DET_SIZE), [(DET_OUTPUT, a, b)])


def tiny_pose_model(locs: np.ndarray, scores: np.ndarray):
    """Pose model whose SimCC peaks sit at ``locs`` (133, 2) in model input pixels (x in [0, 288),
    y in [0, 384)) with peak values ``scores`` (133,) once the crop's brightest pixel is white
    (the input is normalised by mean/std, so white is WHITE_NORMALISED)."""
    sx = np.zeros((1, NUM_KPTS, POSE_W * 2), dtype=np.float32)
    sy = np.zeros((1, NUM_KPTS, POSE_H * 2), dtype=np.float32)
    for k in range(NUM_KPTS):
        sx[0, k, int(round(locs[k, 0] * 2))] = scores[k]
        sy[0, k, int(round(locs[k, 1] * 2))] = scores[k]
    return _affine_by_max_model(POSE_INPUT, (1, 3, POSE_H, POSE_W),
                                [(POSE_OUTPUTS[0], sx, np.zeros_like(sx)),
                                 (POSE_OUTPUTS[1], sy, np.zeros_like(sy))],
                                full_scale=WHITE_NORMALISED)


def default_pose_locs(rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """133 keypoint locations in the 288x384 crop (a rough whole-body layout) and scores, with
    a few low-score points so that thresholding is exercised."""
    rng = rng or np.random.default_rng(0)
    locs = np.column_stack([rng.uniform(40, 248, NUM_KPTS), rng.uniform(40, 344, NUM_KPTS)])
    scores = np.full(NUM_KPTS, 0.9)
    scores[[3, 20, 100]] = 0.1  # left ear, a left-foot toe, a left-hand point
    return locs, scores


def export_tiny_dwpose(folder: str | Path, boxes: Sequence[Sequence[float]] = ((200, 120, 440, 600),),
                       det_scores: Sequence[float] | None = None,
                       locs: np.ndarray | None = None, scores: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` test models into ``folder``."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if locs is None or scores is None:
        locs, scores = default_pose_locs()
    det_path, pose_path = folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx"
    onnx.save(tiny_detector_model(boxes, det_scores), det_path)
    onnx.save(tiny_pose_model(locs, scores), pose_path)
    return det_path, pose_path


# ---------------------------------------------------------------------------------------------
# Videos

def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 16.0,
                pts_seconds: Sequence[float] | None = None, codec: str = "mpeg4") -> Path:
    """Write uint8 RGB frames with PyAV; ``pts_seconds`` gives explicit (variable) timestamps."""
    import av
    from fractions import Fraction

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        rate = Fraction(fps).limit_denominator(1000)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if pts_seconds is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts_seconds is not None:
                frame.pts = int(round(pts_seconds[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def person_frames(n: int, width: int = 320, height: int = 480, empty: Sequence[int] = ()) -> list[np.ndarray]:
    """``n`` frames with a white 'person' rectangle (dark background); indices in ``empty`` are black."""
    frames = []
    for i in range(n):
        img = np.zeros((height, width, 3), dtype=np.uint8)
        if i not in set(empty):
            x0 = width // 3 + (i % 5)
            img[height // 6: height * 5 // 6, x0: x0 + width // 3] = 255
        frames.append(img)
    return frames
