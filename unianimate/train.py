"""``python -m unianimate.train``: train the demo model on drawn people, or fine-tune on your clips.

    python -m unianimate.train demo --run-dir RUN [--recipe cpu|gpu] [--seed 0] [--threads 2]
    python -m unianimate.train finetune --data CLIPS --weights WEIGHTS --run-dir RUN [--lora-rank 8]
    python -m unianimate.train export --run-dir RUN --dest FOLDER [--half] [--max-mb 40]

SIGTERM (``kill PID``) saves a checkpoint and stops. A rerun of the same command resumes from the newest checkpoint in ``RUN`` (exactly: model, optimiser,
EMA, RNG states and data position). Progress (loss, s/step, ETA) goes to the log; ``RUN`` also gets
``<stage>_loss.csv`` and ``<stage>_loss.png``.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unianimate.demo_model import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_BYTES
from unianimate.errors import InputError
from unianimate.utils import resolve_device

logger = logging.getLogger("unianimate.train")


def _stopper(max_minutes: float | None) -> Callable[[], bool]:
    """True once ``max_minutes`` have passed or SIGTERM/SIGINT arrived (the stage then saves and ends)."""
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else None
    flag = {"stop": False}

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: saving a checkpoint and stopping", signum)
        flag["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: flag["stop"] or (deadline is not None and time.monotonic() > deadline)


def _demo(args: argparse.Namespace) -> int:
    from unianimate.training.demo import check_recipe_name, load_or_write_recipe, run_unet_stage, run_vae_stage

    run_dir = Path(args.run_dir)
    recipe = load_or_write_recipe(run_dir, check_recipe_name(args.recipe).with_seed(args.seed))
    device = resolve_device(args.device)
    stop = _stopper(args.max_minutes)
    if args.stage in ("all", "vae"):
        if not run_vae_stage(run_dir, recipe, device, should_stop=stop):
            return 0
    if args.stage in ("all", "unet"):
        run_unet_stage(run_dir, recipe, device, should_stop=stop, steps=args.steps)
    return 0


def _export(args: argparse.Namespace) -> int:
    from unianimate.training.demo import export_latest

    if args.max_mb < 0:
        raise InputError(f"--max-mb must be >= 0 (0: no limit), got {args.max_mb}")
    export_latest(Path(args.run_dir), Path(args.dest), half=args.half, max_bytes=int(args.max_mb * 1e6),
                  steps=args.steps, guidance=args.guidance)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from unianimate.training.finetune import FinetuneOptions, finetune

    finetune(FinetuneOptions(data=Path(args.data), weights=args.weights, run_dir=Path(args.run_dir),
                             frames=args.frames, width=args.width, height=args.height,
                             lora_rank=args.lora_rank, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                             seed=args.seed, device=args.device, extract_poses=args.extract_poses))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unianimate.train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train the demo model on procedural drawn people")
    d.add_argument("--run-dir", required=True)
    d.add_argument("--recipe", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--stage", choices=("all", "vae", "unet"), default="all")
    d.add_argument("--steps", type=int, default=None, help="stop the UNet stage after this many more steps")
    d.add_argument("--max-minutes", type=float, default=None,
                   help="save and stop after this many minutes (SIGTERM does the same)")
    d.set_defaults(fn=_demo)
    e = sub.add_parser("export", help="write a from_pretrained folder from a demo run's newest UNet checkpoint")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--dest", required=True)
    e.add_argument("--half", action="store_true", help="store weights in float16 (half the size)")
    e.add_argument("--max-mb", type=float, default=MAX_BYTES / 1e6,
                   help="fail unless the folder is at most this many MB (default: the shipping budget "
                        "of assets/demo; 0: no limit)")
    e.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help="the sampler steps the app and CLI start this model with (defaults.json)")
    e.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="the guidance the app and CLI start this model with (defaults.json)")
    e.set_defaults(fn=_export, threads=0)
    f = sub.add_parser("finetune", help="fine-tune a UNet (full or LoRA) on a folder of your clips")
    f.add_argument("--data", required=True, help="folder of videos or frame folders with pose JSONs")
    f.add_argument("--weights", required=True, help="model folder (released weights or a demo model)")
    f.add_argument("--run-dir", required=True)
    f.add_argument("--frames", type=int, default=16)
    f.add_argument("--width", type=int, default=512)
    f.add_argument("--height", type=int, default=768)
    f.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning; >0: LoRA adapters only")
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--lr", type=float, default=1e-5)
    f.add_argument("--batch-size", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--extract-poses", action="store_true", help="run DWPose on clips without a pose JSON")
    f.set_defaults(fn=_finetune)
    for sp in (d, f):
        sp.add_argument("--device", default="auto")
        sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return args.fn(args)
    except InputError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
