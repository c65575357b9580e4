"""Quality of a model trained on drawn people, on held-out looks and dances with ground truth.

    python bench/demo_quality.py --model /work/train-run/model [--clips 8] [--steps 10] [--guidance 1.0]
        [--sheet docs/demo_contact_sheet.png] [--json bench/results/demo_quality.json] [--quick]

Tables (printed; JSON with --json):

1. held-out segments: moving-pixel PSNR (pixels where the target differs from the reference) and the
   pose-following score (generated frame j nearest ground-truth frame j; chance 1/F) for "reference
   repeated", the untrained model (same architecture, fresh initialisation, same VAE/CLIP), the
   trained model, and the VAE's own reconstruction (the ceiling);
2. quality and time vs sampler steps; the time of one 16-frame segment;
3. long videos over 3 segments: first-frame continuation (paper §5) vs the sliding window, seam
   jump at each join (|last - first| against the ground truth's own change there and the video's own
   frame-to-frame change away from the joins, ``inner_jump``) and quality per
   segment (drift per join), with the studio's colour-drift guard off and on for continuation.

The bar for shipping a demo model (issue 13): pose following >= 0.6 and moving-pixel PSNR >= 3 dB
above "reference repeated"; a 16-frame segment in <= 20 s on the 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import format_table  # noqa: E402
from unianimate.studio import measures  # noqa: E402
from unianimate.training.metrics import moving_psnr, pose_following, psnr_from_mse  # noqa: E402
from unianimate.training.people import Clip, heldout_clips  # noqa: E402

log = logging.getLogger("demo_quality")


def load(model_dir: Path, device: str = "cpu"):
    """The trained pipeline and an untrained one of the same architecture (same VAE and CLIP)."""
    from unianimate.models.unet import UniAnimateUNet
    from unianimate.pipeline import UniAnimatePipeline

    pipe = UniAnimatePipeline.from_pretrained(model_dir, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = UniAnimateUNet(pipe.unet.config)
    untrained = UniAnimatePipeline(fresh, pipe.clip, pipe.vae, device=device, model_name="untrained",
                                   is_tiny=True)
    return pipe, untrained


def generate(pipe, clip: Clip, steps: int, guidance: float, seed: int = 0) -> np.ndarray:
    return pipe.generate_segment(clip.reference, list(clip.poses), clip.reference_pose, seed=seed,
                                 num_inference_steps=steps, guidance_scale=guidance)


def vae_roundtrip(pipe, frames: np.ndarray) -> np.ndarray:
    px = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    z = pipe.vae.encode(px.to(pipe.vae.device), torch.Generator().manual_seed(0))
    out = pipe.vae.decode(z)
    return (out.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def score(outputs: list[np.ndarray], clips: list[Clip]) -> dict[str, float]:
    mp = [moving_psnr(o, c.frames, c.reference) for o, c in zip(outputs, clips)]
    pf = [pose_following(o, c.frames) for o, c in zip(outputs, clips)]
    full = [psnr_from_mse(float(((o.astype(np.float64) - c.frames) ** 2).mean())) for o, c in zip(outputs, clips)]
    return {"moving_psnr": float(np.mean(mp)), "pose_following": float(np.mean(pf)),
            "full_psnr": float(np.mean(full))}


def contact_sheet(clips: list[Clip], outputs: list[np.ndarray], path: Path, rows: int = 3) -> Path:
    """Per clip: reference | target frames on one row, reference pose | generated frames below."""
    from PIL import Image

    parts = []
    for c, o in list(zip(clips, outputs))[:rows]:
        parts.append(np.concatenate([c.reference, *c.frames], axis=1))
        parts.append(np.concatenate([c.reference_pose, *o], axis=1))
    sheet = np.concatenate(parts, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)
    return path


def long_video(pipe, clip: Clip, frames: int, steps: int, guidance: float, guard: bool) -> np.ndarray:
    """3 segments by first-frame continuation (each starts at the previous last frame)."""
    out = [generate(pipe, Clip(clip.name, clip.reference, clip.reference_pose, clip.poses[:frames],
                               clip.frames[:frames]), steps, guidance)]
    start = frames - 1
    while start + frames <= len(clip.frames):
        seg = pipe.generate_segment(clip.reference, list(clip.poses[start:start + frames]), clip.reference_pose,
                                    first_frame=out[-1][-1], seed=start, num_inference_steps=steps,
                                    guidance_scale=guidance)
        if guard and measures.color_jump(out[-1][-1], seg[0]) > 0:
            seg, _ = measures.match_color(seg, out[-1][-1])
        out.append(seg[1:])
        start += frames - 1
    return np.concatenate(out)


def long_measures(video: np.ndarray, clip: Clip, frames: int) -> dict[str, float]:
    joins = list(range(frames, len(video), frames - 1))
    gen_jump = [measures.mean_abs_diff(video[j - 1], video[j]) for j in joins]
    gt_jump = [measures.mean_abs_diff(clip.frames[j - 1], clip.frames[j]) for j in joins]
    # the generated video's own frame-to-frame change away from the joins: what a seam is seen against
    inner = [measures.mean_abs_diff(video[i - 1], video[i]) for i in range(1, len(video)) if i not in joins]
    per_seg = []
    for k in range(len(joins) + 1):
        lo = 0 if k == 0 else joins[k - 1]
        hi = joins[k] if k < len(joins) else len(video)
        per_seg.append(moving_psnr(video[lo:hi], clip.frames[lo:hi], clip.reference))
    drift = float(np.mean(np.diff(per_seg))) if len(per_seg) > 1 else 0.0
    lo = (len(video) - 1) // (frames - 1) * (frames - 1)          # start of the last (frames - 1)-frame slice
    colour = measures.drift(video[lo:lo + frames - 1], measures.mean_color(clip.reference))
    return {"seam_jump": float(np.mean(gen_jump)), "inner_jump": float(np.mean(inner)),
            "gt_jump": float(np.mean(gt_jump)),
            "moving_psnr": float(moving_psnr(video, clip.frames[:len(video)], clip.reference)),
            "psnr_change_per_join": drift, "colour_drift_last": colour}


def _rounded(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a from_pretrained folder (e.g. RUN/model)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sheet", default=None, help="write a contact sheet PNG here")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="skip the steps sweep and the long videos")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    cfg = json.loads((model_dir / "unianimate_config.json").read_text())
    trained = json.loads((model_dir / "trained.json").read_text()) if (model_dir / "trained.json").is_file() else {}
    pipe, untrained = load(model_dir, args.device)
    frames = 8
    w = int(cfg.get("vae", {}).get("sample_size", 128))
    recipe_file = next((p for p in (model_dir / "recipe.json", model_dir.parent / "recipe.json") if p.is_file()),
                       None)
    if recipe_file is not None:
        recipe = json.loads(recipe_file.read_text())
        width, height, frames = recipe["width"], recipe["height"], recipe["frames"]
    else:
        width, height = w // 2, w
    clips = heldout_clips(args.clips, frames=frames, width=width, height=height)
    results: dict[str, object] = {"model": str(model_dir), "trained": trained, "steps": args.steps,
                                  "guidance": args.guidance, "clips": len(clips), "frames": frames,
                                  "size": f"{width}x{height}"}

    rows = []
    outs_ref = [np.repeat(c.reference[None], frames, axis=0) for c in clips]
    rows.append({"model": "reference repeated", **score(outs_ref, clips)})
    rows.append({"model": "untrained", **score([generate(untrained, c, args.steps, args.guidance) for c in clips],
                                               clips)})
    t0 = time.perf_counter()
    outs = [generate(pipe, c, args.steps, args.guidance) for c in clips]
    seg_time = (time.perf_counter() - t0) / len(clips)
    rows.append({"model": f"trained (step {trained.get('unet_step', '?')})", **score(outs, clips)})
    rows.append({"model": "VAE round trip (ceiling)", **score([vae_roundtrip(pipe, c.frames) for c in clips], clips)})
    cols = ["model", "moving_psnr", "pose_following", "full_psnr"]
    print(f"\nheld-out: {len(clips)} clips of {frames} frames at {width}x{height}, {args.steps} steps, "
          f"guidance {args.guidance} (pose-following chance = {1 / frames:.3f})")
    print(format_table(_rounded(rows), cols))
    results["table"] = rows
    gain = rows[2]["moving_psnr"] - rows[0]["moving_psnr"]
    results["bar"] = {"pose_following": rows[2]["pose_following"], "moving_psnr_gain_db": gain,
                      "passes_quality": bool(rows[2]["pose_following"] >= 0.6 and gain >= 3.0)}
    if args.sheet:
        contact_sheet(clips, outs, Path(args.sheet))

    # time of a 16-frame segment at the default steps
    long_clips = heldout_clips(1, frames=3 * frames - 2, width=width, height=height)
    c16 = Clip("t16", long_clips[0].reference, long_clips[0].reference_pose, long_clips[0].poses[:16],
               long_clips[0].frames[:16])
    t0 = time.perf_counter()
    generate(pipe, c16, args.steps, args.guidance)
    t16 = time.perf_counter() - t0
    results["seconds_16_frames"] = t16
    results["seconds_per_segment"] = seg_time
    print(f"\n16-frame segment: {t16:.1f} s ({args.steps} steps, guidance {args.guidance}, "
          f"{torch.get_num_threads()} threads); {frames}-frame segment {seg_time:.1f} s")
    results["bar"]["seconds_16_frames_ok"] = bool(t16 <= 20.0)

    if not args.quick:
        sweep = []
        for steps in (5, 10, 20, 30):
            t0 = time.perf_counter()
            o = [generate(pipe, c, steps, args.guidance) for c in clips]
            sweep.append({"steps": steps, **score(o, clips), "s_per_segment": (time.perf_counter() - t0) / len(clips)})
        print("\nquality vs sampler steps (trained)")
        print(format_table(_rounded(sweep), ["steps", "moving_psnr", "pose_following", "s_per_segment"]))
        results["steps_sweep"] = sweep

        lrows = []
        lc = long_clips + heldout_clips(3, frames=3 * frames - 2, width=width, height=height)[1:]
        for name, make in (
                ("continuation, guard off", lambda c: long_video(pipe, c, frames, args.steps, args.guidance, False)),
                ("continuation, guard on", lambda c: long_video(pipe, c, frames, args.steps, args.guidance, True)),
                ("sliding window", lambda c: pipe.generate_long(
                    c.reference, list(c.poses[:3 * frames - 2]), c.reference_pose, window=frames,
                    overlap=max(1, frames // 4), num_inference_steps=args.steps, guidance_scale=args.guidance))):
            ms = [long_measures(make(c), c, frames) for c in lc]
            lrows.append({"method": name, **{k: float(np.mean([m[k] for m in ms])) for k in ms[0]}})
        print(f"\nlong videos: {len(lc)} clips of {3 * frames - 2} frames (3 segments)")
        print(format_table(_rounded(lrows), ["method", "seam_jump", "inner_jump", "gt_jump", "moving_psnr", "psnr_change_per_join",
                                   "colour_drift_last"]))
        results["long"] = lrows

    print(f"\nbar: pose following {rows[2]['pose_following']:.3f} (>= 0.6), moving PSNR gain {gain:+.2f} dB "
          f"(>= 3), 16 frames {t16:.1f} s (<= 20): "
          f"{'PASS' if results['bar']['passes_quality'] and results['bar']['seconds_16_frames_ok'] else 'FAIL'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=lambda x: None if isinstance(x, float)
                                              and not math.isfinite(x) else x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
