"""Sampler quality per step count: DDIM vs DPM-Solver++ 2M vs UniPC against the 30-step DDIM.

Random-weight mode (default): the full-size UNet with seeded random weights (scale 0.5) beside the
tiny CLIP and VAE (``UniAnimatePipeline.tiny(unet_config=UNetConfig())``), driven through the
pipeline's own ``generate_segment(output_type="latent")`` with seeded random images, so every run
starts from the same noise-prior latent x_T (t = 949) and uses the real sampling loop. For each
sampler and step count it reports the distance of the final latent to the 30-step DDIM latent:
relative L2 ``||x - x_ddim30|| / ||x_ddim30||`` and the max abs difference (``--reference-steps``
changes the 30), plus the UNet
evaluations and wall time. A random UNet has no data to converge to: this measures how closely a
solver follows the trajectory that 30 DDIM steps take, not how good the video looks.

``--demo DIR``: the demo model (a ``from_pretrained`` folder, e.g. ``assets/demo``) and evaluation
clips with ground truth: ``DIR/eval/<clip>/`` (``reference.png``, ``ref_pose.png``, ``poses/*.png``,
``frames/*.png`` = the ground truth, one per pose, same size) when present, else the drawn-people
generator's fixed held-out clips at the model's native size (its ``recipe.json``). Reported per
sampler and step count against the ground-truth frames: PSNR and SSIM (full frame), and the two
measures the demo model is judged by (:mod:`unianimate.training.metrics`: PSNR over the moving
pixels and pose following), beside the 30-step DDIM's own. Without the model it says so and exits
with status 2.

Usage: python bench/sampler_quality.py [--width 64 --height 64 --frames 8] [--steps 8,10,15,20,30]
       [--samplers ddim,dpmpp_2m,unipc] [--config full|tiny] [--threads 1] [--json PATH]
       python bench/sampler_quality.py --demo assets/demo [--clips 4]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench._common import format_table, write_json  # noqa: E402
from unianimate.models import UNetConfig  # noqa: E402
from unianimate.pipeline import UniAnimatePipeline  # noqa: E402
from unianimate.sampling import SAMPLERS  # noqa: E402

logger = logging.getLogger("bench.sampler_quality")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=64, help="pixels, multiple of 64")
    p.add_argument("--height", type=int, default=64, help="pixels, multiple of 64")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", default="8,10,15,20,30", help="comma-separated step counts")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, of {SAMPLERS}")
    p.add_argument("--config", choices=("full", "tiny"), default="full", help="UNet config (random weights)")
    p.add_argument("--reference-steps", type=int, default=30, help="steps of the DDIM run compared against")
    p.add_argument("--guidance", type=float, default=2.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--demo", type=Path, default=None, help="demo model folder (PSNR/SSIM vs ground truth)")
    p.add_argument("--clips", type=int, default=4, help="--demo: evaluation clips to use")
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON result")
    args = p.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",") if s.strip()]
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    bad = [s for s in args.samplers if s not in SAMPLERS]
    if bad:
        p.error(f"unknown sampler(s) {bad}; choose from {SAMPLERS}")
    if args.height % 64 or args.width % 64:
        p.error(f"--height/--width must be multiples of 64 (got {args.width}x{args.height})")
    return args


def runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(sampler, steps) pairs to measure: the reference first, then by step count (a run cut short
    still has every sampler at the smaller counts)."""
    pairs = [("ddim", args.reference_steps)] + [(s, n) for n in args.steps for s in args.samplers]
    return list(dict.fromkeys(pairs))


def evaluations(sampler: str, steps: int) -> int:
    """UNet evaluations (guided, batched) of one run: DDIM takes n + 1 timesteps, the solvers n."""
    return steps + 1 if sampler == "ddim" else steps


