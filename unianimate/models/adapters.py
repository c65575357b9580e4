"""Condition adapters of spec §3.2: conv stacks to latent size, then a 1-layer frame transformer.

State-dict names are the reference's: ``<name>.{0,3,5}`` for pixel stacks (pose, first frame),
``<name>.{0,2,4}`` for the reference-latent stack, ``<name>_after.layers.0.{0,1}...`` for the frame
transformer. Nothing here is zero-initialised (the reference does not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention, merge_heads, split_heads


class HalfAdaptivePool(nn.Module):
    """``AdaptiveAvgPool2d((H/2, W/2))`` of the input's own size (the reference fixes the size from
    its configured resolution, which always equals the input size; for even H, W a 2x2 average).

    Even sizes take ``avg_pool2d(2)`` (the same numbers; its backward is far cheaper on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if h % 2 == 0 and w % 2 == 0:
            return F.avg_pool2d(x, 2)
        return F.adaptive_avg_pool2d(x, (h // 2, w // 2))


def pixel_stack(out_channels: int, hidden: int = 32) -> nn.Sequential:
    """(N,3,H,W) in [0,1] -> (N,out,H/8,W/8): Conv, SiLU, pool/2, Conv s2, SiLU, Conv s2."""
    return nn.Sequential(
        nn.Conv2d(3, hidden, 3, padding=1), nn.SiLU(), HalfAdaptivePool(),
        nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1))


def latent_stack(in_channels: int, out_channels: int, hidden: int = 32) -> nn.Sequential:
    """(N,4,h,w) latent -> (N,out,h,w): Conv, SiLU, Conv, SiLU, Conv (all 3x3, stride 1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1))


class FrameSelfAttention(nn.Module):
    """Fused-qkv attention (keys ``to_qkv``, ``to_out.0``): 2 heads of width ``dim`` each."""

    def __init__(self, dim: int, heads: int = 2, dim_head: int | None = None, dropout: float = 0.05) -> None:
        super().__init__()
        dim_head = dim if dim_head is None else dim_head
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N,F,C) -> (N,F,C)."""
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))  # 3 x (N,H,F,D)
        return self.to_out(merge_heads(attention(q, k, v, scale=self.scale)))  # (N,F,H*D) -> (N,F,C)


class PreNorm(nn.Module):
    """LayerNorm then ``fn``, plus the residual (keys ``norm``, ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


class GELUFeedForward(nn.Module):
    """Linear(d,4d), GELU, Dropout, Linear(4d,d) with NO norm (keys ``net.0.0``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU()),
                                 nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FrameTransformer(nn.Module):
    """The ``*_after`` adapter: a transformer over the FRAME axis of each pixel, tokens (b h w) f c."""

    def __init__(self, dim: int, depth: int = 1, heads: int = 2, dropout: float = 0.05) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNorm(dim, FrameSelfAttention(dim, heads, dim, dropout)),
                           GELUFeedForward(dim, 4, dropout)])
            for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N,F,C) -> (N,F,C); residuals around both attention and feed-forward."""
        for attn, ff in self.layers:
            x = attn(x)
            x = ff(x) + x
        return x

    def forward_video(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,C,F,h,w) -> (B,C,F,h,w): fold pixels into the batch, attend over frames."""
        b, c, f, h, w = x.shape
        tokens = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)  # (B,h,w,F,C) -> (Bhw,F,C)
        tokens = self.forward(tokens)
        return tokens.view(b, h, w, f, c).permute(0, 4, 3, 1, 2)  # (B,h,w,F,C) -> (B,C,F,h,w)
