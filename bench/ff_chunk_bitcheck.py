"""Is a row-chunked feed-forward bit-identical to the unchunked one on this machine?

The transformer feed-forward (GEGLU Linear(C, 8C) -> h * GELU(gate) -> Linear(4C, C)) works row by
row, so computing it over chunks of token rows gives the same numbers in exact arithmetic. In
floating point that holds only if the GEMM kernel's reduction order for a row does not depend on
the number of rows M (the BLAS may pick other blockings or kernels for other M). This script
measures it for the released UNet's shapes: per level, (B*(F+1)*tokens, C) rows with B = 2
(batched guidance), C = 320, 640, 1280, 1280 (middle block), and the token count of each level at
the given latent size; the temporal transformer sees the same row count ((B*h*w, F+1, C) flattened).
Random weights and inputs (seeded), fp32, ``torch.inference_mode``.

Prints one row per (shape, chunk, threads): max abs difference of the whole feed-forward (and of
its first Linear alone) between the unchunked and the chunked computation; 0 means bit-identical.

Usage: OMP_NUM_THREADS=1 python bench/ff_chunk_bitcheck.py [--latent 16x32 16x48 32x48]
       [--frames 8] [--chunks 512 819 1024 2048 3276 4096 8192] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

LEVELS = ((320, 1), (640, 2), (1280, 4), (1280, 8))  # (channels, latent downscale) with attention


def feed_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                 b2: torch.Tensor) -> torch.Tensor:
    """GEGLU feed-forward as unianimate.models.layers.FeedForward computes it under inference."""
    h, gate = F.linear(x, w1, b1).chunk(2, dim=-1)  # (N,8C) -> 2 x (N,4C)
    return F.linear(F.gelu(gate).mul_(h), w2, b2)  # (N,4C) -> (N,C)


def chunked(fn, x: torch.Tensor, rows: int, out_dim: int) -> torch.Tensor:
    """``fn`` over row chunks of x (N,C), written into one preallocated (N,out_dim) tensor."""
    out = x.new_empty(x.shape[0], out_dim)
    for start in range(0, x.shape[0], rows):
        out[start:start + rows] = fn(x[start:start + rows])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latent", nargs="+", default=["16x32", "32x48"], help="latent HxW (pixels / 8)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--chunks", nargs="+", type=int, default=[512, 819, 1024, 2048, 3276, 4096, 8192])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    print(f"{'latent':>7} {'C':>5} {'rows':>6} {'chunk':>6} {'thr':>3} {'ff max|diff|':>13} {'lin1 max|diff|':>15}")
    worst = 0.0
    with torch.inference_mode():
        for c, down in LEVELS:
            w1 = torch.randn(8 * c, c, generator=gen) * c ** -0.5
            b1 = torch.randn(8 * c, generator=gen)
            w2 = torch.randn(c, 4 * c, generator=gen) * (4 * c) ** -0.5
            b2 = torch.randn(c, generator=gen)
            for latent in args.latent:
                lh, lw = (int(v) for v in latent.split("x"))
                n = 2 * (args.frames + 1) * (lh // down) * (lw // down)
                x = torch.randn(n, c, generator=gen)
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    full = feed_forward(x, w1, b1, w2, b2)
                    lin1 = F.linear(x, w1, b1)
                    for rows in args.chunks:
                        if rows >= n:
                            continue
                        got = chunked(lambda t: feed_forward(t, w1, b1, w2, b2), x, rows, c)
                        got1 = chunked(lambda t: F.linear(t, w1, b1), x, rows, 8 * c)
                        d = (got - full).abs().max().item()
                        d1 = (got1 - lin1).abs().max().item()
                        worst = max(worst, d, d1)
                        print(f"{latent:>7} {c:>5} {n:>6} {rows:>6} {threads:>3} {d:>13.3g} {d1:>15.3g}")
    print(f"worst max|diff|: {worst!r} ({'bit-identical' if worst == 0 else 'NOT bit-identical'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