# ------------------------------------------------------------------------------ image metrics

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 videos (F,H,W,3) over all pixels (inf for identical inputs)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of uint8 videos (F,H,W,3): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, per
    channel, valid region only (Wang et al. 2004), averaged over frames and channels."""
    x = torch.from_numpy(a).double().permute(0, 3, 1, 2)  # (F,3,H,W)
    y = torch.from_numpy(b).double().permute(0, 3, 1, 2)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    c = x.shape[1]
    win_h = g.view(1, 1, 1, 11).repeat(c, 1, 1, 1)  # separable: rows then columns, per channel

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, win_h, groups=c)
        return F.conv2d(t, win_h.transpose(2, 3), groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------ random weights

def random_inputs(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)

    def img() -> np.ndarray:
        return rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)

    return {"reference_image": img(), "ref_pose": img(), "poses": [img() for _ in range(args.frames)]}


def measure_random(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = UNetConfig() if args.config == "full" else UNetConfig.tiny()
    t0 = time.perf_counter()
    pipe = UniAnimatePipeline.tiny(seed=args.seed, unet_config=cfg)
    logger.info("built the %s random-weight UNet in %.1f s", args.config, time.perf_counter() - t0)
    inputs = random_inputs(args)
    rows: list[dict[str, Any]] = []
    ref: torch.Tensor | None = None
    for sampler, steps in runs(args):
        start = time.perf_counter()
        x = pipe.generate_segment(**inputs, seed=args.seed, num_inference_steps=steps,
                                  guidance_scale=args.guidance, sampler=sampler, output_type="latent")
        wall = time.perf_counter() - start
        if ref is None:
            ref = x
        diff = (x - ref).double()
        rows.append({"sampler": sampler, "steps": steps, "unet evals": evaluations(sampler, steps),
                     "rel L2 vs ddim30": float(diff.norm() / ref.double().norm()),
                     "max abs vs ddim30": float(diff.abs().max()), "latent std": float(x.std()),
                     "s": wall, "s/eval": wall / evaluations(sampler, steps)})
        logger.info("%s %d steps: rel L2 %.4f, max abs %.4f, latent std %.4f in %.0f s", sampler, steps,
                    rows[-1]["rel L2 vs ddim30"], rows[-1]["max abs vs ddim30"], rows[-1]["latent std"], wall)
    return rows


# ------------------------------------------------------------------------------ demo model

def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def demo_clips(folder: Path, limit: int) -> list[dict[str, Any]]:
    """Evaluation clips of the demo model (layout in the module docstring)."""
    if not (folder / "eval").is_dir():
        return heldout_demo_clips(folder, limit)
    clips = []
    for clip in sorted(p for p in (folder / "eval").glob("*") if p.is_dir())[:limit]:
        poses = [_read(p) for p in sorted((clip / "poses").glob("*.png"))]
        frames = np.stack([_read(p) for p in sorted((clip / "frames").glob("*.png"))])
        if len(poses) != len(frames) or not poses:
            raise SystemExit(f"{clip}: {len(poses)} poses but {len(frames)} ground-truth frames")
        clips.append({"name": clip.name, "reference_image": _read(clip / "reference.png"),
                      "ref_pose": _read(clip / "ref_pose.png"), "poses": poses, "truth": frames})
    return clips


def heldout_demo_clips(folder: Path, limit: int) -> list[dict[str, Any]]:
    """The generator's held-out clips at the demo model's native size (``recipe.json``)."""
    from unianimate.demo_model import read_defaults
    from unianimate.training.people import heldout_clips

    d = read_defaults(folder)
    return [{"name": c.name, "reference_image": c.reference, "ref_pose": c.reference_pose,
             "poses": list(c.poses), "truth": c.frames}
            for c in heldout_clips(limit, d.frames, d.width, d.height)]


def measure_demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    from unianimate.training.metrics import moving_psnr, pose_following

    pipe = UniAnimatePipeline.from_pretrained(args.demo, device="cpu", dtype="fp32", local_files_only=True)
    clips = demo_clips(args.demo, args.clips)
    if not clips:
        raise SystemExit(f"no evaluation clips under {args.demo / 'eval'}")
    rows = []
    for sampler, steps in runs(args):
        scores, start = [], time.perf_counter()
        for clip in clips:
            out = pipe.generate_segment(clip["reference_image"], clip["poses"], clip["ref_pose"],
                                        seed=args.seed, num_inference_steps=steps,
                                        guidance_scale=args.guidance, sampler=sampler)
            scores.append((psnr(out, clip["truth"]), ssim(out, clip["truth"]),
                           moving_psnr(out, clip["truth"], clip["reference_image"]),
                           pose_following(out, clip["truth"])))
        rows.append({"sampler": sampler, "steps": steps, "unet evals": evaluations(sampler, steps),
                     "PSNR (dB)": float(np.mean([s[0] for s in scores])),
                     "SSIM": float(np.mean([s[1] for s in scores])),
                     "moving PSNR (dB)": float(np.mean([s[2] for s in scores])),
                     "pose following": float(np.mean([s[3] for s in scores])), "s": time.perf_counter() - start,
                     "clips": len(clips)})
        logger.info("%s %d steps: PSNR %.2f SSIM %.4f", sampler, steps, rows[-1]["PSNR (dB)"], rows[-1]["SSIM"])
    return rows


def demo_available(folder: Path) -> bool:
    """Whether ``folder`` holds a model to load and clips with ground truth (``eval/`` or a recipe)."""
    weights = any(folder.glob("*.pth")) or any(folder.glob("*.safetensors"))
    return folder.is_dir() and weights and ((folder / "eval").is_dir() or (folder / "recipe.json").is_file())


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.demo is not None:
        if not demo_available(args.demo):
            print(f"no demo model at {args.demo} (an exported model folder with its recipe.json, or eval/ "
                  "clips); train and export it first (python -m unianimate.train demo / export)", file=sys.stderr)
            return 2
        rows = measure_demo(args)
        columns = ("sampler", "steps", "unet evals", "PSNR (dB)", "SSIM", "moving PSNR (dB)", "pose following",
                   "s", "clips")
    else:
        rows = measure_random(args)
        columns = ("sampler", "steps", "unet evals", "rel L2 vs ddim30", "max abs vs ddim30", "latent std",
                   "s", "s/eval")
    shown = [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    print(format_table(shown, columns))
    mode = "demo" if args.demo is not None else f"random_{args.config}"
    name = f"sampler_quality_{mode}_{args.width}x{args.height}_f{args.frames}"
    payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}
    logger.info("wrote %s", write_json(name, payload, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
