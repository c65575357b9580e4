"""The Python parts of bench/gpu_check.sh: measurements that need the whole pipeline, the Mamba
scan comparison, a tiny end-to-end generation, and the one summary table.

Subcommands (each writes one JSON under ``--out``; ``table`` reads them all):

* ``pipeline``: the full-size pipeline (UniAnimate UNet 1.4 G params, OpenCLIP ViT-H-14, SD-2.1
  VAE) with random weights (no download), one segment of ``--steps`` denoising steps at
  ``--width`` x ``--height``, for 16 and 32 frames x batched/sequential guidance x offload on/off:
  seconds per step (median between step callbacks) and peak memory (CUDA max allocated).
  Everything is built once; the pipeline is re-wrapped per offload setting.
* ``mamba``: mamba_ssm's fused selective-scan kernel against the pure-PyTorch scan on the same
  inputs: max abs difference and time of each (the kernel row says so when it is not installed).
* ``tiny``: the tiny random-weight pipeline generates one segment on ``--device``; shape, finite
  values, seconds.
* ``table``: one Markdown table of every JSON in ``--out`` (plus the pytest summary written by the
  shell script).

``--device cpu --size tiny`` runs every subcommand in seconds on a CPU (a dry run of the plumbing;
its numbers mean nothing). Usage: python bench/gpu_check.py pipeline --device cuda --out DIR
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import format_table, mib, sync, write_json  # noqa: E402

logger = logging.getLogger("bench.gpu_check")
COLUMNS = ("check", "config", "result", "s/step", "peak memory", "notes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("pipeline", "mamba", "tiny", "table"))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="model size for `pipeline` (tiny: a CPU dry run)")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check")
    return p.parse_args(argv)


def _rows_path(out: Path, name: str) -> Path:
    return out / f"{name}.json"


def _save(out: Path, name: str, rows: list[dict[str, Any]], **extra: Any) -> None:
    write_json(name, {"rows": rows, **extra}, _rows_path(out, name))
    print(format_table(rows, COLUMNS))


def _random_(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded small random values in every parameter (uninitialised memory after to_empty)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def random_clip(device: torch.device) -> Any:
    """OpenCLIP ViT-H-14 (the released class and config) with random weights, built on the meta
    device and materialised on ``device`` (no CPU copy); zero_y computed, text tower released."""
    import open_clip

    from unianimate.models.clip import ClipConfig, ClipEncoder

    with torch.device("meta"):
        model = open_clip.model.CLIP(**open_clip.get_model_config(ClipConfig().model_name))
    model = model.to_empty(device=device)
    _random_(model, 1)
    n = model.attn_mask.shape[0]   # to_empty left the causal-mask buffer uninitialised
    model.attn_mask = torch.full((n, n), float("-inf"), device=device).triu_(1)
    clip = ClipEncoder(model, name="random ViT-H-14")
    clip.release_text_tower()
    return clip


def build_pipeline(size: str, device: torch.device) -> Any:
    """The full-size (or tiny) pipeline with random weights, offload off, fp16 UNet on CUDA."""
    from unianimate.pipeline import UniAnimatePipeline

    if size == "tiny":
        return UniAnimatePipeline.tiny(seed=0, device=device)
    from diffusers import AutoencoderKL

    from unianimate.models.config import UNetConfig
    from unianimate.models.unet import UniAnimateUNet
    from unianimate.models.vae import LatentVAE, VaeConfig

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    with torch.device("meta"):
        unet = UniAnimateUNet(UNetConfig())
    unet = unet.to(dtype).to_empty(device=device)
    unet.init_random_weights_(0)
    clip = random_clip(device)
    vae_model = AutoencoderKL(**VaeConfig().diffusers_kwargs()).to(device)
    sync(device)
    logger.info("full-size random pipeline built in %.1f s", time.perf_counter() - t0)
    return UniAnimatePipeline(unet, clip, LatentVAE(vae_model), device=device, dtype=dtype,
                              model_name="random full-size", is_tiny=True, offload=False)


def _segment_inputs(frames: int, width: int, height: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (height, width, 3), dtype=np.uint8)  # noqa: E731
    return {"ref": img(), "ref_pose": img(), "poses": np.stack([img() for _ in range(frames)])}


def _timed_segment(pipe: Any, x: dict[str, np.ndarray], steps: int, batched: bool
                   ) -> tuple[float, int, np.ndarray]:
    """Median seconds between step callbacks, peak bytes, frames."""
    device = pipe.device
    stamps: list[float] = []

    def callback(step: int, total: int, preview: Any = None) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    stamps.append(time.perf_counter())
    out = pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_inference_steps=steps,
                                seed=0, callback=callback, batch_guidance=batched)
    sync(device)
    intervals = np.diff(stamps[1:]) if len(stamps) > 2 else np.diff(stamps)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return float(statistics.median(intervals)), int(peak), np.asarray(out)


def run_pipeline(args: argparse.Namespace, device: torch.device) -> None:
    from unianimate.pipeline import UniAnimatePipeline

    base = build_pipeline(args.size, device)
    w, h = (args.width, args.height) if args.size == "full" else (64, 64)
    rows = []
    for offload in (False, True):
        pipe = UniAnimatePipeline(base.unet, base.clip, base.vae, device=device, dtype=base.dtype,
                                  model_name=base.model_name, is_tiny=True, offload=offload)
        for frames in args.frames:
            x = _segment_inputs(frames, w, h)
            for batched in (True, False):
                config = (f"{w}x{h} {frames}f {str(base.dtype).replace('torch.', '')} "
                          f"{'batched' if batched else 'sequential'} offload "
                          f"{'on' if offload else 'off'}")
                try:
                    per_step, peak, out = _timed_segment(pipe, x, args.steps, batched)
                    ok = out.shape == (frames, h, w, 3)
                    rows.append({"check": "pipeline step", "config": config,
                                 "result": "ok" if ok else f"shape {out.shape}",
                                 "s/step": f"{per_step:.3f}",
                                 "peak memory": mib(peak) if peak else "-",
                                 "notes": f"{args.steps} steps, random weights"})
                except torch.cuda.OutOfMemoryError as err:
                    rows.append({"check": "pipeline step", "config": config, "result": "OOM",
                                 "notes": str(err).splitlines()[0][:80]})
                    torch.cuda.empty_cache()
    _save(args.out, "pipeline", rows)


def run_mamba(args: argparse.Namespace, device: torch.device) -> None:
    from unianimate.models import mamba

    bt, d, length, n = (2048, 320, 33, 16) if device.type == "cuda" else (8, 16, 9, 4)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(bt, d, length, generator=g)
    delta = torch.randn(bt, d, length, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) - 0.1
    B = torch.randn(bt, n, length, generator=g)
    C = torch.randn(bt, n, length, generator=g)
    Dp = torch.randn(d, generator=g)
    z = torch.randn(bt, d, length, generator=g)
    bias = torch.randn(d, generator=g) * 0.1
    inputs = [t.to(device) for t in (u, delta, A, B, C, Dp, z, bias)]

    def timed(fn: Any) -> tuple[torch.Tensor, float]:
        y = fn(*inputs[:7], delta_bias=inputs[7], delta_softplus=True)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            y = fn(*inputs[:7], delta_bias=inputs[7], delta_softplus=True)
        sync(device)
        return y, (time.perf_counter() - t0) / 5

    config = f"Bt={bt} D={d} L={length} N={n} fp32"
    y_ref, t_ref = timed(mamba.selective_scan_ref)
    rows = [{"check": "mamba pure scan", "config": config, "result": "ok",
             "s/step": f"{t_ref:.4f}", "notes": "seconds per call"}]
    kernel = mamba._mamba_ssm_scan() if device.type == "cuda" else None
    if kernel is None:
        rows.append({"check": "mamba kernel", "config": config, "result": "skipped",
                     "notes": "mamba_ssm not installed" if device.type == "cuda" else "CPU"})
    else:
        y_k, t_k = timed(kernel)
        diff = float((y_k.float() - y_ref.float()).abs().max())
        rows.append({"check": "mamba kernel", "config": config,
                     "result": "ok" if diff < 1e-3 else "MISMATCH",
                     "s/step": f"{t_k:.4f}",
                     "notes": f"max |kernel - scan| {diff:.2e}; {t_ref / t_k:.1f}x faster"})
    _save(args.out, "mamba", rows)


def run_tiny(args: argparse.Namespace, device: torch.device) -> None:
    from unianimate.pipeline import UniAnimatePipeline

    pipe = UniAnimatePipeline.tiny(seed=0, device=device)
    x = _segment_inputs(4, 64, 64)
    t0 = time.perf_counter()
    out = pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_inference_steps=4,
                                seed=3)
    sync(device)
    seconds = time.perf_counter() - t0
    again = pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_inference_steps=4,
                                  seed=3)
    ok = out.shape == (4, 64, 64, 3) and out.dtype == np.uint8 and np.array_equal(out, again)
    rows = [{"check": "tiny end-to-end", "config": f"{device.type} {pipe.dtype} 4f 64x64 4 steps",
             "result": "ok" if ok else "FAILED", "s/step": f"{seconds / 4:.3f}",
             "notes": "uint8 frames, reproducible with the same seed" if ok else
             f"shape {out.shape} {out.dtype}"}]
    _save(args.out, "tiny", rows)


def _unet_step_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(out.glob("unet_step_*.json")):
        data = json.loads(f.read_text())
        r = data["row"]
        rows.append({"check": "unet_step.py", "result": "ok",
                     "config": f"{r['resolution']} {r['frames']}f {r['dtype']} {r['guidance']}",
                     "s/step": r["s/step (best)"], "peak memory": r["peak mem growth"],
                     "notes": f"UNet only, conditions encoded {r.get('encode once', 'once')}, "
                              f"weights {r['weights']}"})
    return rows


def run_table(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    pytest_file = args.out / "pytest_gpu.txt"
    if pytest_file.is_file():
        rows.append({"check": "pytest -m gpu", "config": "tests marked gpu",
                     "result": pytest_file.read_text().strip().splitlines()[-1][:80]})
    rows += _unet_step_rows(args.out)
    for name in ("pipeline", "mamba", "tiny"):
        path = _rows_path(args.out, name)
        if path.is_file():
            rows += json.loads(path.read_text())["rows"]
    for f in sorted(args.out.glob("*.failed")):
        rows.append({"check": f.stem, "result": "FAILED", "notes": f.read_text().strip()[:80]})
    env: dict[str, Any] = {}
    for f in sorted(args.out.glob("*.json")):
        env = json.loads(f.read_text()).get("environment", {})
        break
    print(f"\nGPU check on {env.get('cuda_device', 'cpu')} (torch {env.get('torch', '?')}):\n")
    print(format_table(rows, COLUMNS))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "table":
        run_table(args)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device; use --device cpu for a dry run")
    {"pipeline": run_pipeline, "mamba": run_mamba, "tiny": run_tiny}[args.what](args, device)


if __name__ == "__main__":
    main()
