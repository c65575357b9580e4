"""DWPose whole-body keypoints through onnxruntime (spec §5): YOLOX-L person detection, then
RTMPose (``dw-ll_ucoco_384``) on the chosen person, mapped to the model's 20-point body layout.

Pipeline, as in the reference (``dwpose/`` of UniAnimate):

- the frame is given as uint8 RGB and converted to BGR, because the reference fed OpenCV (BGR)
  frames to both networks;
- detector: letterbox into 640x640 (resize by min ratio with INTER_LINEAR, pad right/bottom with
  114), raw 0..255 floats, decode YOLOX grids (strides 8, 16, 32), score = objectness x class,
  class-aware NMS (IoU 0.45, pre-threshold 0.1), keep class 0 (person) with score > 0.3;
- pose: box -> centre and scale (x1.25), scale fixed to the 288:384 aspect, affine crop to 288x384
  (INTER_LINEAR), (pixel - mean) / std, SimCC argmax / split ratio 2, back to image pixels,
  score = min of the x/y maxima;
- 133 COCO-WholeBody points + neck (mean of the shoulders, present when both shoulders score
  > 0.3) reordered to OpenPose order; body point 18 = mean of the left big/small toes, 19 = mean of
  the right ones (missing when either is); face = points 23..90, hands = 91..111 (left), 112..132
  (right); coordinates divided by the image width/height; score < 0.3 -> MISSING.

Differences from the reference, on purpose: when several people are found we keep the largest,
most central one (``select="largest_central"``; the reference kept the highest-scoring one, which
``select="first"`` reproduces) and report the count; when nobody is found the result has
``pose=None`` (the reference ran the pose model on the whole image; ``full_image_when_no_person``
restores that). Over a video, extraction passes a ``choose`` callback instead
(:class:`unianimate.pose.track.PersonTracker`), so one dancer is followed from frame to frame
rather than chosen afresh in each.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from unianimate.errors import InputError, WeightsMissingError
from unianimate.pose.types import MISSING, Pose

logger = logging.getLogger(__name__)

#: ``choose(boxes (N, 4), pose_of) -> index | None``; ``pose_of(i)`` is the Pose of box ``i``
PersonChooser = Callable[[np.ndarray, Callable[[int], Pose]], "int | None"]

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
# OpenPose index <- COCO-WholeBody index (after the neck is inserted at 17), from the reference.
_OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
_MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]


@dataclass(frozen=True)
class DWPoseConfig:
    """Thresholds and choices of the extraction (defaults = the reference's)."""

    det_score: float = 0.3
    det_pre_score: float = 0.1
    nms_iou: float = 0.45
    keypoint_score: float = 0.3
    bbox_padding: float = 1.25
    simcc_split_ratio: float = 2.0
    select: str = "largest_central"
    full_image_when_no_person: bool = False

    def __post_init__(self) -> None:
        if self.select not in ("largest_central", "first"):
            raise InputError(f"unknown person selection {self.select!r}; use 'largest_central' or 'first'")


@dataclass(frozen=True)
class DetectionResult:
    """One frame: the chosen person's pose (None when nobody was found), how many people were
    found, their boxes (N, 4) x0 y0 x1 y1 in pixels, and which one was chosen."""

    pose: Pose | None
    person_count: int
    boxes: np.ndarray
    chosen: int | None
    raw_keypoints: np.ndarray | None = None  # (134, 2) pixels, OpenPose order + neck, for debugging
    raw_scores: np.ndarray | None = None     # (134,)


def default_providers() -> list[str]:
    """CUDA when onnxruntime offers it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _cuda_present() -> bool:
    """True when torch sees a CUDA device (torch is imported only if it is installed)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def provider_warning(active: Sequence[str], cuda_present: bool) -> str | None:
    """What to tell the user when CUDA is present but onnxruntime runs DWPose on the CPU."""
    if not cuda_present or "CUDAExecutionProvider" in active:
        return None
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        why = ("onnxruntime-gpu's CUDA provider failed to load (check the CUDA and cuDNN "
               "libraries its version needs)")
    else:
        why = ("the installed onnxruntime has no CUDA provider (the CPU package `onnxruntime` is "
               "installed, alone or next to `onnxruntime-gpu`, which cannot coexist)")
    return (f"DWPose runs on the CPU although CUDA is present: {why}. Fix: `pip uninstall -y "
            f"onnxruntime onnxruntime-gpu && pip install -r requirements-gpu.txt` (README, GPU "
            f"install).")


# ------------------------------------------------------------------------------------ detector

def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize into ``size`` (h, w) keeping the aspect, pad right/bottom with 114; (3, h, w) float32."""
    h, w = size
    r = min(h / img.shape[0], w / img.shape[1])
    nh, nw = int(img.shape[0] * r), int(img.shape[1] * r)
    padded = np.full((h, w, 3), 114, dtype=np.uint8)
    padded[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), r


_GRID_CACHE: dict[tuple[int, int, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = {}


def _grids(size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    key = (size[0], size[1], strides)
    if key not in _GRID_CACHE:
        grids, expanded = [], []
        for s in strides:
            gh, gw = size[0] // s, size[1] // s
            xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
            grids.append(np.stack((xv, yv), 2).reshape(-1, 2))      # (gh*gw, 2)
            expanded.append(np.full((gh * gw, 1), s))
        _GRID_CACHE[key] = (np.concatenate(grids), np.concatenate(expanded))  # (N, 2), (N, 1)
    return _GRID_CACHE[key]


def decode_yolox(pred: np.ndarray, size: tuple[int, int], strides: Sequence[int] = (8, 16, 32)) -> np.ndarray:
    """YOLOX raw output (N, 5 + C) for a (h, w) input -> (N, 6): centre/size in pixels, objectness,
    person (class 0) score; the other classes are not needed (NMS is per class)."""
    grid, stride = _grids(size, tuple(strides))
    if grid.shape[0] != pred.shape[0]:
        raise InputError(f"the detector produced {pred.shape[0]} anchors, expected {grid.shape[0]} "
                         f"for a {size[1]}x{size[0]} input; is this the YOLOX-L DWPose detector?")
    out = pred[:, :6].astype(np.float64)
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS (pixel-inclusive areas, +1, as the reference); indices by descending score."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.nonzero(ovr <= iou)[0] + 1]
    return keep


def postprocess_detections(pred: np.ndarray, size: tuple[int, int], ratio: float,
                           cfg: DWPoseConfig) -> tuple[np.ndarray, np.ndarray]:
    """Raw (N, 85) -> person boxes (K, 4) in image pixels and their scores (K,), best first."""
    p = decode_yolox(pred, size)                                  # (N, 6)
    boxes = np.empty((len(p), 4))
    boxes[:, 0] = p[:, 0] - p[:, 2] / 2.0
    boxes[:, 1] = p[:, 1] - p[:, 3] / 2.0
    boxes[:, 2] = p[:, 0] + p[:, 2] / 2.0
    boxes[:, 3] = p[:, 1] + p[:, 3] / 2.0
    boxes /= ratio
    # the reference runs class-aware NMS on all classes and then keeps class 0; NMS being per
    # class, that equals NMS on the person scores alone
    person = p[:, 4] * p[:, 5]                                    # (N,) objectness x class 0
    mask = person > cfg.det_pre_score
    if not mask.any():
        return np.zeros((0, 4)), np.zeros(0)
    b, s = boxes[mask], person[mask]
    keep = nms(b, s, cfg.nms_iou)
    b, s = b[keep], s[keep]
    final = s > cfg.det_score
    return b[final], s[final]


def choose_person(boxes: np.ndarray, width: int, height: int, select: str) -> int:
    """Index of the person to keep: ``first`` (highest score, the reference) or the largest box
    weighted by closeness to the image centre (area x (1 - normalised centre distance / 2))."""
    if select == "first" or len(boxes) == 1:
        return 0
    w = np.clip(boxes[:, 2], 0, width) - np.clip(boxes[:, 0], 0, width)
    h = np.clip(boxes[:, 3], 0, height) - np.clip(boxes[:, 1], 0, height)
    area = np.maximum(w, 0) * np.maximum(h, 0)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width - 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height - 0.5
    dist = np.sqrt(cx ** 2 + cy ** 2) / np.sqrt(0.5)              # 0 centre .. 1 corner
    return int(np.argmax(area * (1.0 - 0.5 * np.clip(dist, 0, 1))))


# ------------------------------------------------------------------------------------ pose model

def box_to_center_scale(box: np.ndarray, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """(x0, y0, x1, y1) -> centre (2,) and padded size (2,)."""
    center = np.array([box[0] + box[2], box[1] + box[3]]) * 0.5
    scale = np.array([box[2] - box[0], box[3] - box[1]]) * padding
    return center, scale


def fix_aspect(scale: np.ndarray, aspect: float) -> np.ndarray:
    """Grow the smaller side so that w / h == ``aspect``."""
    w, h = scale
    return np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])


def warp_matrix(center: np.ndarray, scale: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """2x3 affine mapping the box (centre, size) onto the (out_w, out_h) crop, no rotation."""
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    d = src[0] - src[1]
    src[2] = src[1] + np.array([-d[1], d[0]])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, out_w * -0.5])
    d = dst[0] - dst[1]
    dst[2] = dst[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Wy) -> locations (K, 2) in crop pixels and scores (K,) = min of the two maxima."""
    locs = np.stack([np.argmax(simcc_x, axis=1), np.argmax(simcc_y, axis=1)], axis=-1).astype(np.float32)
    vals = np.minimum(np.amax(simcc_x, axis=1), np.amax(simcc_y, axis=1))
    locs[vals <= 0.0] = -1
    return locs / split_ratio, vals


def to_openpose_layout(kpts: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody points (133, 2) + scores -> 134 points in OpenPose order with the neck."""
    info = np.concatenate([kpts, scores[:, None]], axis=1)       # (133, 3)
    neck = info[[5, 6]].mean(axis=0)
    neck[2] = float(info[5, 2] > 0.3 and info[6, 2] > 0.3)
    info = np.insert(info, 17, neck, axis=0)                     # (134, 3)
    info[_OPENPOSE_IDX] = info[_MMPOSE_IDX]
    return info[:, :2], info[:, 2]


def to_pose(cand: np.ndarray, scores: np.ndarray, width: int, height: int, threshold: float) -> Pose:
    """134 OpenPose-ordered pixel points -> normalised :class:`Pose` in the model's layout."""
    cand = cand.astype(np.float64).copy()
    cand[:, 0] /= float(width)
    cand[:, 1] /= float(height)
    cand[scores < threshold] = MISSING
    body = np.full((20, 2), MISSING)
    body[:18] = cand[:18]
    body_scores = np.zeros(20)
    body_scores[:18] = scores[:18]
    for out, (a, b) in ((18, (18, 19)), (19, (21, 22))):
        if MISSING not in cand[a] and MISSING not in cand[b]:
            body[out] = (cand[a] + cand[b]) / 2
        body_scores[out] = min(scores[a], scores[b])
    hands = np.stack([cand[92:113], cand[113:134]])             # (2, 21, 2): left, right
    hand_scores = np.stack([scores[92:113], scores[113:134]])   # (2, 21)
    return Pose(body=body, body_scores=body_scores, hands=hands, hand_scores=hand_scores,
                face=cand[24:92], face_scores=scores[24:92])


class DWPoseDetector:
    """Person detection + whole-body pose on uint8 RGB frames; call it on a frame."""

    def __init__(self, det_session, pose_session, config: DWPoseConfig = DWPoseConfig()):
        self.det = det_session
        self.pose = pose_session
        self.config = config
        self._det_input = det_session.get_inputs()[0]
        shape = self._det_input.shape
        self.det_size = tuple(int(v) if isinstance(v, int) else 640 for v in shape[2:4])
        pin = pose_session.get_inputs()[0]
        self._pose_input = pin
        h, w = pin.shape[2:4]
        self.pose_size = (int(w) if isinstance(w, int) else 288, int(h) if isinstance(h, int) else 384)  # (w, h)
        self.providers = list(det_session.get_providers())

    @classmethod
    def from_files(cls, det_path: str | os.PathLike, pose_path: str | os.PathLike,
                   providers: Sequence[str] | None = None, config: DWPoseConfig = DWPoseConfig()) -> "DWPoseDetector":
        """Load ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` (or files with their interface)."""
        import onnxruntime as ort

        sessions = []
        for what, path in (("person detector", det_path), ("pose model", pose_path)):
            path = Path(path)
            if not path.is_file():
                raise WeightsMissingError(f"the DWPose {what} {str(path)!r} does not exist; download "
                                          f"yolox_l.onnx and dw-ll_ucoco_384.onnx from yzd-v/DWPose")
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                sessions.append(ort.InferenceSession(str(path), sess_options=opts,
                                                     providers=list(providers or default_providers())))
            except Exception as exc:  # onnxruntime raises several private exception types
                raise InputError(f"cannot load the DWPose {what} {path.name!r}: {exc}; the file may be "
                                 f"truncated, download it again") from exc
        det, pose = sessions
        _check_interface(det, pose)
        active = det.get_providers()
        logger.info("DWPose loaded (%s) with onnxruntime providers %s", Path(pose_path).name,
                    ", ".join(active))
        warning = None if providers else provider_warning(active, _cuda_present())
        if warning:
            logger.warning("%s", warning)
        return cls(det, pose, config)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, providers: Sequence[str] | None = None,
                        config: DWPoseConfig = DWPoseConfig()) -> "DWPoseDetector":
        """Resolve the two files through the project's hub module (keys ``dwpose_det``/``dwpose_pose``)."""
        from unianimate.hub import resolve_file

        det_path = resolve_file("dwpose_det", source)
        pose_path = resolve_file("dwpose_pose", source)
        return cls.from_files(det_path, pose_path, providers=providers, config=config)

    # -- steps

    def detect_people(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (K, 4) in pixels and scores (K,), best first."""
        inp, ratio = letterbox(bgr, self.det_size)
        out = self.det.run(None, {self._det_input.name: inp[None]})[0]   # (1, N, 85)
        return postprocess_detections(out[0], self.det_size, ratio, self.config)

    def estimate(self, bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RTMPose on one box -> 133 keypoints (133, 2) in image pixels and scores (133,)."""
        w, h = self.pose_size
        center, scale = box_to_center_scale(np.asarray(box, dtype=np.float64), self.config.bbox_padding)
        scale = fix_aspect(scale, w / h)
        mat = warp_matrix(center, scale, w, h)
        crop = cv2.warpAffine(bgr, mat, (w, h), flags=cv2.INTER_LINEAR)
        chw = crop.transpose(2, 0, 1).astype(np.float64)                   # (3, h, w)
        feed = ((chw - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)[None]  # (1, 3, h, w)
        simcc_x, simcc_y = self.pose.run(None, {self._pose_input.name: feed})[:2]
        locs, vals = decode_simcc(simcc_x[0], simcc_y[0], self.config.simcc_split_ratio)
        kpts = locs / np.array([w, h]) * scale + center - scale / 2
        return kpts, vals

    def __call__(self, frame: np.ndarray, choose: PersonChooser | None = None) -> DetectionResult:
        """Detect on one uint8 RGB frame (H, W, 3).

        ``choose(boxes, pose_of)`` picks the person instead of ``config.select`` (e.g. a
        :class:`~unianimate.pose.track.PersonTracker` following one dancer): it gets the boxes
        (N, 4) and ``pose_of(i)``, the pose of box ``i`` (estimated on demand, once), and returns
        an index or None (the followed person is not in this frame -> ``pose=None``)."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError("DWPose needs a uint8 RGB frame of shape (H, W, 3)")
        H, W = frame.shape[:2]
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        boxes, _scores = self.detect_people(bgr)
        count = len(boxes)
        if count == 0:
            if not self.config.full_image_when_no_person:
                return DetectionResult(None, 0, boxes, None)
            box, chosen = np.array([0.0, 0.0, W, H]), None
        elif choose is None:
            chosen = choose_person(boxes, W, H, self.config.select)
            box = boxes[chosen]
        else:
            cache: dict[int, tuple[Pose, np.ndarray, np.ndarray]] = {}

            def estimate_box(i: int) -> tuple[Pose, np.ndarray, np.ndarray]:
                if i not in cache:
                    c, sc = to_openpose_layout(*self.estimate(bgr, boxes[i]))
                    cache[i] = (to_pose(c, sc, W, H, self.config.keypoint_score), c, sc)
                return cache[i]

            chosen = choose(boxes, lambda i: estimate_box(int(i))[0])
            if chosen is None:
                return DetectionResult(None, count, boxes, None)
            pose, cand, scores = estimate_box(int(chosen))
            return DetectionResult(pose, count, boxes, int(chosen), cand, scores)
        kpts, vals = self.estimate(bgr, box)
        cand, scores = to_openpose_layout(kpts, vals)
        pose = to_pose(cand, scores, W, H, self.config.keypoint_score)
        return DetectionResult(pose, count, boxes, chosen, cand, scores)


def _check_interface(det, pose) -> None:
    """Fail early, with a clear message, on ONNX files that are not the DWPose pair."""
    d_in, d_out = det.get_inputs(), det.get_outputs()
    if len(d_in) != 1 or len(d_in[0].shape) != 4 or len(d_out) < 1 or len(d_out[0].shape) != 3:
        raise InputError("the person detector ONNX does not look like yolox_l.onnx "
                         "(one (1,3,640,640) input, one (1,N,85) output)")
    p_in, p_out = pose.get_inputs(), pose.get_outputs()
    if len(p_in) != 1 or len(p_in[0].shape) != 4 or len(p_out) < 2:
        raise InputError("the pose ONNX does not look like dw-ll_ucoco_384.onnx "
                         "(one (1,3,384,288) input, outputs simcc_x and simcc_y)")
    k = p_out[0].shape[1]
    if isinstance(k, int) and k != 133:
        raise InputError(f"the pose ONNX predicts {k} keypoints; DWPose whole-body needs 133")
