"""Peak activation memory and time of one denoising step vs number of frames, per temporal module.

One "step" is one UNet forward of the conditional pass (all conditions given: CLIP image
embedding, reference latent + pose, driving poses) under ``torch.inference_mode``, batch 1, with
random weights (``init_random_weights_``, so every path is live). The UNet sees F+1 frames
(reference slot). The goal (issue 5): activation memory grows linearly in F for BOTH modules,
i.e. act(F_max) / act(F_min) <= 1.06 x F_max / F_min.

Memory method. Every (module, F) point runs in a fresh subprocess of this script, so no point
inherits the allocator state of another. Inside it, ``bench._common.PeakMemory`` measures:
  * CPU: after the model and all inputs are built, it resets the kernel's peak-RSS counter
    (writes "5" to /proc/self/clear_refs, Linux >= 4.0, so VmHWM restarts at the current RSS)
    and reads VmRSS; after the step it reads VmHWM. Activation = VmHWM - RSS before the step:
    weights and inputs are excluded, every temporary of the forward (however short-lived) is
    included. glibc serves large tensors with mmap and returns them on free, so the RSS tracks
    live tensors closely. Where clear_refs cannot be written the table says "NOT reset".
  * CUDA: torch.cuda.reset_peak_memory_stats() after the build; activation =
    max_memory_allocated - memory_allocated before the step (allocator view, not nvidia-smi).
A warm-up step at F=1 runs before the baseline is read, so one-time set-up (oneDNN primitives,
thread pools) is in neither number. Time: wall time of each step (perf_counter, CUDA
synchronised); the table shows the best of ``--repeats`` steps. On a shared CPU this is noisy; the load average is recorded.

Two ways to fit this machine (both keep the released architecture, only sizes change):
  --config full     the released widths (dim 320, 1.42 G parameters, ~5.7 GB fp32 weights) at a
                    small spatial size (default 64x64 px -> 8x8 latent);
  --config reduced  the same UNet at dim 64 (heads of 64 channels: 1/2/4 heads) at 128x128 px
                    (16x16 latent); the default, because it runs F = 256 in minutes on a CPU.
``--dim`` / ``--size`` override either.

Usage: python bench/frames_scaling.py [--frames 16 32 64 128 256] [--modules transformer mamba]
       [--config reduced|full] [--size 128x128] [--device cpu] [--dtype fp32] [--repeats 1]
       [--threads N]
Writes bench/results/frames_scaling_<device>_<config>.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import PeakMemory, environment, sync, write_json  # noqa: E402

logger = logging.getLogger("bench.frames_scaling")

CONFIGS = {"reduced": dict(dim=64, size=(128, 128)), "full": dict(dim=320, size=(64, 64))}
LINEAR_SLACK = 1.06  # allowed ratio over perfectly proportional growth


# ------------------------------------------------------------------------------ worker side

def _build(dim: int, module: str, device: str, dtype: str, seed: int = 0) -> Any:
    import torch

    from unianimate.models import UNetConfig, UniAnimateUNet
    from unianimate.utils import resolve_device, resolve_dtype

    dev = resolve_device(device)
    cfg = UNetConfig(dim=dim, temporal_module=module)
    with torch.device("meta"):
        unet = UniAnimateUNet(cfg)
    unet = unet.to_empty(device=dev).init_random_weights_(seed=seed).to(resolve_dtype(dtype, dev)).eval()
    return unet


def _inputs(unet: Any, frames: int, height: int, width: int, seed: int = 0) -> dict[str, Any]:
    """All conditions given (the conditional pass), batch 1; latent is H/8 x W/8."""
    import torch

    cfg, dev, dt = unet.config, unet.device, unet.dtype
    g = torch.Generator().manual_seed(seed)
    h, w = height // 8, width // 8

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dev, dt)

    return dict(x=rnd(1, cfg.in_dim, frames, h, w), t=torch.tensor([500], device=dev),
                text_context=rnd(1, 77, cfg.context_dim), image_embedding=rnd(1, cfg.context_dim),
                pose=torch.rand(1, 3, frames, height, width, generator=g).to(dev, dt),
                ref_pose=torch.rand(1, 3, height, width, generator=g).to(dev, dt),
                ref_latent=rnd(1, cfg.in_dim, h, w))


def run_point(module: str, frames: int, dim: int, height: int, width: int, device: str,
              dtype: str, repeats: int) -> dict[str, Any]:
    """Measure one (module, frames) point in THIS process (called in a fresh subprocess)."""
    import torch

    unet = _build(dim, module, device, dtype)
    with torch.inference_mode():  # warm-up at F=1: one-time kernel/allocator set-up stays out of the point
        unet(**_inputs(unet, 1, height, width))
    inputs = _inputs(unet, frames, height, width)
    params = unet.num_parameters()
    times = []
    with torch.inference_mode(), PeakMemory(unet.device) as mem:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = unet(**inputs)
            sync(unet.device)
            times.append(time.perf_counter() - t0)
            if not torch.isfinite(out).all():
                raise FloatingPointError(f"non-finite output for {module} F={frames}")
            del out
    if unet.device.type == "cuda":
        method = "cuda max_memory_allocated"
    else:
        method = "peak RSS (clear_refs)" if mem.peak_reset else "peak RSS NOT reset (includes build!)"
    return dict(module=module, frames=frames, act_bytes=mem.growth, base_bytes=mem.before,
                seconds=min(times), all_seconds=times, params=params, mem_method=method)


# ------------------------------------------------------------------------------ driver side

def _spawn_point(args: argparse.Namespace, module: str, frames: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--modules", module,
           "--frames", str(frames), "--dim", str(args.dim), "--size", f"{args.height}x{args.width}",
           "--device", args.device, "--dtype", args.dtype, "--repeats", str(args.repeats)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.point_timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(module=module, frames=frames, error=f"timed out after {args.point_timeout} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        kind = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
        return dict(module=module, frames=frames, error=f"{kind}: {' | '.join(tail)}")
    return json.loads(lines[-1])


def _fmt_mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f}"


def _table(module: str, points: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The printed table of one module and its growth summary."""
    ok = [p for p in points if "error" not in p]
    rows = [f"temporal module: {module}" + (f"  ({ok[0]['params']:,} parameters)" if ok else ""),
            f"{'frames':>7} {'act. MiB':>10} {'MiB/frame':>10} {'s/step':>8}   memory method"]
    for p in points:
        if "error" in p:
            rows.append(f"{p['frames']:>7}  FAILED: {p['error']}")
            continue
        rows.append(f"{p['frames']:>7} {_fmt_mib(p['act_bytes']):>10} "
                    f"{_fmt_mib(p['act_bytes'] / p['frames']):>10} {p['seconds']:>8.2f}   {p['mem_method']}")
    summary: dict[str, Any] = {"module": module}
    if len(ok) >= 2:
        lo, hi = ok[0], ok[-1]
        ratio = hi["act_bytes"] / max(1, lo["act_bytes"])
        frames_ratio = hi["frames"] / lo["frames"]
        bound = LINEAR_SLACK * frames_ratio
        summary.update(f_min=lo["frames"], f_max=hi["frames"], mem_ratio=ratio, frames_ratio=frames_ratio,
                       bound=bound, linear=ratio <= bound, time_ratio=hi["seconds"] / lo["seconds"])
        rows.append(f"growth F={lo['frames']}->{hi['frames']}: memory x{ratio:.2f} "
                    f"(bound {LINEAR_SLACK} x {frames_ratio:g} = {bound:.2f}: "
                    f"{'LINEAR' if ratio <= bound else 'SUPERLINEAR'}), time x{summary['time_ratio']:.2f}")
    return "\n".join(rows), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--modules", nargs="+", default=["transformer", "mamba"],
                        choices=["transformer", "mamba"])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="reduced")
    parser.add_argument("--dim", type=int, default=None, help="UNet base width (overrides --config)")
    parser.add_argument("--size", default=None, help="HxW in pixels, multiples of 64 (overrides --config)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--repeats", type=int, default=1, help="steps per point; time = best of them")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads per point (default: torch's); 1 is steadier on a busy CPU")
    parser.add_argument("--point-timeout", type=float, default=1800.0, help="seconds per point")
    parser.add_argument("--json", default=None, help="output path (default bench/results/...)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = CONFIGS[args.config]
    args.dim = preset["dim"] if args.dim is None else args.dim
    size = f"{preset['size'][0]}x{preset['size'][1]}" if args.size is None else args.size
    args.height, args.width = (int(v) for v in size.lower().split("x"))

    if args.worker:  # one point, result as one JSON line on stdout
        if args.threads is not None:
            import torch
            torch.set_num_threads(args.threads)
        result = run_point(args.modules[0], args.frames[0], args.dim, args.height, args.width,
                           args.device, args.dtype, args.repeats)
        print(json.dumps(result), flush=True)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = environment()
    print(f"frames scaling: UNet dim={args.dim} at {args.height}x{args.width} px "
          f"(latent {args.height // 8}x{args.width // 8}), batch 1, conditional pass, "
          f"{args.device} {args.dtype}, frames {args.frames} (+1 reference slot)")
    print(f"machine: {platform.processor() or env['machine']}, {env['cpu_count']} cores, torch {env['torch']}"
          + (f", {env['cuda_device']}" if "cuda_device" in env else "")
          + f", load average {env.get('loadavg_1m', float('nan')):.1f} at start")
    results: dict[str, Any] = dict(environment_start=env, threads=args.threads, dim=args.dim, height=args.height, width=args.width,
                                   device=args.device, dtype=args.dtype, frames=args.frames, modules={})
    summaries = []
    for module in args.modules:
        points = []
        for frames in sorted(args.frames):
            t0 = time.perf_counter()
            point = _spawn_point(args, module, frames)
            logger.info("  %s F=%d done in %.0f s%s", module, frames, time.perf_counter() - t0,
                        f" ({point['error']})" if "error" in point else "")
            points.append(point)
        text, summary = _table(module, points)
        print("\n" + text, flush=True)
        results["modules"][module] = dict(points=points, summary=summary)
        summaries.append(summary)
    load_end = os.getloadavg()[0]
    results["loadavg_1m_end"] = load_end
    custom = args.size is not None or args.dim != preset["dim"]
    name = f"frames_scaling_{args.device}_" + (f"dim{args.dim}_{args.height}x{args.width}" if custom else args.config)
    out = write_json(name, results, args.json)
    print(f"\nload average at end {load_end:.1f}; wrote {out}")
    failed = [s["module"] for s in summaries if s.get("linear") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
