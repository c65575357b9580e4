"""Building blocks of the UniAnimate UNet (spec §3.4), with the reference's state-dict names.

Spatial layers see frames folded into the batch, ``(B*F, C, h, w)``; temporal layers see
``(B, C, F, h, w)``. Zero-initialised exactly where the reference zero-initialises: ResBlock
``out_layers`` last conv, temporal-conv ``conv4`` conv, transformer ``proj_out`` (weight and bias).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention, merge_heads, split_heads


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (the reference's ``zero_module``) and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos, sin] timestep embedding of the raw (integer) timesteps; t (B,) -> (B, dim) float32."""
    half = dim // 2
    t = t.float()
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32).div(half))
    args = torch.outer(t, freqs)  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)  # (B, dim)
    return emb


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None. Keys: to_q/k/v, to_out.0."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of ``context`` (b,M,Cc): ``(to_k(context), to_v(context))``, each (b,M,H*D).

        They depend on the context only, so a caller whose context is fixed over many calls (the
        sampler: one per segment) computes them once and passes them as ``forward(x, kv=...)``.
        """
        return self.to_k(context), self.to_v(context)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B,N,Cq), context (B,M,Cc) or None -> (B,N,Cq).

        ``kv``: :meth:`context_kv` of a context of b rows, b dividing B, where rows ``i*B/b ..
        (i+1)*B/b - 1`` of x all attend to context row i (frames folded into the batch share their
        context). The keys and values are repeated to the B rows (a copy, not a projection), so the
        attention runs on exactly the tensors of the call with the context repeated B/b times: the
        same bits (tests/test_unet.py). Folding a row's frames into one query sequence instead
        is not bit-identical for every shape (SDPA takes another kernel for one-token queries).
        """
        if kv is None:
            context = x if context is None else context
            kv = self.context_kv(context)
        elif context is not None:
            raise ValueError("pass context or kv, not both")
        k, v = kv
        b = x.shape[0]
        if b % k.shape[0]:
            raise ValueError(f"keys/values of {k.shape[0]} context rows do not divide a batch of {b}")
        if k.shape[0] != b:
            k, v = (t.repeat_interleave(b // t.shape[0], dim=0) for t in (k, v))  # (b,M,H*D) -> (B,M,H*D)
        q = split_heads(self.to_q(x), self.heads)  # (B,H,N,D)
        k, v = split_heads(k, self.heads), split_heads(v, self.heads)  # (B,H,M,D)
        out = attention(q, k, v, scale=self.dim_head ** -0.5)  # (B,H,N,D)
        out = merge_heads(out)  # (B,N,H*D)
        return self.to_out(out)  # (B,N,Cq)


class GEGLU(nn.Module):
    """Linear(C, 2*inner) split into [h, gate]; h * GELU(gate) (exact erf GELU)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled() and (h.requires_grad or gate.requires_grad):
            return h * F.gelu(gate)
        # inference: multiply into GELU's fresh output instead of a third tensor (x * y == y * x exactly)
        return F.gelu(gate).mul_(h)


FF_CHUNK_BYTES = 32 * 1024 * 1024
"""Inference on CPU fp32: the feed-forward runs over chunks of token rows whose GEGLU projection
(rows, 2*inner) stays within this many bytes. That projection is the UNet's largest activation;
glibc serves every allocation over 32 MiB (its largest mmap threshold) with a fresh mmap and unmaps it
on free, so the unchunked one is page-faulted in again at every step. 0 turns chunking off."""

FF_CHUNK_MIN_ROWS = 1024
"""Fewest rows per chunk. A row's result is the same bits whatever the rows around it only while
MKL's sgemm keeps the kernel and thread split it uses for many rows. Measured on one AVX-512 CPU
(bench/ff_chunk_bitcheck.py; torch 2.14, MKL 2024.2) against 6912-9216 rows: other bits below 16
rows at 1 thread, up to 512 rows at 2 threads, up to 384 rows at 4 threads; the same bits from 768
rows on. Other CPUs, BLAS builds or thread counts may differ (not measured)."""

#: chunk only up to this many torch threads: FF_CHUNK_MIN_ROWS gives the same bits as one call
#: at 1, 2 and 4 threads (measured); more threads were never measured, so they run unchunked
FF_CHUNK_MAX_THREADS = 4


class FeedForward(nn.Module):
    """GEGLU feed-forward, keys ``net.0.proj`` and ``net.2`` (inner width 4*dim).

    Under inference (no grad, eval) on CPU fp32 it runs over chunks of token rows
    (:data:`FF_CHUNK_BYTES`), each copied into one preallocated output: the same bits
    (tests/test_unet.py), a smaller largest activation. With gradients, in training mode, on other
    devices or dtypes it is the plain ``net(x)``. No parameters or buffers added: the state dict is
    unchanged.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))
        self.chunk_bytes = FF_CHUNK_BYTES  # per instance, so a test or bench can switch it

    def n_chunks(self, x: torch.Tensor) -> int:
        """Chunks of token rows for x (..., dim): 1 (one plain call) unless inference (no grad, eval)
        on CPU fp32 with a GEGLU projection over :attr:`chunk_bytes` and at least 2 *
        :data:`FF_CHUNK_MIN_ROWS` rows."""
        if (self.chunk_bytes <= 0 or self.training or torch.is_grad_enabled()
                or x.device.type != "cpu" or x.dtype != torch.float32
                or torch.get_num_threads() > FF_CHUNK_MAX_THREADS):
            return 1
        rows = x.numel() // x.shape[-1]
        per_row = self.net[0].proj.out_features * x.element_size()  # bytes of one GEGLU projection row
        wanted = -(-rows * per_row // self.chunk_bytes)  # ceil
        return max(1, min(wanted, rows // FF_CHUNK_MIN_ROWS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., dim) -> (..., dim)."""
        n = self.n_chunks(x)
        if n == 1:
            return self.net(x)
        flat = x.reshape(-1, x.shape[-1])  # (..., dim) -> (N, dim)
        rows = flat.shape[0]
        out = flat.new_empty(rows, self.net[2].out_features)  # (N, dim)
        bounds = [i * rows // n for i in range(n + 1)]  # n chunks of rows // n or rows // n + 1 rows
        for a, b in zip(bounds[:-1], bounds[1:]):
            out[a:b] = self.net(flat[a:b])  # (b-a, dim) -> (b-a, dim)
        return out.view(*x.shape[:-1], out.shape[-1])  # (N, dim) -> (..., dim)


class BasicTransformerBlock(nn.Module):
    """x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x)."""

    def __init__(self, dim: int, n_heads: int, d_head: int, dropout: float = 0.0,
                 context_dim: int | None = None) -> None:
        super().__init__()
        # attribute order = the reference's state-dict order: attn1, ff, attn2, norm1..3
        self.attn1 = CrossAttention(dim, None, n_heads, d_head, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``kv``: attn2's keys and values precomputed from the context (:meth:`CrossAttention.forward`)."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context, kv=kv) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Linear-projection spatial transformer over the h*w tokens of each frame, cross-attending to context."""

    def __init__(self, channels: int, n_heads: int, d_head: int, context_dim: int,
                 dropout: float = 0.0, groups: int = 32) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, dropout, context_dim=context_dim)])
        # the reference builds Linear(in_channels, inner): same shape as (inner -> C) when inner == C
        self.proj_out = zero_(nn.Linear(inner, channels))

    def context_kv(self, context: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per transformer block, the cross-attention keys and values of ``context`` (b,M,Cc)."""
        return tuple(block.attn2.context_kv(context) for block in self.transformer_blocks)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                kv: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None) -> torch.Tensor:
        """x (N,C,h,w), context (N,M,Cc) -> (N,C,h,w); or ``kv`` = :meth:`context_kv` of a context of
        b rows (b dividing N, frames of a row consecutive) instead of ``context``."""
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N,C,h*w) -> (N,h*w,C)
        tokens = self.proj_in(tokens)
        for i, block in enumerate(self.transformer_blocks):
            tokens = block(tokens, context) if kv is None else block(tokens, kv=kv[i])
        tokens = self.proj_out(tokens)  # (N,h*w,C)
        return tokens.transpose(1, 2).reshape(n, c, h, w) + x  # (N,C,h*w) -> (N,C,h,w)


class TemporalTransformer(nn.Module):
    """Self-attention over the frames of each pixel (no positional encoding, no mask).

    Both attn1 and attn2 of its block are self-attention. ``proj_in``/``proj_out`` are 1x1 Conv1d in
    the state dict; they are applied as linear maps on (pixels, frames, C) tokens (same numbers).
    """

    def __init__(self, channels: int, n_heads: int, d_head: int, dropout: float = 0.0,
                 groups: int = 32) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, n_heads, d_head, dropout, context_dim=None)])
        self.proj_out = zero_(nn.Conv1d(inner, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,C,F,h,w) -> (B,C,F,h,w)."""
        b, c, f, h, w = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)  # (B,h,w,F,C) -> (Bhw,F,C)
        tokens = F.linear(tokens, self.proj_in.weight.squeeze(-1), self.proj_in.bias)  # (Bhw,F,inner)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = F.linear(tokens, self.proj_out.weight.squeeze(-1), self.proj_out.bias)  # (Bhw,F,C)
        out = tokens.view(b, h, w, f, c).permute(0, 4, 3, 1, 2)  # (B,h,w,F,C) -> (B,C,F,h,w)
        return out + x


class TemporalConvBlock(nn.Module):
    """Four (GN, SiLU, [Dropout,] Conv3d (3,1,1)) stages over frames, residual; identity at init.

    Keys ``conv1.0/.2`` and ``conv2..4.0/.3``; GroupNorm sees the frame axis (5-D input).
    """

    def __init__(self, channels: int, dropout: float = 0.1, groups: int = 32) -> None:
        super().__init__()

        def conv() -> nn.Conv3d:
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv3 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv4 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        zero_(self.conv4[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,C,F,h,w) -> (B,C,F,h,w).

        Runs on (B,C,F,h*w): GroupNorm statistics are the same, and each (3,1,1) Conv3d is applied as
        the equivalent (3,1) Conv2d, which takes CPU's fast oneDNN path instead of slow_conv3d.
        """
        b, c, f, h, w = x.shape
        y = x.reshape(b, c, f, h * w)  # (B,C,F,h*w)
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            for module in stage:
                if isinstance(module, nn.Conv3d):
                    y = F.conv2d(y, module.weight.squeeze(-1), module.bias, padding=(1, 0))  # (B,C,F,h*w)
                else:
                    y = module(y)
        return x + y.view(b, c, f, h, w)  # (B,C,F,h*w) -> (B,C,F,h,w)


class ResBlock(nn.Module):
    """GN/SiLU/Conv, + time embedding, GN/SiLU/Dropout/Conv, skip; then the temporal conv block
    (stored under the reference's misspelt name ``temopral_conv``)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float,
                 out_channels: int | None = None, groups: int = 32, temporal_dropout: float = 0.1) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))
        # the reference hard-codes dropout 0.1 here whatever the config says (UNetConfig.temporal_dropout)
        self.temopral_conv = TemporalConvBlock(out_channels, dropout=temporal_dropout, groups=groups)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        """x (B*F,Cin,h,w), emb (B*F,E) -> (B*F,Cout,h,w)."""
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B*F,Cout) -> (B*F,Cout,1,1)
        h = self.skip_connection(x) + self.out_layers(h)
        n, c, hh, ww = h.shape
        h5 = h.view(batch, n // batch, c, hh, ww).transpose(1, 2)  # (B,F,C,h,w) -> (B,C,F,h,w)
        h5 = self.temopral_conv(h5)
        return h5.transpose(1, 2).reshape(n, c, hh, ww)  # (B,F,C,h,w) -> (B*F,C,h,w)


class Downsample(nn.Module):
    """Conv2d 3x3 stride 2 (key ``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then Conv2d 3x3 (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
