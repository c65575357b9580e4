"""Attention backends: SDPA and the plain reference path agree; switching is explicit and scoped."""
from __future__ import annotations

import pytest
import torch

from unianimate.errors import InputError
from unianimate.models import UNetConfig, UniAnimateUNet
from unianimate.models import attention as attn_mod
from unianimate.models.attention import (attention, attention_backend, get_attention_backend,
                                         reference_attention, set_attention_backend)
from unianimate.models.layers import TemporalTransformer


@pytest.fixture(autouse=True)
def restore_backend():
    old = get_attention_backend()
    yield
    set_attention_backend(old)


@pytest.mark.parametrize("shape", [(2, 5, 81, 81, 64), (1, 2, 9, 9, 16), (3, 8, 17, 77, 32), (1024, 2, 33, 33, 8)])
def test_sdpa_matches_reference(shape):
    b, h, n, m, d = shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, n, d, generator=g)
    k = torch.randn(b, h, m, d, generator=g)
    v = torch.randn(b, h, m, d, generator=g)
    for scale in (None, 0.3):
        fused = attention(q, k, v, scale=scale, backend="sdpa")
        plain = attention(q, k, v, scale=scale, backend="reference")
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    # the plain path is literally softmax(q k^T * scale) v
    expected = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1) @ v
    torch.testing.assert_close(reference_attention(q, k, v), expected, rtol=1e-5, atol=1e-5)


def test_reference_chunks_over_batch(monkeypatch):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(7, 2, 10, 8, generator=g) for _ in range(3))
    whole = reference_attention(q, k, v)
    monkeypatch.setattr(attn_mod, "_REFERENCE_MAX_SCORES", 2 * 10 * 10 * 3)  # 3 samples per chunk
    torch.testing.assert_close(reference_attention(q, k, v), whole, rtol=0, atol=0)


def test_non_contiguous_head_views():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 20, 4 * 16, generator=g)
    q = x.view(3, 20, 4, 16).transpose(1, 2)  # (B,H,N,D) view, not contiguous
    assert not q.is_contiguous()
    torch.testing.assert_close(attention(q, q, q, backend="sdpa"), attention(q, q, q, backend="reference"),
                               rtol=1e-5, atol=1e-5)


def test_backend_selection_and_errors():
    set_attention_backend("reference")
    assert get_attention_backend() == "reference"
    with attention_backend("sdpa"):
        assert get_attention_backend() == "sdpa"
    assert get_attention_backend() == "reference"
    with pytest.raises(InputError, match="unknown attention backend 'xformers'"):
        set_attention_backend("xformers")
    with pytest.raises(InputError, match="unknown attention backend"):
        attention(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), backend="flash")


def test_unet_output_same_with_both_backends():
    model = UniAnimateUNet(UNetConfig.tiny()).eval().init_random_weights_(0)
    g = torch.Generator().manual_seed(0)
    args = dict(x=torch.randn(1, 4, 3, 8, 8, generator=g), t=torch.tensor([321]),
                text_context=torch.randn(1, 77, 32, generator=g), image_embedding=torch.randn(1, 32, generator=g),
                pose=torch.rand(1, 3, 3, 64, 64, generator=g), ref_pose=torch.rand(1, 3, 64, 64, generator=g),
                ref_latent=torch.randn(1, 4, 8, 8, generator=g))
    with torch.inference_mode():
        with attention_backend("sdpa"):
            fused = model(**args)
        with attention_backend("reference"):
            plain = model(**args)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_temporal_attention_long_sequence_both_backends():
    """Tokens are frames: 256 frames per pixel run through both paths and agree."""
    torch.manual_seed(0)
    layer = TemporalTransformer(32, 2, 16).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.1)
    x = torch.randn(1, 32, 256, 2, 2)
    with torch.inference_mode():
        with attention_backend("sdpa"):
            fused = layer(x)
        with attention_backend("reference"):
            plain = layer(x)
    assert fused.shape == x.shape
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)
