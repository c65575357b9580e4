"""Temporal Mamba: a bidirectional selective state-space scan over the frame axis (spec §3.5).

The paper's alternative to the temporal transformer. No Mamba weights were released: a UNet built
with ``UNetConfig(temporal_module="mamba")`` starts from random temporal layers (zero-initialised
output projections, so each fresh layer is the identity) and is meant for experiments and training.

Two implementations of the selective scan sit behind one signature (that of ``mamba_ssm``'s
``selective_scan_fn``):

* ``selective_scan_ref``: pure PyTorch, runs everywhere (CPU, CUDA, MPS), fp32 internally.
* ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``: the fused CUDA kernel, used by
  ``selective_scan`` when the package imports and the tensors are on CUDA.

``selective_scan_naive`` is the plainest possible statement of the recurrence, kept for the tests.

Shapes (mamba_ssm's names): ``Bt`` batch (here: batch x pixels), ``D`` channels (d_inner),
``L`` sequence length (here: frames, reference slot included), ``N`` state size (d_state).
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "selective_scan_naive",
    "fast_path_available",
    "MambaBlock",
    "TemporalMamba",
]

# Upper bound on the elements of one chunk buffer of the pure scan, (Bt, D, T, N) fp32: 2**24
# elements = 64 MiB. Keeps the pure path's extra memory constant in L (linear cost in frames).
_SCAN_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# Optional CUDA kernels (imported lazily: importing this module never imports mamba_ssm)
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _mamba_ssm_scan() -> Callable[..., Any] | None:
    """``mamba_ssm``'s fused ``selective_scan_fn``, or None when the package does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as exc:  # mamba-ssm only builds with a CUDA toolkit
        logger.debug("mamba_ssm unavailable, using the pure-PyTorch selective scan: %s", exc)
        return None
    return selective_scan_fn


@functools.lru_cache(maxsize=None)
def _causal_conv1d() -> Callable[..., Any] | None:
    """``causal_conv1d.causal_conv1d_fn`` (fused CUDA kernel), or None when it does not import."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError as exc:
        logger.debug("causal_conv1d unavailable, using F.conv1d: %s", exc)
        return None
    return causal_conv1d_fn


def fast_path_available(device: torch.device | str | None = None) -> bool:
    """True when ``selective_scan`` would use mamba_ssm's kernel for tensors on ``device``."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    return torch.cuda.is_available() and _mamba_ssm_scan() is not None


# --------------------------------------------------------------------------------------------
# Selective scan
# --------------------------------------------------------------------------------------------

def _discretise_inputs(u: Tensor, delta: Tensor, delta_bias: Tensor | None,
                       delta_softplus: bool) -> tuple[Tensor, Tensor]:
    """Upcast u and delta to fp32 and apply the bias and softplus to delta (kernel semantics)."""
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]  # (Bt,D,L) + (D,1)
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta


