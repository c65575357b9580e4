"""UNet cost of a long video: first-frame continuation vs the reference's sliding window.

Cost unit: one "frame-evaluation" = one frame slot through one UNet forward. Every UNet call sees
its frames plus the reference slot (spec §3.3: the reference image is frame 0 of every call), and
every denoising step makes two passes (conditional + unconditional guidance, spec §4), whether
they run as two calls or one batched call. The counts come from the actual window schedules below.

* Reference sliding window (released long-video script, ``context_size 32, context_overlap 8``):
  every step denoises ALL frames window by window and averages overlapping predictions. The
  windows are ``unianimate.pipeline.sliding_windows`` -- the very schedule ``generate_long`` runs
  (starts 0, 24, 48, ... while start < F - overlap; the last window replaced by the final 32).
* First-frame continuation (paper §5; the studio's segment tree): segments of n frames; segment
  k+1 starts on the last frame of segment k, which it receives as the first frame (first-frame
  mode), so each later segment adds n - 1 new frames; the last one is shortened.
  ``continuation_schedule`` below is that schedule as a plain function (the studio's
  ``continue_from`` gives a child the pose slice starting at ``parent.end - 1``, the same rule).

Usage: python bench/long_video_cost.py [--frames 300] [--steps 30] [--segments 16 32 64]
Writes bench/results/long_video_cost.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"

from unianimate.studio.project import next_segment_range  # noqa: E402  (after the sys.path line)


def continuation_schedule(num_frames: int, segment_frames: int) -> list[range]:
    """Segments of first-frame continuation: each later segment starts on its predecessor's last frame.

    Returns frame ranges covering 0..num_frames-1; consecutive ranges share exactly one frame.
    The first segment runs in reference mode, the others in first-frame mode.
    """
    if num_frames < 1 or segment_frames < 2:
        raise ValueError(f"need num_frames >= 1 and segment_frames >= 2; got {num_frames}, {segment_frames}")
    segments = [range(0, min(segment_frames, num_frames))]
    while (span := next_segment_range(segments[-1].stop, segment_frames, num_frames)) is not None:
        segments.append(range(*span))
    return segments


def schedule_cost(calls: list[list[int]] | list[range], num_frames: int, timesteps: int,
                  passes: int = 2, reference_slot: int = 1) -> dict[str, Any]:
    """Frame-evaluations of a schedule: each call costs (len + reference slot) x passes per timestep."""
    covered = sorted({i for c in calls for i in c})
    if covered != list(range(num_frames)):
        raise ValueError("schedule does not cover every frame exactly")
    per_step = passes * sum(len(c) + reference_slot for c in calls)
    return dict(calls=len(calls), max_frames_per_call=max(len(c) for c in calls) + reference_slot,
                unet_calls_per_step=passes * len(calls), frame_evals_per_step=per_step,
                per_output_frame_per_step=per_step / num_frames, total_frame_evals=per_step * timesteps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="output video length")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps (the reference runs 31 timesteps for 30)")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--segments", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--json", default=str(RESULTS / "long_video_cost.json"))
    args = parser.parse_args(argv)

    from unianimate.pipeline import sliding_windows
    from unianimate.sampling import reference_timesteps
    from unianimate.utils import atomic_write_json

    timesteps = len(reference_timesteps(args.steps))
    n = args.frames
    rows: list[tuple[str, dict[str, Any]]] = []
    ref = schedule_cost(sliding_windows(n, args.window, args.overlap), n, timesteps)
    rows.append((f"reference sliding window {args.window}/{args.overlap}", ref))
    for seg in args.segments:
        rows.append((f"first-frame continuation, n={seg}", schedule_cost(continuation_schedule(n, seg), n, timesteps)))
    rows.append((f"single pass, all {n} frames", schedule_cost(continuation_schedule(n, n), n, timesteps)))

    print(f"UNet frame-evaluations for a {n}-frame video, {timesteps} timesteps ({args.steps} DDIM steps), "
          f"2 guidance passes, +1 reference slot per call")
    head = (f"{'schedule':<36} {'calls':>5} {'frames/call':>11} {'UNet calls/step':>15} "
            f"{'frame-evals/step':>16} {'per out frame':>13} {'total':>8} {'vs ref':>7}")
    print(head)
    print("-" * len(head))
    for name, r in rows:
        print(f"{name:<36} {r['calls']:>5} {r['max_frames_per_call']:>11} {r['unet_calls_per_step']:>15} "
              f"{r['frame_evals_per_step']:>16} {r['per_output_frame_per_step']:>13.3f} "
              f"{r['total_frame_evals']:>8} {r['total_frame_evals'] / ref['total_frame_evals']:>7.2f}")
    print("frames/call includes the reference slot; 'per out frame' = frame-evals per step / output frames.")
    out = Path(args.json)
    atomic_write_json(out, dict(frames=n, steps=args.steps, timesteps=timesteps, window=args.window,
                                overlap=args.overlap, rows=[dict(schedule=name, **r) for name, r in rows]))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
