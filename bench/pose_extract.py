"""Benchmark: DWPose extraction speed (frames/s) on CPU for an ONNX pair and a video.

    python bench/pose_extract.py --det yolox_l.onnx --pose dw-ll_ucoco_384.onnx --video drive.mp4
    python bench/pose_extract.py --synthetic   # tiny test models + a synthetic video (runs anywhere)

With --synthetic the networks are the tiny hand-set test models (real names and shapes, almost no
compute), so the numbers measure our pipeline around the networks (decode, letterbox, affine crop,
SimCC decode, layout), not YOLOX-L / RTMPose-L themselves. Prints a table; --json writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from unianimate.pose.dwpose import DWPoseDetector  # noqa: E402
from unianimate.pose.extract import extract_poses  # noqa: E402
from unianimate.video.reader import VideoReader  # noqa: E402


def _synthetic(folder: Path, frames: int, width: int, height: int) -> tuple[Path, Path, Path]:
    from unianimate.pose.synthetic import export_tiny_dwpose, person_frames, write_video

    x0, x1 = 640 * 0.3, 640 * 0.7
    det, pose = export_tiny_dwpose(folder, boxes=[(x0, 60, x1, 600)])
    video = write_video(folder / "synthetic.mp4", person_frames(frames, width, height), fps=30)
    return det, pose, video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--det", type=Path, help="yolox_l.onnx")
    ap.add_argument("--pose", type=Path, help="dw-ll_ucoco_384.onnx")
    ap.add_argument("--video", type=Path, help="driving video")
    ap.add_argument("--synthetic", action="store_true", help="export tiny test models and a synthetic video")
    ap.add_argument("--frames", type=int, default=120, help="synthetic video length / max frames to extract")
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--height", type=int, default=1280)
    ap.add_argument("--frame-interval", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    if args.synthetic:
        det_path, pose_path, video = _synthetic(Path(tmp.name), args.frames, args.width, args.height)
    else:
        if not (args.det and args.pose and args.video):
            ap.error("give --det, --pose and --video, or --synthetic")
        det_path, pose_path, video = args.det, args.pose, args.video
    if args.threads:
        import onnxruntime as ort
        orig = ort.SessionOptions

        def opts():  # every session of this run gets the thread count
            o = orig()
            o.intra_op_num_threads = args.threads
            return o
        ort.SessionOptions = opts
    detector = DWPoseDetector.from_files(det_path, pose_path, providers=["CPUExecutionProvider"])

    reader = VideoReader(video)
    info = reader.info
    t = time.perf_counter()
    frames = [f.image for f in reader.frames(args.frame_interval, max_frames=args.frames)]
    t_decode = time.perf_counter() - t
    n = len(frames)

    t_det = t_pose = 0.0
    for img in frames:
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        t = time.perf_counter()
        boxes, _ = detector.detect_people(bgr)
        t_det += time.perf_counter() - t
        t = time.perf_counter()
        detector.estimate(bgr, boxes[0] if len(boxes) else np.array([0, 0, img.shape[1], img.shape[0]]))
        t_pose += time.perf_counter() - t

    t = time.perf_counter()
    result = extract_poses(video, detector, frame_interval=args.frame_interval, max_frames=args.frames)
    t_total = time.perf_counter() - t

    kind = "synthetic tiny models" if args.synthetic else f"{Path(det_path).name} + {Path(pose_path).name}"
    print(f"DWPose extraction benchmark: {kind}; video {info.width}x{info.height} @ {info.fps:.3g} fps, "
          f"interval {args.frame_interval}, {n} frames; CPUExecutionProvider, threads "
          f"{args.threads or 'default'}, {os.cpu_count()} CPUs, {platform.machine()}")
    rows = [("video decode + sampling", t_decode), ("person detector (incl. letterbox/NMS)", t_det),
            ("pose model (incl. crop/SimCC)", t_pose), ("extract_poses end to end", t_total)]
    print(f"{'stage':<40}{'total s':>9}{'ms/frame':>10}{'frames/s':>10}")
    for name, secs in rows:
        print(f"{name:<40}{secs:>9.3f}{1000 * secs / n:>10.2f}{n / secs:>10.1f}")
    print(f"frames without a person: {len(result.frames_without_person)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kind": kind, "frames": n, "rows": dict(rows)}, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