def _bc_at(M: Tensor, t0: int, t1: int, d: int) -> Tensor:
    """B or C for frames t0..t1-1, frame-major, as a tensor broadcastable to (T, Bt, D, N).

    Accepts mamba_ssm's three layouts: (D, N) time-invariant, (Bt, N, L) input-dependent and
    shared by all channels, (Bt, G, N, L) input-dependent per group of D/G channels.
    """
    M = M.float()
    if M.dim() == 2:  # (D,N) -> (1,1,D,N)
        return M[None, None]
    if M.dim() == 3:  # (Bt,N,L) -> (Bt,N,T) -> (T,Bt,N) -> (T,Bt,1,N)
        return M[:, :, t0:t1].permute(2, 0, 1)[:, :, None]
    if M.dim() == 4:  # (Bt,G,N,L) -> (T,Bt,G,N) -> (T,Bt,D,N), channel c uses group c // (D/G)
        g = M.shape[1]
        if d % g:
            raise ValueError(f"channels {d} not divisible by {g} groups of B/C")
        return M[..., t0:t1].permute(3, 0, 1, 2).repeat_interleave(d // g, dim=2)
    raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(M.shape)}")


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Tensor | None = None, z: Tensor | None = None,
                       delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan in pure PyTorch; same signature and semantics as mamba_ssm's selective_scan_fn.

    For every batch row b and channel d (state h in R^N, h_{-1} = 0):
        dt_t = softplus(delta_t + delta_bias)      (bias and softplus optional)
        h_t  = exp(dt_t * A_d) * h_{t-1} + dt_t * B_t * u_t
        y_t  = <C_t, h_t> + D_d * u_t,   then y_t *= silu(z_t) when z is given.

    Args: u, delta (Bt,D,L); A (D,N) real (negative for a stable scan); B, C (Bt,N,L)
    input-dependent (also (D,N) or (Bt,G,N,L)); D (D,); z (Bt,D,L); delta_bias (D,).
    Returns y (Bt,D,L) in u's dtype, and the last state (Bt,D,N) fp32 if ``return_last_state``.

    How: the frame axis is cut into chunks of T frames sized so that a (T,Bt,D,N) fp32 buffer
    stays under 64 MiB. Per chunk, the discretised decay exp(dt A) and input dt B u are computed
    for all T frames at once (vectorised); then a short loop over the T frames runs the recurrence
    with one fused multiply-add on the (Bt,D,N) state; then C contracts the T states in one
    batched matmul. The work is linear in L and the extra memory is bounded whatever L is.
    Frames are few (L = F + 1 <= a few hundred), so the loop is cheap; a log-space parallel scan
    was rejected because exp(-cumsum(dt A)) overflows for long chunks once dt is trained large.
    Computes in fp32 like the CUDA kernel; differentiable (autograd through the loop).
    """
    if A.is_complex():
        raise NotImplementedError("complex A is not supported by the pure-PyTorch scan")
    dtype_in = u.dtype
    u, delta = _discretise_inputs(u, delta, delta_bias, delta_softplus)
    bt, d, L = u.shape
    n = A.shape[1]
    A = A.float()
    chunk = max(1, min(L, _SCAN_CHUNK_ELEMENTS // max(1, bt * d * n)))

    # With autograd, every step allocates (differentiable). Without it (inference), two chunk
    # buffers are reused and the drive buffer is turned into the states in place: fewer, warm
    # allocations (fresh 64 MiB buffers cost page faults on CPU), no stack copy.
    track_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    if not track_grad:
        decay_buf = u.new_empty(chunk, bt, d, n)                        # (T,Bt,D,N)
        drive_buf = u.new_empty(chunk, bt, d, n)                        # (T,Bt,D,N)
    h = u.new_zeros(bt, d, n)  # (Bt,D,N) state carried across chunks
    ys = []
    for t0 in range(0, L, chunk):
        t1 = min(L, t0 + chunk)
        # Frame-major layout (T,Bt,D,N) so that each frame's slice is contiguous.
        dt = delta[:, :, t0:t1].permute(2, 0, 1).contiguous()[..., None]  # (Bt,D,T) -> (T,Bt,D,1)
        dtu = dt * u[:, :, t0:t1].permute(2, 0, 1)[..., None]          # (T,Bt,D,1)
        b_t = _bc_at(B, t0, t1, d)                                      # broadcasts to (T,Bt,D,N)
        if track_grad:
            decay = torch.exp(dt * A)                                   # (T,Bt,D,N)
            drive = dtu * b_t                                           # (T,Bt,D,N)
            states = []
            for i in range(t1 - t0):
                h = torch.addcmul(drive[i], decay[i], h)                # h = decay*h + drive, (Bt,D,N)
                states.append(h)
            hs = torch.stack(states)                                    # (T,Bt,D,N)
        else:
            decay = torch.mul(dt, A, out=decay_buf[: t1 - t0]).exp_()   # (T,Bt,D,N)
            hs = torch.mul(dtu, b_t, out=drive_buf[: t1 - t0])          # (T,Bt,D,N), drive, then states
            hs[0].addcmul_(decay[0], h)
            for i in range(1, t1 - t0):
                hs[i].addcmul_(decay[i], hs[i - 1])                     # in place, (Bt,D,N)
        h = hs[-1].clone() if not track_grad else hs[-1]                # (Bt,D,N), outlives the buffer
        c_t = _bc_at(C, t0, t1, d)
        if c_t.shape[-2] == 1:  # one C for all channels: a batched matvec
            y_c = torch.matmul(hs, c_t.transpose(-1, -2))[..., 0]       # (T,Bt,D,N)@(T,Bt,N,1) -> (T,Bt,D)
        else:                   # C per channel (time-invariant or grouped)
            y_c = (hs * c_t).sum(-1)                                    # (T,Bt,D)
        ys.append(y_c.permute(1, 2, 0))                                 # (T,Bt,D) -> (Bt,D,T)
    y = torch.cat(ys, dim=2)                                            # (Bt,D,L)
    if D is not None:
        y = y + D.float()[:, None] * u                                  # (D,1) * (Bt,D,L)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y


def selective_scan_naive(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Tensor | None = None, z: Tensor | None = None,
                         delta_bias: Tensor | None = None, delta_softplus: bool = False,
                         return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The recurrence written as plainly as possible, one (row, channel, frame) at a time.

    Same signature and result as ``selective_scan_ref``, but only the (Bt,N,L) layout of B and C.
    O(Bt*D*L) Python steps: for tests on small tensors only.
    """
    dtype_in = u.dtype
    u, delta = _discretise_inputs(u, delta, delta_bias, delta_softplus)
    A, B, C = A.float(), B.float(), C.float()
    bt, d, L = u.shape
    rows, last = [], []
    for b in range(bt):
        chans, chan_last = [], []
        for c in range(d):
            h = torch.zeros(A.shape[1], dtype=torch.float32, device=u.device)  # (N,)
            outs = []
            for t in range(L):
                h = torch.exp(delta[b, c, t] * A[c]) * h + delta[b, c, t] * B[b, :, t] * u[b, c, t]
                y = (C[b, :, t] * h).sum()
                if D is not None:
                    y = y + D[c].float() * u[b, c, t]
                if z is not None:
                    y = y * F.silu(z[b, c, t].float())
                outs.append(y)
            chans.append(torch.stack(outs))
            chan_last.append(h)
        rows.append(torch.stack(chans))
        last.append(torch.stack(chan_last))
    y = torch.stack(rows).to(dtype_in)  # (Bt,D,L)
    return (y, torch.stack(last)) if return_last_state else y


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, z: Tensor | None = None,
                   delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """mamba_ssm's fused kernel for CUDA tensors when it imports, else ``selective_scan_ref``."""
    fused = _mamba_ssm_scan() if u.is_cuda else None
    fn = fused if fused is not None else selective_scan_ref
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, use_fast_path: bool = True) -> Tensor:
    """Depthwise causal conv over the last axis, then SiLU: x (Bt,D,L), weight (D,1,K) -> (Bt,D,L).

    Output t sees inputs t-K+1..t (zero left padding). Uses causal_conv1d's kernel on CUDA if present.
    """
    fused = _causal_conv1d() if (use_fast_path and x.is_cuda) else None
    if fused is not None:
        # channel-first contiguous input: the kernel's channel-last path has extra layout limits
        return fused(x.contiguous(), weight[:, 0, :], bias, activation="silu")  # weight (D,1,K) -> (D,K)
    k = weight.shape[-1]
    x = F.pad(x, (k - 1, 0))  # (Bt,D,L) -> (Bt,D,K-1+L): left padding only, so no future frame leaks in
    return F.silu(F.conv1d(x, weight, bias, groups=weight.shape[0]))  # (Bt,D,L)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------

