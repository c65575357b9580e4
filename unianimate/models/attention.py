"""Scaled dot-product attention with two interchangeable backends.

``"sdpa"`` (default) calls :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
fused kernel (flash / memory-efficient on CUDA, flash on CPU) that never materialises the
``N x M`` score matrix. ``"reference"`` is the plain ``softmax(q k^T * scale) v`` of the reference
code, computed in float32 and chunked over the batch so that long sequences do not blow up memory;
it exists to check the fused path against (tests) and as a fallback.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
import torch.nn.functional as F

from unianimate.errors import InputError

logger = logging.getLogger(__name__)

BACKENDS = ("sdpa", "reference")
_backend = "sdpa"

# CUDA fused kernels put batch*heads into a grid dimension limited to 65535; stay well below it.
_CUDA_MAX_BATCH_HEADS = 32768
# the reference path materialises chunk x N x M float32 scores; bound one chunk to ~256 MiB
_REFERENCE_MAX_SCORES = 64 * 1024 * 1024


def set_attention_backend(name: str) -> None:
    """Select the attention implementation used by every layer: "sdpa" or "reference"."""
    global _backend
    if name not in BACKENDS:
        raise InputError(f"unknown attention backend {name!r}; use one of {BACKENDS}")
    _backend = name
    logger.debug("attention backend set to %s", name)


def get_attention_backend() -> str:
    """The backend currently in use."""
    return _backend


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Temporarily switch the backend (restored on exit, also on error)."""
    previous = get_attention_backend()
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        scale: float | None = None) -> torch.Tensor:
    """Plain ``softmax(q k^T * scale) v`` in float32, chunked over the leading batch dimension.

    q (B,H,N,D), k (B,H,M,D), v (B,H,M,Dv) -> (B,H,N,Dv) in q's dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, heads, n, _ = q.shape
    m = k.shape[-2]
    chunk = max(1, _REFERENCE_MAX_SCORES // max(1, heads * n * m))
    outs = []
    for start in range(0, batch, chunk):
        qc = q[start:start + chunk].float()
        kc = k[start:start + chunk].float()
        vc = v[start:start + chunk].float()
        scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale  # (b,H,N,M)
        outs.append(torch.matmul(scores.softmax(dim=-1), vc).to(q.dtype))  # (b,H,N,Dv)
    return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
    batch, heads = q.shape[0], q.shape[1]
    if q.device.type == "cuda" and batch * heads > _CUDA_MAX_BATCH_HEADS:
        chunk = max(1, _CUDA_MAX_BATCH_HEADS // heads)
        return torch.cat([F.scaled_dot_product_attention(q[i:i + chunk], k[i:i + chunk], v[i:i + chunk],
                                                         scale=scale)
                          for i in range(0, batch, chunk)], dim=0)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
              backend: str | None = None) -> torch.Tensor:
    """Multi-head attention without mask or dropout; q (B,H,N,D), k/v (B,H,M,D) -> (B,H,N,D).

    ``scale`` defaults to ``D ** -0.5``; ``backend`` overrides the global choice for one call.
    """
    name = _backend if backend is None else backend
    if name == "sdpa":
        return _sdpa(q, k, v, scale)
    if name == "reference":
        return reference_attention(q, k, v, scale)
    raise InputError(f"unknown attention backend {name!r}; use one of {BACKENDS}")


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B,N,H*D) -> (B,H,N,D) as a view (no copy)."""
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).transpose(1, 2)  # (B,N,H,D) -> (B,H,N,D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B,H,N,D) -> (B,N,H*D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (B,N,H,D) -> (B,N,H*D)


__all__ = ["BACKENDS", "attention", "attention_backend", "get_attention_backend", "merge_heads",
           "reference_attention", "set_attention_backend", "split_heads"]
