"""Temporal Mamba: the pure-PyTorch selective scan against the plain recurrence (and against
mamba_ssm's CUDA kernel where one exists), the TemporalMamba module contract, and the Mamba UNet."""
from __future__ import annotations

import itertools
import logging

import pytest
import torch

from unianimate.errors import CheckpointError
from unianimate.models import UNetConfig, UniAnimateUNet
from unianimate.models import mamba
from unianimate.models.mamba import (MambaBlock, TemporalMamba, selective_scan, selective_scan_naive,
                                     selective_scan_ref)

logger = logging.getLogger(__name__)

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32 requirement: pure scan == naive recurrence to 1e-5


def _scan_inputs(seed: int, bt: int = 2, d: int = 3, L: int = 7, n: int = 4,
                 device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random scan inputs in mamba_ssm's layout (u, delta (Bt,D,L); A (D,N); B, C (Bt,N,L); ...)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device)

    return dict(
        u=rnd(bt, d, L).to(dtype),
        delta=(rnd(bt, d, L, scale=0.5) + 0.5).to(dtype),  # mostly positive before softplus
        A=-torch.exp(rnd(d, n, scale=0.5)),                 # negative real, fp32 (kernel convention)
        B=rnd(bt, n, L).to(dtype),
        C=rnd(bt, n, L).to(dtype),
        D=rnd(d),
        z=rnd(bt, d, L).to(dtype),
        delta_bias=rnd(d, scale=0.5),
    )


VARIANTS = list(itertools.product([False, True], repeat=4))  # (softplus, delta_bias, z, D)


def _kwargs(inputs: dict[str, torch.Tensor], softplus: bool, bias: bool, gate: bool, skip: bool) -> dict:
    return dict(D=inputs["D"] if skip else None, z=inputs["z"] if gate else None,
                delta_bias=inputs["delta_bias"] if bias else None, delta_softplus=softplus)


def _grads(fn, inputs: dict[str, torch.Tensor], kw_flags: tuple[bool, ...]) -> tuple[torch.Tensor, dict]:
    """Output and gradients of sum(y * w) w.r.t. every input that takes part in the call."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    kw = _kwargs(leaves, *kw_flags)
    y = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], **kw)
    w = torch.linspace(-1.0, 1.0, y.numel()).view_as(y)  # a fixed non-uniform cotangent
    (y * w).sum().backward()
    return y.detach(), {k: v.grad for k, v in leaves.items() if v.grad is not None}


@pytest.mark.parametrize("softplus,bias,gate,skip", VARIANTS)
def test_ref_scan_matches_naive_recurrence_forward_and_backward(softplus, bias, gate, skip):
    inputs = _scan_inputs(seed=sum(2 ** i * f for i, f in enumerate((softplus, bias, gate, skip))))
    flags = (softplus, bias, gate, skip)
    y_ref, g_ref = _grads(selective_scan_ref, inputs, flags)
    y_naive, g_naive = _grads(selective_scan_naive, inputs, flags)
    torch.testing.assert_close(y_ref, y_naive, **TOL)
    expected = {"u", "delta", "A", "B", "C"} | ({"D"} if skip else set()) | ({"z"} if gate else set()) \
        | ({"delta_bias"} if bias else set())
    assert set(g_ref) == set(g_naive) == expected
    for name in expected:
        torch.testing.assert_close(g_ref[name], g_naive[name], **TOL, msg=lambda m: f"d/d{name}: {m}")


@pytest.mark.parametrize("chunk_elements", [1, 2 * 3 * 4 * 3, 1 << 24])
def test_ref_scan_chunking_and_inference_path(monkeypatch, chunk_elements):
    """Chunks of 1, 3 and all frames, with and without autograd, give the naive result."""
    monkeypatch.setattr(mamba, "_SCAN_CHUNK_ELEMENTS", chunk_elements)
    inputs = _scan_inputs(seed=11, L=10)
    kw = _kwargs(inputs, True, True, True, True)
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"])
    y_naive, h_naive = selective_scan_naive(*args, **kw, return_last_state=True)
    with torch.inference_mode():
        y_inf, h_inf = selective_scan_ref(*args, **kw, return_last_state=True)
    torch.testing.assert_close(y_inf, y_naive, **TOL)
    torch.testing.assert_close(h_inf, h_naive, **TOL)
    y_grad, g_ref = _grads(selective_scan_ref, inputs, (True, True, True, True))
    _, g_naive = _grads(selective_scan_naive, inputs, (True, True, True, True))
    torch.testing.assert_close(y_grad, y_naive, **TOL)
    for name in g_naive:
        torch.testing.assert_close(g_ref[name], g_naive[name], **TOL)


def test_ref_scan_other_bc_layouts():
    """(D,N) time-invariant and (Bt,G,N,L) grouped B/C agree with per-channel naive scans."""
    inputs = _scan_inputs(seed=5, bt=2, d=4, L=6, n=3)
    u, delta, A = inputs["u"], inputs["delta"], inputs["A"]
    g = torch.Generator().manual_seed(6)
    B_g, C_g = torch.randn(2, 2, 3, 6, generator=g), torch.randn(2, 2, 3, 6, generator=g)  # G = 2 groups
    B_c, C_c = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)  # constant over time
    y_g = selective_scan_ref(u, delta, A, B_g, C_g, delta_softplus=True)
    y_c = selective_scan_ref(u, delta, A, B_c, C_c, delta_softplus=True)
    for ch in range(4):
        sl = slice(ch, ch + 1)
        grp = ch // 2
        want_g = selective_scan_naive(u[:, sl], delta[:, sl], A[sl], B_g[:, grp], C_g[:, grp], delta_softplus=True)
        torch.testing.assert_close(y_g[:, sl], want_g, **TOL)
        B_t = B_c[ch][None, :, None].expand(2, 3, 6)  # (N,) -> (Bt,N,L)
        C_t = C_c[ch][None, :, None].expand(2, 3, 6)
        want_c = selective_scan_naive(u[:, sl], delta[:, sl], A[sl], B_t, C_t, delta_softplus=True)
        torch.testing.assert_close(y_c[:, sl], want_c, **TOL)


def test_ref_scan_keeps_input_dtype_and_dispatch_on_cpu():
    inputs = _scan_inputs(seed=3, dtype=torch.bfloat16)
    y = selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"],
                       inputs["z"], inputs["delta_bias"], True)
    assert y.dtype == torch.bfloat16 and y.shape == inputs["u"].shape
    assert not mamba.fast_path_available("cpu")


# --------------------------------------------------------------------------------------------
# mamba_ssm's fused kernel vs the pure scan (needs CUDA and the mamba-ssm package)
# --------------------------------------------------------------------------------------------

GPU_TOL = {  # (forward rtol, atol), gradients get twice these; mamba_ssm computes in fp32 inside
    torch.float32: (1e-3, 2e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(GPU_TOL), ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("gate", [False, True])
def test_mamba_ssm_kernel_matches_pure_scan(dtype, gate):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ssi = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    inputs = _scan_inputs(seed=21, bt=2, d=64, L=33, n=16, device="cuda", dtype=dtype)
    flags = (True, True, gate, True)
    y_k, g_k = _grads(lambda *a, **k: ssi.selective_scan_fn(*a, **k), inputs, flags)
    y_r, g_r = _grads(selective_scan_ref, inputs, flags)
    rtol, atol = GPU_TOL[dtype]
    torch.testing.assert_close(y_k.float(), y_r.float(), rtol=rtol, atol=atol)
    assert set(g_k) == set(g_r)
    for name in g_r:
        torch.testing.assert_close(g_k[name].float(), g_r[name].float(), rtol=2 * rtol, atol=2 * atol,
                                   msg=lambda m: f"d/d{name} ({dtype}): {m}")
    # the module dispatches to the kernel on CUDA
    assert mamba.fast_path_available("cuda")


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------

def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Non-zero output projection so that a block's mixing is visible (it starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("out_proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)


def test_temporal_mamba_shape_and_identity_at_init():
    torch.manual_seed(0)
    m = TemporalMamba(64, d_state=8)
    x = torch.randn(2, 64, 5, 3, 4)  # (B,C,F+1,h,w)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=0, rtol=0)  # zero-initialised out_proj: exactly the identity
    # ... and still trainable: gradients reach the out_proj (and, through it, nothing else yet)
    y.sum().backward()
    assert m.mamba.out_proj.weight.grad is not None and m.mamba.out_proj.weight.grad.abs().sum() > 0


def test_temporal_mamba_from_unet_config():
    cfg = UNetConfig.tiny(temporal_module="mamba", mamba_d_state=8, mamba_d_conv=3, mamba_expand=1)
    m = TemporalMamba.from_unet_config(cfg, 64)
    assert (m.mamba.d_state, m.mamba.d_conv, m.mamba.expand, m.mamba.d_inner) == (8, 3, 1, 64)
    assert m.mamba.bwd is not None and m.norm.eps == 1e-6 and m.norm.num_groups == 32


def _frame_influence(block: torch.nn.Module, changed_frame: int) -> torch.Tensor:
    """Max output change at every frame when one input frame changes; (L,)."""
    torch.manual_seed(1)
    x = torch.randn(3, 9, 32)  # (Bt,L,d_model)
    x2 = x.clone()
    x2[:, changed_frame] += 1.0
    with torch.no_grad():
        return (block(x2) - block(x)).abs().amax(dim=(0, 2))


def test_mamba_block_unidirectional_is_causal_bidirectional_sees_the_future():
    torch.manual_seed(0)
    uni = MambaBlock(32, d_state=8, bidirectional=False)
    bi = MambaBlock(32, d_state=8, bidirectional=True)
    _randomise_(bi, 2)
    last = _frame_influence(uni, changed_frame=8)
    assert last[:8].max() == 0 and last[8] > 0            # a forward scan never looks ahead
    last_bi = _frame_influence(bi, changed_frame=8)
    assert (last_bi[:8] > 1e-6).all()                     # the backward scan carries frame 8 to 0..7
    first_bi = _frame_influence(bi, changed_frame=0)
    assert (first_bi[1:] > 1e-6).all()                    # and the forward scan carries frame 0 on


def test_temporal_mamba_mixes_frames_not_pixels():
    """A late frame moves the earlier frames of the SAME pixel; other pixels move only through the
    shared GroupNorm statistics, far less."""
    torch.manual_seed(0)
    m = TemporalMamba(32, d_state=8)
    _randomise_(m, 3)
    x = torch.randn(1, 32, 6, 4, 4)  # (B,C,F+1,h,w)
    x2 = x.clone()
    x2[:, :, 5, 0, 0] += 0.5  # last frame of pixel (0,0)
    with torch.no_grad():
        d = (m(x2) - m(x)).abs()
    assert d[:, :, :5, 0, 0].amax() > 1e-4
    assert d[:, :, :5, 1, 1].amax() < 0.1 * d[:, :, :5, 0, 0].amax()


def test_mamba_block_backward_runs_and_reaches_every_parameter():
    torch.manual_seed(0)
    blk = MambaBlock(32, d_state=4, bidirectional=True)
    _randomise_(blk, 4)
    blk(torch.randn(2, 7, 32)).square().mean().backward()
    missing = [n for n, p in blk.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


# --------------------------------------------------------------------------------------------
# The Mamba-configured UNet
# --------------------------------------------------------------------------------------------

def _unet_inputs(b: int = 1, f: int = 3, h: int = 4, w: int = 4, ctx: int = 32) -> dict:
    g = torch.Generator().manual_seed(7)
    return dict(x=torch.randn(b, 4, f, h, w, generator=g), t=torch.tensor([500] * b),
                text_context=torch.randn(1, 77, ctx, generator=g),
                image_embedding=torch.randn(b, ctx, generator=g),
                pose=torch.rand(b, 3, f, 8 * h, 8 * w, generator=g),
                ref_pose=torch.rand(b, 3, 8 * h, 8 * w, generator=g),
                ref_latent=torch.randn(b, 4, h, w, generator=g))


def test_mamba_unet_same_contract_and_parameter_count():
    torch.manual_seed(0)
    unet_t = UniAnimateUNet(UNetConfig.tiny()).eval()
    unet_m = UniAnimateUNet(UNetConfig.tiny(temporal_module="mamba")).eval()
    assert not any(isinstance(mod, TemporalMamba) for mod in unet_t.modules())
    n_mamba_layers = sum(isinstance(mod, TemporalMamba) for mod in unet_m.modules())
    assert n_mamba_layers == sum(type(mod).__name__ == "TemporalTransformer" for mod in unet_t.modules()) > 0
    inputs = _unet_inputs()
    with torch.no_grad():
        v_t, v_m = unet_t(**inputs), unet_m(**inputs)
    assert v_m.shape == v_t.shape == inputs["x"].shape and v_m.dtype == v_t.dtype
    assert torch.isfinite(v_m).all()
    n_t, n_m = unet_t.num_parameters(), unet_m.num_parameters()
    temporal_t = sum(p.numel() for mod in unet_t.modules() if type(mod).__name__ == "TemporalTransformer"
                     for p in mod.parameters())
    temporal_m = sum(p.numel() for mod in unet_m.modules() if isinstance(mod, TemporalMamba)
                     for p in mod.parameters())
    logger.info("tiny UNet parameters: transformer %d (temporal %d), mamba %d (temporal %d)",
                n_t, temporal_t, n_m, temporal_m)
    assert n_t - temporal_t == n_m - temporal_m  # only the temporal layers differ
    assert temporal_m < temporal_t


def test_mamba_unet_state_dict_round_trip(tmp_path):
    cfg = UNetConfig.tiny(temporal_module="mamba")
    src = UniAnimateUNet(cfg).init_random_weights_(seed=1).eval()
    path = tmp_path / "mamba_unet.pth"
    torch.save(src.state_dict(), path)
    sd = torch.load(path, weights_only=True, map_location="cpu")
    assert any(".mamba.fwd.A_log" in k for k in sd) and any(".mamba.bwd.A_log" in k for k in sd)
    dst = UniAnimateUNet(cfg).init_random_weights_(seed=2).eval()
    dst.load_official_state_dict({"state_dict": sd})
    for k, v in dst.state_dict().items():
        torch.testing.assert_close(v, sd[k], atol=0, rtol=0)
    inputs = _unet_inputs(f=2)
    with torch.no_grad():
        torch.testing.assert_close(dst(**inputs), src(**inputs), atol=0, rtol=0)
    # a transformer checkpoint does not load into the Mamba UNet (nor the reverse): keys differ
    sd_t = UniAnimateUNet(UNetConfig.tiny()).state_dict()
    with pytest.raises(CheckpointError):
        dst.load_official_state_dict(sd_t)
    with pytest.raises(CheckpointError):
        UniAnimateUNet(UNetConfig.tiny()).load_official_state_dict(sd)