class _SSMBranch(nn.Module):
    """One scan direction: causal depthwise conv, input-dependent (dt, B, C), selective scan.

    Mamba-1 initialisation: A = -(1..N) per channel (S4D-real, stored as A_log), D = 1,
    dt_proj bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] (floored at
    dt_init_floor), dt_proj weight uniform(+-dt_rank^-0.5).
    """

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int,
                 dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
                                  .repeat(d_inner, 1))  # (D,N)
        self.D = nn.Parameter(torch.ones(d_inner))
        self._dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_dt()

    @torch.no_grad()
    def reset_dt(self) -> None:
        """(Re)draw the dt projection so that softplus(bias) starts in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self._dt_init
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: Tensor, z: Tensor, use_fast_path: bool = True) -> Tensor:
        """x, z (Bt,D,L) -> gated scan output y * silu(z), (Bt,D,L)."""
        bt, _, L = x.shape
        x = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, use_fast_path)   # (Bt,D,L)
        x_dbl = self.x_proj(x.transpose(1, 2))                                      # (Bt,L,R+2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)                   # (Bt,D,L), bias in the scan
        B = B.transpose(1, 2)                                                       # (Bt,N,L)
        C = C.transpose(1, 2)                                                       # (Bt,N,L)
        A = -torch.exp(self.A_log.float())                                          # (D,N)
        scan = selective_scan if use_fast_path else selective_scan_ref
        return scan(x, delta, A, B, C, self.D.float(), z=z,
                    delta_bias=self.dt_proj.bias.float(), delta_softplus=True)


class MambaBlock(nn.Module):
    """A Mamba(-1) mixer over a sequence, (Bt, L, d_model) -> (Bt, L, d_model).

    in_proj -> (x, z); x -> depthwise causal conv1d -> SiLU -> x_proj (dt, B, C) -> dt_proj ->
    selective scan -> gate by silu(z) -> out_proj. With ``bidirectional`` (Vision Mamba "v2"
    design) a second branch with its own conv, x_proj, dt_proj, A and D scans the reversed
    sequence; in_proj, the gate z and out_proj are shared, and out_proj sees the mean of the two
    directions. ``zero_out`` zero-initialises out_proj so that the block outputs zeros at init.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, bidirectional: bool = False, zero_out: bool = False,
                 use_fast_path: bool = True) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        self.use_fast_path = use_fast_path
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        branch = functools.partial(_SSMBranch, self.d_inner, d_state, d_conv, self.dt_rank,
                                   dt_min, dt_max, dt_init_floor)
        self.fwd = branch()
        self.bwd = branch() if bidirectional else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        if zero_out:
            nn.init.zeros_(self.out_proj.weight)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (Bt, L, d_model) -> (Bt, L, d_model)."""
        xz = self.in_proj(hidden).transpose(1, 2)  # (Bt,L,2D) -> (Bt,2D,L)
        x, z = xz.chunk(2, dim=1)                  # (Bt,D,L) each
        y = self.fwd(x, z, self.use_fast_path)     # (Bt,D,L)
        if self.bwd is not None:
            # Scan the reversed frames, then flip back: y_b[t] summarises frames t..L-1.
            y_b = self.bwd(x.flip(-1), z.flip(-1), self.use_fast_path).flip(-1)  # (Bt,D,L)
            y = (y + y_b) * 0.5
        return self.out_proj(y.transpose(1, 2))    # (Bt,L,D) -> (Bt,L,d_model)


class TemporalMamba(nn.Module):
    """Drop-in replacement for the UNet's TemporalTransformer: (B,C,F,h,w) -> (B,C,F,h,w).

    GroupNorm(32, eps 1e-6) over the 5-D tensor (as the temporal transformer), tokens = the
    frames of each pixel, ``(b h w) f c``, one bidirectional ``MambaBlock`` (forward and backward
    scans over frames), residual. The block's out_proj is zero-initialised so a fresh layer is the
    identity, like the temporal transformer's proj_out. The UNet hands it F+1 frames: the
    reference slot is frame 0, so the forward scan reads the reference first and the backward
    scan reads it last. No Mamba weights were released (spec §3.5).
    """

    def __init__(self, channels: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 norm_groups: int = 32, norm_eps: float = 1e-6, bidirectional: bool = True,
                 use_fast_path: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.norm = nn.GroupNorm(norm_groups, channels, eps=norm_eps, affine=True)
        self.mamba = MambaBlock(channels, d_state=d_state, d_conv=d_conv, expand=expand,
                                bidirectional=bidirectional, zero_out=True,
                                use_fast_path=use_fast_path)

    @classmethod
    def from_unet_config(cls, cfg: Any, channels: int) -> "TemporalMamba":
        """Build from a ``UNetConfig`` (fields mamba_d_state, mamba_d_conv, mamba_expand)."""
        return cls(channels, d_state=cfg.mamba_d_state, d_conv=cfg.mamba_d_conv,
                   expand=cfg.mamba_expand, norm_groups=cfg.norm_groups)

    def forward(self, x: Tensor) -> Tensor:
        """x (B,C,F,h,w) -> (B,C,F,h,w)."""
        b, c, f, h, w = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)  # (B,C,F,h,w) -> ((b h w),F,C)
        tokens = self.mamba(tokens)                                            # ((b h w),F,C)
        out = tokens.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)             # -> (B,C,F,h,w)
        return x + out
