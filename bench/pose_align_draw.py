"""Benchmark: alignment + drawing of 300 driving poses at 768x512 on one CPU core (target < 3 s).

Runs the released method (align_poses, mode "reference") and draw_pose on plausible synthetic
poses (body, hands, face; jittered), single-threaded (OMP/OpenBLAS threads = 1,
cv2.setNumThreads(1), process pinned to one core where the OS allows). Prints a table; --json
writes the numbers too. Usage: python bench/pose_align_draw.py [--frames 300] [--repeats 3]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from unianimate.pose import align_poses, draw_pose  # noqa: E402
from unianimate.pose.smooth import OneEuroConfig, smooth_poses  # noqa: E402
from unianimate.pose.synthetic import synthetic_pose  # noqa: E402


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    cv2.setNumThreads(1)
    pinned = False
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
            pinned = True
        except OSError:
            pass
    rng = np.random.default_rng(0)
    reference = synthetic_pose(rng, jitter=0.005, scale=0.85)
    driving = [synthetic_pose(rng, jitter=0.01, scale=1.2, shift=(0.03 * np.sin(i / 10), 0.0))
               for i in range(args.frames)]
    H, W = args.height, args.width
    holder: dict = {}

    def align():
        holder["aligned"] = align_poses(reference, driving)

    align()  # warm-up
    draw_all = lambda: [draw_pose(p, H, W) for p in holder["aligned"]]  # noqa: E731
    draw_all()

    def both():
        aligned = align_poses(reference, driving)
        for p in aligned:
            draw_pose(p, H, W)

    rows = [
        ("align_poses", _time(align, args.repeats)),
        (f"draw_pose {W}x{H}", _time(draw_all, args.repeats)),
        ("align + draw (total)", _time(both, args.repeats)),
        ("draw_pose jpeg_roundtrip", _time(lambda: [draw_pose(p, H, W, jpeg_roundtrip=True)
                                                    for p in holder["aligned"]], 1)),
        ("One-Euro smoothing", _time(lambda: smooth_poses(driving, OneEuroConfig(fps=8.0)), args.repeats)),
    ]
    print(f"pose align+draw benchmark: {args.frames} frames, {W}x{H}, 1 thread "
          f"(pinned to one core: {pinned}), cv2 {cv2.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'step':<28}{'median s':>10}{'best s':>10}{'ms/frame':>10}")
    results = []
    for name, times in rows:
        med, best = statistics.median(times), min(times)
        print(f"{name:<28}{med:>10.3f}{best:>10.3f}{1000 * med / args.frames:>10.2f}")
        results.append({"step": name, "median_s": med, "best_s": best, "repeats": len(times)})
    total = statistics.median(rows[2][1])
    print(f"target: align + draw of {args.frames} frames < 3 s -> {'PASS' if total < 3.0 else 'FAIL'} ({total:.2f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"frames": args.frames, "width": W, "height": H, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
