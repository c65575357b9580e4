"""Time and peak memory of one denoising step of the UniAnimate UNet (random weights).

One step = one guided model evaluation, as the sampler does it: the conditional pass (reference
mode: CLIP image embedding, reference latent + reference pose, driving poses) and the
unconditional pass (every condition dropped), either batched into one forward with
``drop_conditions`` (``--batch-guidance``, default) or as two forwards (``--no-batch-guidance``,
as the reference does), then ``v = v_u + 2.5 (v_c - v_u)``. Everything under ``torch.inference_mode``.
As the pipeline does, the conditions are encoded once (``unet.encode_conditions``, outside the timed
step, its own time reported as "encode once") and every timed step reuses them
(``--no-encode-once``: every step encodes them again, the per-call cost before they were cached).
The encoded conditions include every spatial transformer's cross-attention keys and values of the
context, projected once for the batch rows (``--no-context-kv``: the layers project the context
repeated for every frame at every step, as before; same output bit for bit).

``--reference-emulation``: the reference's way on this code: two forwards per step (cond, uncond),
plain ``softmax(q k^T) v`` attention, every condition and the cross-attention keys/values of the
per-frame context computed at every call (= ``--no-batch-guidance --attention reference
--no-encode-once --no-context-kv --no-reuse-cpu-memory --no-ff-chunk``). It shares this tree's layers, so it is the reference's
algorithm at this code's layer speed (a lower bound on the reference code's own time).

``--reuse-cpu-memory`` (opt-in, the pipeline's ``reuse_cpu_memory=True``): glibc keeps freed memory
for the next allocation instead of unmapping it (:func:`unianimate.utils.reuse_freed_cpu_memory`;
same numbers), so the step's large activations are not page-faulted in again at every step; the
heap fragments (more peak memory at larger sizes).

``--no-ff-chunk``: every transformer feed-forward in one call per layer, as before; by default
(CPU fp32, inference) it runs over chunks of token rows whose GEGLU projection stays within 32 MiB
(:class:`unianimate.models.layers.FeedForward`; same numbers).

Each timed step reports its wall time and its CPU time (user + system, all threads): on a loaded
machine the wall time also counts the time other processes held the cores. With ``--threads 1``
the CPU time is the step's own work.

The model is built on the meta device, materialised with ``to_empty`` and filled by
``init_random_weights_(seed)`` (seeded, every parameter non-zero), so the 1.4 G-parameter model
builds in seconds. Peak memory: see bench/_common.py (CPU: peak-RSS growth over the steps, VmHWM
reset via /proc/self/clear_refs; CUDA: max_memory_allocated growth). Each invocation is a fresh
process, so one run measures one configuration. Resolution follows the spec's W x H convention.

Usage: python bench/unet_step.py --width 256 --height 384 --frames 8 [--device cpu|cuda]
       [--dtype fp32|fp16|bf16] [--temporal transformer|mamba] [--config full|tiny]
       [--batch-guidance/--no-batch-guidance] [--attention sdpa|reference] [--channels-last]
       [--compile] [--repeat 1] [--warmup 1] [--json PATH] [--encode-once/--no-encode-once]
       [--context-kv/--no-context-kv] [--reuse-cpu-memory/--no-reuse-cpu-memory] [--ff-chunk/--no-ff-chunk]
       [--reference-emulation]
       [--threads N]
       [--profile [--profile-top 15]]
       GPU (fp16, 768x512 = W 512 x H 768, 16 and 32 frames): bench/gpu_check.sh

``--profile``: after the timed steps, one more step with a forward hook on every module; prints the
modules by exclusive wall time (own time minus that of their sub-modules, summed per class, then
per block of the UNet: ``input_blocks.4``, ``middle_block``, the condition adapters, ...). Hooks cost
a little, so the profiled step is not the timed one.

``--attention``, ``--channels-last`` and ``--compile`` measure the pipeline's switches of the same
names (the same model methods the pipeline calls).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench._common import PeakMemory, format_table, mib, sync, time_fn, write_json  # noqa: E402
from unianimate.models import ConditionEmbeddings, UNetConfig, UniAnimateUNet  # noqa: E402
from unianimate.models.attention import set_attention_backend  # noqa: E402
try:  # trees from before the allocator option (this bench also measures older trees)
    from unianimate.utils import reuse_freed_cpu_memory  # noqa: E402
except ImportError:  # pragma: no cover
    def reuse_freed_cpu_memory(enable: bool = True) -> bool:
        return False
from unianimate.utils import resolve_device, resolve_dtype  # noqa: E402

logger = logging.getLogger("bench.unet_step")
GUIDANCE_SCALE = 2.5
COLUMNS = ("device", "dtype", "temporal", "config", "resolution", "latent", "frames", "guidance",
           "attention", "options", "params", "s/step (best)", "s/step (mean)", "cpu s/step (best)", "encode once",
           "peak mem growth", "weights", "load avg")
CONDITIONS = ("image_embedding", "pose", "ref_pose", "ref_latent")
ADAPTERS = ("pre_image_condition", "local_image_embedding", "local_image_embedding_after", "dwpose_embedding",
            "dwpose_embedding_after", "randomref_pose2_embedding", "randomref_pose2_embedding_after",
            "randomref_embedding2", "randomref_embedding_after2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=384, help="pixels, multiple of 64")
    p.add_argument("--width", type=int, default=256, help="pixels, multiple of 64")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--temporal", choices=("transformer", "mamba"), default="transformer")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--config", choices=("full", "tiny"), default="full")
    p.add_argument("--batch-guidance", action=argparse.BooleanOptionalAction, default=True,
                   help="cond and uncond passes in one batched forward (default) or two forwards")
    p.add_argument("--attention", choices=("sdpa", "reference"), default="sdpa",
                   help="scaled_dot_product_attention (default) or the plain softmax(qk^T)v path")
    p.add_argument("--channels-last", action="store_true", help="2-D conv weights in channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (warmup pays it)")
    p.add_argument("--encode-once", action=argparse.BooleanOptionalAction, default=True,
                   help="conditions encoded once and reused at every step (default, as the pipeline) "
                        "or encoded again at every step")
    p.add_argument("--context-kv", action=argparse.BooleanOptionalAction, default=True,
                   help="cross-attention keys/values of the context projected once per segment (default) "
                        "or by every layer for every frame at every step")
    p.add_argument("--reuse-cpu-memory", action=argparse.BooleanOptionalAction, default=False,
                   help="CPU: glibc keeps freed memory for reuse (the pipeline's opt-in reuse_cpu_memory)")
    p.add_argument("--ff-chunk", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU fp32: transformer feed-forwards over chunks of token rows (default, same bits) "
                        "or in one call per layer")
    p.add_argument("--reference-emulation", action="store_true",
                   help="the reference's way: --no-batch-guidance --attention reference --no-encode-once "
                        "--no-context-kv --no-reuse-cpu-memory --no-ff-chunk")
    p.add_argument("--profile", action="store_true", help="print the top modules by time of one more step")
    p.add_argument("--profile-top", type=int, default=15, help="rows per --profile table")
    p.add_argument("--repeat", type=int, default=1, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before (their memory counts)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON result")
    args = p.parse_args(argv)
    if args.height % 64 or args.width % 64:
        p.error(f"--height/--width must be multiples of 64 (got {args.width}x{args.height})")
    if args.frames < 1 or args.repeat < 1 or args.warmup < 0:
        p.error("--frames and --repeat must be >= 1, --warmup >= 0")
    if args.reference_emulation:
        args.batch_guidance, args.attention, args.encode_once, args.context_kv = False, "reference", False, False
        args.reuse_cpu_memory = args.ff_chunk = False
    return args


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> UniAnimateUNet:
    """Meta init -> to_empty on the device in the target dtype -> seeded random weights."""
    base = UNetConfig() if args.config == "full" else UNetConfig.tiny()
    cfg = base.replace(temporal_module=args.temporal)
    with torch.device("meta"):
        model = UniAnimateUNet(cfg)
    model = model.to(dtype=dtype).to_empty(device=device).eval()
    model.init_random_weights_(args.seed)
    if args.channels_last:
        model.to_channels_last_()
    return model


def make_inputs(args: argparse.Namespace, cfg: UNetConfig, device: torch.device,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed + 1)
    f, hh, ww = args.frames, args.height, args.width
    h, w = hh // 8, ww // 8
    tensors = dict(
        x=torch.randn(1, cfg.in_dim, f, h, w, generator=g),
        text_context=torch.randn(1, 77, cfg.context_dim, generator=g),
        image_embedding=torch.randn(1, cfg.context_dim, generator=g),
        pose=torch.rand(1, 3, f, hh, ww, generator=g),
        ref_pose=torch.rand(1, 3, hh, ww, generator=g),
        ref_latent=torch.randn(1, cfg.in_dim, h, w, generator=g),
    )
    out = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
    out["t"] = torch.tensor([958], device=device)
    return out


def encode(model: UniAnimateUNet, inp: dict[str, torch.Tensor], batched: bool,
           context_kv: bool = True) -> dict[str, ConditionEmbeddings]:
    """The step-independent embeddings the pipeline computes once per segment ("both" or "cond" + "uncond")."""
    conds = {k: inp[k] for k in CONDITIONS}
    # only passed when off, so this bench also runs on trees from before the option
    kv = {} if context_kv else {"context_kv": False}
    with torch.inference_mode():
        if batched:
            two = {k: torch.cat([v, v]) for k, v in conds.items()}
            drop = torch.tensor([False, True], device=inp["x"].device)
            shape = (2, *inp["x"].shape[1:])
            return {"both": model.encode_conditions(shape, inp["text_context"], drop_conditions=drop, **two, **kv)}
        return {"cond": model.encode_conditions(inp["x"].shape, inp["text_context"], **conds, **kv),
                "uncond": model.encode_conditions(inp["x"].shape, inp["text_context"], **kv)}


def guided_step(model: "UniAnimateUNet | torch.nn.Module", inp: dict[str, torch.Tensor], batched: bool,
                encoded: dict[str, ConditionEmbeddings] | None = None, context_kv: bool = True) -> torch.Tensor:
    """One guided evaluation: v_u + 2.5 (v_c - v_u); with ``encoded`` (from :func:`encode`) the
    conditions are not encoded again, without it they are encoded inside the step (what a call with
    the raw conditions does: ``forward`` = ``encode_conditions`` + the denoising pass)."""
    unet = getattr(model, "_orig_mod", model)  # encode_conditions is not compiled
    with torch.inference_mode():
        x, t = inp["x"], inp["t"]
        enc = encode(unet, inp, batched, context_kv) if encoded is None else encoded
        if batched:
            v = model(torch.cat([x, x]), torch.cat([t, t]), conditions=enc["both"])
            v_c, v_u = v[:1], v[1:]
        else:
            v_c = model(x, t, conditions=enc["cond"])
            v_u = model(x, t, conditions=enc["uncond"])
        return v_u + GUIDANCE_SCALE * (v_c - v_u)


def profile_step(model: UniAnimateUNet, step: Callable[[], Any], top: int) -> str:
    """One ``step()`` with a forward hook on every sub-module; two tables of exclusive wall time."""
    stack: list[list[float]] = []
    own: dict[str, float] = defaultdict(float)

    def pre(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any) -> None:
            stack.append([time.perf_counter(), 0.0])
        return hook

    def post(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            start, children = stack.pop()
            spent = time.perf_counter() - start
            own[name] += spent - children
            if stack:
                stack[-1][1] += spent
        return hook

    modules = dict(model.named_modules())
    handles = []
    for name, module in modules.items():
        if name:
            handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    try:
        start = time.perf_counter()
        step()
        total = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    by_class: dict[str, float] = defaultdict(float)
    by_block: dict[str, float] = defaultdict(float)
    for name, sec in own.items():
        by_class[type(modules[name]).__name__] += sec
        parts = name.split(".")
        if parts[0] in ("input_blocks", "output_blocks"):
            block = ".".join(parts[:2])
        elif parts[0] in ADAPTERS:
            block = "condition adapters (run once per segment when encoded once)"
        else:
            block = parts[0]
        by_block[block] += sec
    by_block["(outside any module: reshapes, concatenations, guidance)"] = total - sum(own.values())

    def table(title: str, data: dict[str, float]) -> str:
        rows = [{title: k, "s": f"{v:.3f}", "share": f"{100 * v / total:.1f}%"}
                for k, v in sorted(data.items(), key=lambda kv: -kv[1])[:top]]
        return format_table(rows, (title, "s", "share"))

    return (f"profiled step: {total:.2f} s (hooked)\n\n" + table("module class (exclusive)", by_class)
            + "\n\n" + table("UNet block (exclusive)", by_block))


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    reuse = device.type == "cpu" and args.reuse_cpu_memory and reuse_freed_cpu_memory()
    t0 = time.perf_counter()
    model = build_model(args, device, dtype)
    sync(device)
    build_s = time.perf_counter() - t0
    logger.info("built %s UNet (%d params) in %.1fs", args.config, model.num_parameters(), build_s)
    if not args.ff_chunk:
        for module in model.modules():
            if hasattr(module, "chunk_bytes"):  # FeedForward (trees before it have no chunking)
                module.chunk_bytes = 0
    inp = make_inputs(args, model.config, device, dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    set_attention_backend(args.attention)
    params = model.num_parameters()
    model = torch.compile(model) if args.compile else model

    unet = model._orig_mod if args.compile else model  # encode_conditions is not compiled
    with PeakMemory(device) as mem:
        encoded = None
        encode_s = 0.0
        if args.encode_once:
            start = time.perf_counter()
            encoded = encode(unet, inp, args.batch_guidance, args.context_kv)
            sync(device)
            encode_s = time.perf_counter() - start
        timing = time_fn(lambda: guided_step(model, inp, args.batch_guidance, encoded, args.context_kv), device,
                         repeat=args.repeat, warmup=args.warmup)
    out = guided_step(model, inp, args.batch_guidance, encoded, args.context_kv)
    if not torch.isfinite(out).all():
        logger.warning("non-finite values in the output (random weights at %s)", args.dtype)

    row = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "temporal": args.temporal, "config": args.config,
        "resolution": f"{args.width}x{args.height} px", "latent": f"{args.width // 8}x{args.height // 8}",
        "frames": args.frames, "guidance": "batched" if args.batch_guidance else "sequential",
        "attention": args.attention,
        "options": "+".join(o for o, on in (("reference_emulation", args.reference_emulation),
                                            ("no_context_kv", not args.context_kv and not args.reference_emulation),
                                            ("reuse_cpu_memory", reuse),
                                            ("no_ff_chunk", not args.ff_chunk and not args.reference_emulation),
                                            ("channels_last", args.channels_last), ("compile", args.compile)) if on) or "-",
        "params": f"{params / 1e9:.3f} G" if args.config == "full" else f"{params / 1e6:.2f} M",
        "s/step (best)": f"{timing.best:.2f}", "s/step (mean)": f"{timing.mean:.2f}",
        "cpu s/step (best)": f"{min(timing.cpu_seconds):.2f}",
        "encode once": f"{encode_s:.3f} s" if args.encode_once else "every step",
        "peak mem growth": mib(mem.growth), "weights": mib(weights),
        "load avg": f"{os.getloadavg()[0]:.1f}",
    }
    print(format_table([row], COLUMNS))
    if args.profile:
        print()
        print(profile_step(unet, lambda: guided_step(model, inp, args.batch_guidance, encoded, args.context_kv),
                           args.profile_top))
    if device.type == "cpu" and not mem.peak_reset:
        print("note: /proc/self/clear_refs not writable; CPU peak includes the model build")
    payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "row": row, "seconds": timing.seconds, "cpu_seconds": timing.cpu_seconds,
               "build_seconds": build_s, "encode_seconds": encode_s,
               "peak_growth_bytes": mem.growth, "peak_bytes": mem.peak, "before_bytes": mem.before,
               "peak_reset": mem.peak_reset, "weights_bytes": weights, "params": params}
    name = (f"unet_step_{args.device}_{args.dtype}_{args.temporal}_{args.config}_{args.width}x{args.height}"
            f"_f{args.frames}_{'batched' if args.batch_guidance else 'seq'}_{args.attention}"
            f"{'_cl' if args.channels_last else ''}{'_compiled' if args.compile else ''}"
            f"{'' if args.encode_once else '_encode_every_step'}{'' if args.context_kv else '_no_context_kv'}")
    path = write_json(name, payload, args.json)
    logger.info("wrote %s", path)
    return payload


if __name__ == "__main__":
    main()
