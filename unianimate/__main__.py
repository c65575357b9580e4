"""Headless CLI: reference image + driving video or pose file -> one long video.

    python -m unianimate --reference ref.png --driving dance.mp4 --out out.mp4 \\
        --segment-frames 16 --candidates 2 --choose best --model tiny

It runs the studio's own flow (a project in a projects folder, segments continued from the
chosen candidate's last frame, export with audio), so a CLI run can be opened in the app later
with ``--projects-root``. Exit codes: 0 done, 2 bad input, 3 missing/invalid weights,
4 project error, 130 cancelled (Ctrl-C), 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from unianimate.compose import DEFAULT_MODEL_SOURCE, ModelManager, build_studio
from unianimate.demo_model import DEMO_MODEL_NAME
from unianimate.errors import (CheckpointError, GenerationCancelled, InputError, ProjectError,
                               UniAnimateError, WeightsMissingError)
from unianimate.studio.settings import (OFFLOAD_CHOICES, PRECISIONS, GenerationSettings,
                                        SpeedOptions, speed_preset)

log = logging.getLogger("unianimate.cli")

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_WEIGHTS, EXIT_PROJECT, EXIT_CANCELLED = 0, 1, 2, 3, 4, 130

_DEFAULTS = GenerationSettings()     # the studio's defaults (the app's sliders start there too)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    from unianimate.pose.align import USER_MODES
    from unianimate.pose.importers import IMAGE_FPS_RANGE, KINDS

    p = argparse.ArgumentParser(
        prog="python -m unianimate",
        description="Animate a reference image with a driving video or pose sequence "
                    "(UniAnimate, segment by segment, each continued from the last frame).")
    p.add_argument("--reference", required=True, help="reference image (PNG/JPEG/WebP ...)")
    p.add_argument("--driving", required=True,
                   help="driving video, or a pose sequence (JSON file, folder or zip of pose images)")
    p.add_argument("--out", required=True, help="output MP4 path")
    p.add_argument("--model", default="auto",
                   help=f"'real' (the released weights, {DEFAULT_MODEL_SOURCE}), 'demo' (the "
                        f"{DEMO_MODEL_NAME}: assets/demo), 'tiny' (random weights, for testing), a "
                        "Hub repo id or a local folder; 'auto' (default): real when its weights "
                        "are on this machine, else demo when shipped, else real")
    p.add_argument("--lora", default=None,
                   help="LoRA adapters (.safetensors from `python -m unianimate.train finetune "
                        "--lora-rank N`) folded into the UNet of the loaded weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--width", type=int, default=None,
                   help="output width (multiple of 64; default 512, the demo model's own size with it)")
    p.add_argument("--height", type=int, default=None,
                   help="output height (multiple of 64; default 768, the demo model's own size with it)")
    p.add_argument("--fit", choices=("crop", "pad", "stretch"), default="crop",
                   help="how the reference is fitted to width x height")
    p.add_argument("--segment-frames", type=int, default=None,
                   help=f"frames per segment (default {_DEFAULTS.frames_per_segment}; the demo "
                        "model's own with it)")
    p.add_argument("--candidates", type=int, default=1, help="candidates per segment")
    p.add_argument("--choose", choices=("first", "best"), default="first",
                   help="which candidate to keep: the first, or the best (lowest seam + stability)")
    p.add_argument("--max-segments", type=int, default=None,
                   help="stop after this many segments (default: until the poses run out)")
    p.add_argument("--sampler", default="ddim",
                   help="ddim (the reference's) | dpmpp_2m | unipc: multistep solvers that need fewer "
                        "--steps (quality per step count in docs/SAMPLERS.md)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default {_DEFAULTS.steps}; the demo model's own with it)")
    p.add_argument("--guidance", type=float, default=None,
                   help=f"classifier-free guidance scale (default {_DEFAULTS.guidance:g}; the demo "
                        "model's own with it)")
    p.add_argument("--noise-prior", type=int, default=_DEFAULTS.noise_prior_t,
                   help="noise prior timestep (raise to 959/969 if the reference leaks in)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.base_seed,
                   help="base seed; candidate c of segment depth d uses seed + 1000*d + c")
    p.add_argument("--frame-interval", type=int, default=2,
                   help="keep every n-th driving frame or pose, for videos, pose JSON, folders and "
                        "zips alike (output fps = source fps / n)")
    p.add_argument("--start", type=float, default=None,
                   help="trim start of the driving input (s; videos, pose JSON, folders, zips)")
    p.add_argument("--end", type=float, default=None, help="trim end of the driving input (s)")
    p.add_argument("--driving-kind", choices=KINDS, default="auto",
                   help="what a driving video is: auto (look at its frames), video (a real "
                        "video: extract poses) or pose_images (drawn poses, no detector needed)")
    lo, hi = IMAGE_FPS_RANGE
    p.add_argument("--image-fps", type=float, default=30.0,
                   help=f"frame rate of a folder or zip of pose images ({lo:g}..{hi:g})")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="One-Euro smoothing strength of the keypoints, 0 (off) .. 1 (strongest)")
    p.add_argument("--person", type=int, default=None,
                   help="which person of a multi-person video to follow: their index in the first "
                        "frame with people (default: the largest, most central one)")
    p.add_argument("--align-mode", choices=USER_MODES, default="per-limb",
                   help="per-limb: the reference's bone-by-bone alignment; scale: only overall "
                        "size and position; none: poses as they are")
    p.add_argument("--align-parts", default="body,hands",
                   help="comma-separated parts to align: body, hands (a hand left out keeps the "
                        "driving video's hand size, attached to the wrist)")
    p.add_argument("--no-align", action="store_true", help="do not align poses to the reference")
    p.add_argument("--no-color-correction", action="store_true",
                   help="do not correct colour jumps across segment joins")
    p.add_argument("--fps", type=float, default=None, help="override the output fps")
    p.add_argument("--quality", type=int, default=18, help="H.264 CRF (0 best .. 51 worst)")
    p.add_argument("--side-by-side", action="store_true",
                   help="also write <out>_side_by_side.mp4 (reference | pose | result)")
    p.add_argument("--png-zip", action="store_true", help="also write <out>_frames.zip")
    p.add_argument("--no-audio", action="store_true", help="do not copy the driving video's audio")
    # VRAM / speed: the same names and limits as the app's "VRAM / speed" section
    g = p.add_argument_group("VRAM / speed (the app's section of the same name)")
    g.add_argument("--speed-preset", choices=("auto", "none"), default="none",
                   help="auto: precision, sequential guidance, offload and decode chunk from the "
                        "detected GPU memory (CPU: fp32, no offload); the flags below override it")
    g.add_argument("--precision", "--dtype", dest="precision", choices=PRECISIONS, default=None,
                   help="the UNet's precision (auto: fp16 on a GPU, fp32 on the CPU; the CPU "
                        "has no fp16); stored with the project, changes the output's bits")
    g.add_argument("--sequential-guidance", action=argparse.BooleanOptionalAction, default=None,
                   help="run the two guidance passes as two UNet calls instead of one batched "
                        "call (less memory; stored with the project, changes the last bits)")
    g.add_argument("--offload", choices=OFFLOAD_CHOICES, default=None,
                   help="keep CLIP and the VAE on the CPU between uses (auto: on for a GPU); "
                        "never changes the output")
    lim = SpeedOptions.limit("decode_chunk")
    g.add_argument("--decode-chunk", type=int, default=None,
                   help=f"frames per VAE decode call ({lim.span()}, default "
                        f"{SpeedOptions().decode_chunk}; fewer = less memory)")
    # the reference's sliding-window long mode, as a generation setting
    g = p.add_argument_group("long mode (the reference's sliding windows)")
    g.add_argument("--long-mode", action="store_true",
                   help="denoise each segment in overlapping windows (the reference's long-video "
                        "mode): segments longer than the model's 16/32 frames without seams")
    for name in ("window", "overlap"):
        lim = GenerationSettings.limit(name)
        g.add_argument(f"--{name}", type=int, default=getattr(_DEFAULTS, name),
                       help=f"{lim.label}, {lim.span()} (default {getattr(_DEFAULTS, name)}"
                            + ("; below --window)" if name == "overlap" else ")"))
    p.add_argument("--projects-root", default=None,
                   help="keep the project here (openable in the app); default: a temporary folder")
    p.add_argument("--dwpose", default=None,
                   help="folder or Hub repo with the DWPose ONNX files (default: the released ones)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def _progress_logger(prefix: list[str]) -> Any:
    last = {"t": 0.0}

    def progress(p: Any) -> None:
        now = time.monotonic()
        if p.stage in ("generating", "poses") and now - last["t"] < 1.0 and p.step != p.total:
            return
        last["t"] = now
        eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
        log.info("%s%s%s", prefix[0], p.message or p.stage, eta)

    return progress


def speed_choices(args: argparse.Namespace, models: ModelManager
                  ) -> tuple[dict[str, Any], SpeedOptions]:
    """The VRAM / speed flags resolved (``--speed-preset auto`` first, then the explicit flags)
    and checked before anything is created: the project-setting part (precision, sequential
    guidance, long mode) and the run's :class:`SpeedOptions`."""
    base = (speed_preset(models.vram_bytes()) if args.speed_preset == "auto"
            else None)
    if base is not None:
        log.info("speed preset: %s", base.reason)
    precision = args.precision or (base.precision if base else _DEFAULTS.precision)
    if precision not in models.precision_choices():
        raise InputError(f"--precision {precision} is not supported on this device; use one of "
                         f"{', '.join(models.precision_choices())}")
    sequential = args.sequential_guidance if args.sequential_guidance is not None else (
        base.sequential_guidance if base else _DEFAULTS.sequential_guidance)
    settings = {"precision": precision, "sequential_guidance": bool(sequential),
                "long_mode": bool(args.long_mode), "window": args.window,
                "overlap": args.overlap}
    _DEFAULTS.with_changes(**settings)          # limits checked here, with the field names
    speed = SpeedOptions(
        offload=args.offload or (base.offload if base else SpeedOptions().offload),
        decode_chunk=args.decode_chunk if args.decode_chunk is not None else (
            base.decode_chunk if base else SpeedOptions().decode_chunk)).validated()
    return settings, speed


def check_driving(args: argparse.Namespace) -> str:
    """Validate the driving input and its options before anything is created; returns its kind
    (``keypoints`` | ``pose_images`` | ``video``) and records in ``args`` whether the detector
    is needed (only for a real video)."""
    from unianimate.pose.align import check_parts
    from unianimate.pose.importers import check_image_fps, classify_driving
    from unianimate.pose.smooth import check_strength
    from unianimate.video.reader import check_frame_interval

    check_frame_interval(args.frame_interval)
    check_strength(args.smooth)
    check_image_fps(args.image_fps)
    check_parts(args.align_parts)
    if args.person is not None and args.person < 0:
        raise InputError(f"--person must be 0 or more (an index in the first frame), got {args.person}")
    if args.start is not None and args.start < 0:
        raise InputError(f"--start must be >= 0 seconds, got {args.start}")
    if args.end is not None and args.end <= (args.start or 0.0):
        raise InputError(f"--end ({args.end} s) must come after --start ({args.start or 0} s)")
    kind = classify_driving(args.driving, args.driving_kind)
    args.driving_needs_detector = kind == "video"
    if args.person is not None and kind != "video":
        log.warning("--person applies to real driving videos only; ignored for this input")
    return kind


def apply_model_defaults(args: argparse.Namespace, models: ModelManager) -> None:
    """Fill the size and generation options left unset: the demo model's native size and
    settings with ``--model demo``, else 512x768 and the studio's defaults."""
    d = models.demo_defaults
    fill = {"width": d.width if d else 512, "height": d.height if d else 768,
            "segment_frames": d.frames if d else _DEFAULTS.frames_per_segment,
            "steps": d.steps if d else _DEFAULTS.steps,
            "guidance": d.guidance if d else _DEFAULTS.guidance}
    for name, value in fill.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run(args: argparse.Namespace) -> int:
    """Do the whole job; returns the exit code (errors are raised to :func:`main`)."""
    from unianimate.studio.measures import pick_best

    # Poses given as poses (JSON, images, a drawn-pose video) need the detector only for the
    # reference's pose (alignment): use the DWPose files when they are already here, never wait
    # on a download for that (detector_local_only, set below once the driving input is known).
    models = ModelManager(args.model, device=args.device, dwpose=args.dwpose, lora=args.lora)
    apply_model_defaults(args, models)
    choices = GenerationSettings.sampler_choices()
    if args.sampler not in choices:            # before any project exists
        raise InputError(f"--sampler must be one of {', '.join(choices)}; got {args.sampler!r}")
    ref, drv, out = Path(args.reference), Path(args.driving), Path(args.out)
    if not ref.is_file():
        raise InputError(f"reference image {str(ref)!r} does not exist")
    if not drv.exists():
        raise InputError(f"driving input {str(drv)!r} does not exist")
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out must end in .mp4, got {out.name!r}")
    if args.candidates < 1 or args.segment_frames < 2:
        raise InputError("--candidates must be >= 1 and --segment-frames >= 2")
    check_driving(args)                        # before any project exists
    temp_root = None
    if args.projects_root:
        root = Path(args.projects_root)
    else:
        temp_root = tempfile.mkdtemp(prefix="unianimate-cli-")
        root = Path(temp_root)
    # A real video builds the detector now: missing DWPose files fail before any project exists.
    models.detector_local_only = None if args.driving_needs_detector else True
    # the precision is a project setting: the studio asks the manager for it (--dtype is its
    # older name)
    speed_settings, speed = speed_choices(args, models)     # before any project exists
    detector_factory = None
    if args.driving_needs_detector:
        detector = models.detector_factory()
        detector_factory = lambda: detector    # noqa: E731
    studio = build_studio(root, models, detector_factory=detector_factory)
    prefix = [""]
    progress = _progress_logger(prefix)
    try:
        t0 = time.monotonic()
        project = studio.create_project(ref, width=args.width, height=args.height, fit=args.fit,
                                        name=ref.stem)
        pid = project.id
        studio.set_settings(pid, frames_per_segment=args.segment_frames, steps=args.steps,
                            guidance=args.guidance, noise_prior_t=args.noise_prior,
                            base_seed=args.seed, candidates=args.candidates,
                            color_correction=not args.no_color_correction, sampler=args.sampler,
                            **speed_settings)
        prefix[0] = "poses: "
        try:
            info = studio.set_poses_from_file(
                pid, drv, frame_interval=args.frame_interval, start=args.start, end=args.end,
                align=not args.no_align and args.align_mode != "none", progress=progress,
                kind=args.driving_kind, image_fps=args.image_fps, smooth=args.smooth,
                person=args.person, align_mode=args.align_mode, align_parts=args.align_parts)
        except BaseException:
            studio.delete_project(pid)         # no empty project is left behind
            raise
        for msg in info.messages:
            log.info("poses: %s", msg)
        n = args.segment_frames
        total_segments = max(1, math.ceil((info.count - 1) / (n - 1))) if info.count >= n else 0
        if args.max_segments:
            total_segments = min(total_segments, args.max_segments)
        log.info("%d poses at %.3f fps -> %d segment(s) of up to %d frames, %d candidate(s) each",
                 info.count, info.fps, total_segments, n, args.candidates)
        segment_id = studio.ensure_root(pid).id
        k = 0
        while True:
            k += 1
            prefix[0] = f"segment {k}/{total_segments}: "
            cands = studio.generate_candidates(pid, segment_id, progress=progress, speed=speed)
            pick = cands[0] if args.choose == "first" else pick_best(cands)
            tl = studio.choose(pid, segment_id, pick.id)
            m = pick.measures
            log.info("segment %d: chose %s (seed %d; seam %s, stability %.2f)", k, pick.id,
                     pick.seed, "-" if m.get("seam") is None else f"{m['seam']:.2f}",
                     m.get("stability", 0.0))
            if not tl.can_continue or (args.max_segments and k >= args.max_segments):
                break
            segment_id = studio.continue_from(pid).id
        prefix[0] = "export: "
        result = studio.export(pid, out, fps=args.fps, quality=args.quality,
                               side_by_side=args.side_by_side, png_zip=args.png_zip,
                               with_audio=not args.no_audio, progress=progress)
        log.info("wrote %s: %d frames at %.3f fps%s in %.1f s", result.video, result.frames,
                 result.fps, " with audio" if result.has_audio else "", time.monotonic() - t0)
        if args.projects_root:
            log.info("project %s kept in %s", pid, root)
        return EXIT_OK
    finally:
        if temp_root is not None:
            shutil.rmtree(temp_root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return run(args)
    except InputError as err:
        log.error("bad input: %s", err)
        return EXIT_INPUT
    except (WeightsMissingError, CheckpointError) as err:
        log.error("model weights: %s", err)
        return EXIT_WEIGHTS
    except ProjectError as err:
        log.error("project: %s", err)
        return EXIT_PROJECT
    except (GenerationCancelled, KeyboardInterrupt):
        log.error("cancelled")
        return EXIT_CANCELLED
    except UniAnimateError as err:
        log.error("%s", err)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
