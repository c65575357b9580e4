"""UniAnimateUNet: released key set and shapes, strict loading, condition wiring, zero-init, drop_conditions."""
from __future__ import annotations

import ast
import os
import dataclasses
from pathlib import Path

import pytest
import torch

from unianimate.errors import CheckpointError, InputError
from unianimate.models import UNetConfig, UniAnimateUNet, load_state_dict_file
from unianimate.models.checkpoint import validate_state_dict
from unianimate.models.attention import attention_backend
from unianimate.models import layers
from unianimate.models.layers import (GEGLU, CrossAttention, FeedForward, ResBlock, SpatialTransformer,
                                      TemporalConvBlock, TemporalTransformer, sinusoidal_embedding)

TSV = Path(__file__).parent / "data" / "official_unet_state_dict.tsv"
B, F, H, W = 2, 3, 8, 8  # latent size; pixels are 8x


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        assert dtype == "torch.float32"
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def tiny_model(seed: int = 0, **overrides) -> UniAnimateUNet:
    return UniAnimateUNet(UNetConfig.tiny(**overrides)).eval().init_random_weights_(seed)


def inputs(seed: int = 1, b: int = B, f: int = F, ctx_dim: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(b, 4, f, H, W, generator=g),
        t=torch.randint(0, 1000, (b,), generator=g),
        text_context=torch.randn(b, 77, ctx_dim, generator=g),
        image_embedding=torch.randn(b, ctx_dim, generator=g),
        pose=torch.rand(b, 3, f, 8 * H, 8 * W, generator=g),
        ref_pose=torch.rand(b, 3, 8 * H, 8 * W, generator=g),
        ref_latent=torch.randn(b, 4, H, W, generator=g),
        first_frame=torch.rand(b, 3, 8 * H, 8 * W, generator=g),
    )


def run(model: UniAnimateUNet, inp: dict, **changes) -> torch.Tensor:
    args = {**inp, **changes}
    with torch.inference_mode():
        return model(**args)


REFERENCE_MODE = ("image_embedding", "ref_latent", "pose", "ref_pose")
FIRST_FRAME_MODE = ("image_embedding", "first_frame", "pose")
ALL = ("image_embedding", "ref_latent", "pose", "ref_pose", "first_frame")
CONDITIONS = ALL


def only(inp: dict, names: tuple[str, ...]) -> dict:
    return {k: (v if k not in CONDITIONS or k in names else None) for k, v in inp.items()}


# ---------------------------------------------------------------- config

def test_config_defaults_are_released_config():
    cfg = UNetConfig()
    assert (cfg.in_dim, cfg.dim, cfg.context_dim, cfg.out_dim) == (4, 320, 1024, 4)
    assert cfg.dim_mult == (1, 2, 4, 4) and cfg.attn_scales == (1.0, 0.5, 0.25)
    assert (cfg.num_heads, cfg.head_dim, cfg.num_res_blocks, cfg.concat_dim, cfg.num_tokens) == (8, 64, 2, 8, 4)
    assert cfg.dropout == 0.1 and cfg.temporal_attention and cfg.temporal_module == "transformer"
    assert cfg.embed_dim == 1280
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 64  # type: ignore[misc]


def test_config_from_dict_roundtrip_and_unknown_key():
    cfg = UNetConfig.tiny()
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    assert UNetConfig.from_dict({"dim_mult": [1, 2, 4, 4]}) == UNetConfig()
    with pytest.raises(InputError, match="unknown UNetConfig key.*'use_fps_condition'"):
        UNetConfig.from_dict({"use_fps_condition": True})


@pytest.mark.parametrize("bad", [dict(temporal_module="lstm"), dict(dim=30), dict(num_heads=0),
                                 dict(dropout=1.5), dict(head_dim=24)])
def test_config_validation(bad):
    with pytest.raises(InputError, match="invalid UNetConfig"):
        UNetConfig.tiny(**bad)


# ---------------------------------------------------------------- released key set

def test_full_size_meta_model_matches_official_state_dict():
    with torch.device("meta"):
        model = UniAnimateUNet(UNetConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = official_shapes()
    assert len(official) == 1544
    assert list(ours) == list(official)  # same keys, same order
    assert ours == official
    assert model.num_parameters() == 1_416_564_300
    assert sum(torch.Size(s).numel() for s in official.values()) == 1_416_564_300


def test_full_size_key_set_validates_and_one_bad_key_is_named():
    official = official_shapes()
    with torch.device("meta"):
        model = UniAnimateUNet(UNetConfig())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = {k: torch.empty(s, device="meta") for k, s in official.items()}
    validate_state_dict(expected, sd)  # the released key set passes
    key = "output_blocks.5.2.proj_out.weight"
    broken = dict(sd)
    del broken[key]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): output_blocks\.5\.2\.proj_out\.weight"):
        validate_state_dict(expected, broken)
    # a meta model cannot receive weights: clear error instead of a silent no-op
    with pytest.raises(CheckpointError, match="meta device"):
        model.load_official_state_dict(sd)


# ---------------------------------------------------------------- strict loading

def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("problem", ["missing", "unexpected", "misshaped"])
def test_strict_load_refuses_and_leaves_model_untouched(problem):
    source = tiny_model(seed=1).state_dict()
    target = tiny_model(seed=2)
    before = _snapshot(target)
    sd = dict(source)
    key = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    if problem == "missing":
        del sd[key]
        pattern = r"1 missing key\(s\): " + key.replace(".", r"\.")
    elif problem == "unexpected":
        key = "fps_embedding.0.weight"
        sd[key] = torch.zeros(3)
        pattern = r"1 unexpected key\(s\): fps_embedding\.0\.weight"
    else:
        sd[key] = torch.zeros(32, 1024)
        pattern = r"1 mis-shaped key\(s\): " + key.replace(".", r"\.") + r" \(32, 1024\) != \(32, 32\)"
    with pytest.raises(CheckpointError, match=pattern):
        target.load_official_state_dict(sd)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_load_accepts_wrapped_and_module_prefixed_and_converts_dtype():
    source = tiny_model(seed=3)
    inp = inputs()
    expected = run(source, inp)
    for wrap in (lambda sd: {"state_dict": sd}, lambda sd: {f"module.{k}": v for k, v in sd.items()},
                 lambda sd: {k: v.double() for k, v in sd.items()}):
        target = tiny_model(seed=4)
        target.load_official_state_dict(wrap(source.state_dict()))
        torch.testing.assert_close(run(target, inp), expected, rtol=0, atol=0)


def test_save_load_roundtrip(tmp_path):
    source = tiny_model(seed=5)
    inp = inputs()
    path = tmp_path / "unet.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    target = UniAnimateUNet(UNetConfig.tiny()).eval()
    target.load_official_state_dict(load_state_dict_file(path))
    assert torch.equal(run(target, inp), run(source, inp))


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("names", [REFERENCE_MODE, FIRST_FRAME_MODE, ALL, ()],
                         ids=["reference", "first_frame", "all", "none"])
def test_output_shapes_per_mode(names):
    model = tiny_model()
    out = run(model, only(inputs(), names))
    assert out.shape == (B, 4, F, H, W)  # the reference slot is dropped: F frames, not F+1
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_each_condition_changes_output():
    model = tiny_model()
    inp = inputs()
    other = inputs(seed=99)
    base = run(model, inp)
    for name in ALL:
        changed = run(model, inp, **{name: other[name]})
        assert not torch.allclose(changed, base, atol=1e-5), name
        dropped = run(model, inp, **{name: None})
        assert not torch.allclose(dropped, base, atol=1e-5), name


def test_ref_pose_is_ignored_without_ref_latent():
    model = tiny_model()
    inp = only(inputs(), FIRST_FRAME_MODE + ("ref_pose",))
    a = run(model, inp)
    b = run(model, inp, ref_pose=inputs(seed=7)["ref_pose"])
    c = run(model, inp, ref_pose=None)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_first_frame_term_equals_reference_repeat_over_frames():
    """The reference runs the first-frame stack on F copies; running it once and repeating is identical."""
    model = tiny_model()
    img = inputs()["first_frame"]
    with torch.inference_mode():
        ours = model._first_frame_term(img, F)
        rep = img.unsqueeze(1).expand(-1, F, -1, -1, -1).reshape(B * F, 3, 8 * H, 8 * W)  # (B*F,3,H,W)
        feat = model.local_image_embedding(rep)  # (B*F,8,h,w)
        feat = feat.view(B, F, *feat.shape[1:]).transpose(1, 2)  # (B,8,F,h,w)
        theirs = model.local_image_embedding_after.forward_video(feat)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_frames_are_independent_of_batch_neighbours_and_deterministic():
    model = tiny_model()
    inp = inputs()
    a = run(model, inp)
    assert torch.equal(a, run(model, inp))
    assert torch.equal(a, run(tiny_model(), inp))  # same seed, same weights, same output
    single = run(model, {k: v[:1] for k, v in inp.items()})
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-5)


def test_text_context_batch_one_broadcasts():
    model = tiny_model()
    inp = inputs()
    ctx = inp["text_context"][:1]
    a = run(model, inp, text_context=ctx)
    b = run(model, inp, text_context=ctx.expand(B, -1, -1).clone())
    assert torch.equal(a, b)


@pytest.mark.parametrize("names", [REFERENCE_MODE, FIRST_FRAME_MODE, ALL], ids=["reference", "first_frame", "all"])
def test_drop_conditions_batches_cond_and_uncond(names):
    model = tiny_model()
    cond_inp = only(inputs(), names)
    cond = run(model, cond_inp)
    uncond = run(model, only(cond_inp, ()))  # every condition None, text context kept
    doubled = {k: (None if v is None else torch.cat([v, v])) for k, v in cond_inp.items()}
    drop = torch.tensor([False] * B + [True] * B)
    both = run(model, doubled, drop_conditions=drop)
    torch.testing.assert_close(both[:B], cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both[B:], uncond, rtol=1e-4, atol=1e-5)
    # all dropped / none dropped are the plain calls
    torch.testing.assert_close(run(model, cond_inp, drop_conditions=torch.ones(B, dtype=torch.bool)), uncond)
    torch.testing.assert_close(run(model, cond_inp, drop_conditions=torch.zeros(B, dtype=torch.bool)), cond)


def test_float64_and_non_square_latent_agree_with_float32():
    """model.double() runs end to end in float64 (how it was checked against the reference: max rel err
    ~4e-15 in every condition mode) and a non-square latent keeps h and w apart (pose/first-frame pools
    to (H/2, W/2), the reference's AdaptiveAvgPool2d((res[1]//2, res[0]//2)) with res = [W, H])."""
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    b, f, h, w = 1, 2, 8, 16
    inp = dict(x=torch.randn(b, 4, f, h, w, generator=g), t=torch.tensor([999]),
               text_context=torch.randn(1, 77, 32, generator=g), image_embedding=torch.randn(b, 32, generator=g),
               pose=torch.rand(b, 3, f, 8 * h, 8 * w, generator=g), ref_pose=torch.rand(b, 3, 8 * h, 8 * w, generator=g),
               ref_latent=torch.randn(b, 4, h, w, generator=g), first_frame=torch.rand(b, 3, 8 * h, 8 * w, generator=g))
    with torch.inference_mode():
        assert model.dwpose_embedding(inp["first_frame"]).shape == (b, 8, h, w)
    out32 = run(model, inp)
    out64 = run(model.double(), {k: (v.double() if v.is_floating_point() else v) for k, v in inp.items()})
    assert out64.dtype == torch.float64 and out64.shape == (b, 4, f, h, w)
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_named():
    model = tiny_model()
    inp = inputs()
    with pytest.raises(InputError, match="pose has shape"):
        run(model, inp, pose=inp["pose"][:, :, :2])
    with pytest.raises(InputError, match="not divisible by 2"):
        run(model, only(inputs(), ()), x=torch.randn(B, 4, F, 7, 8))
    with pytest.raises(InputError, match="drop_conditions"):
        run(model, inp, drop_conditions=torch.tensor([0, 1]))


# ---------------------------------------------------------------- encoded conditions (once per segment)

SMALL = dict(dim=64, context_dim=64, dim_mult=(1, 2, 2), num_heads=4, head_dim=16, num_res_blocks=2,
             attn_scales=(1.0, 0.5))  # three levels, two res blocks: every block kind twice


def _guidance_forms(inp: dict, names: tuple[str, ...]) -> tuple:
    """x, text context and the named conditions, and the same doubled as a cond + uncond batch with
    its drop_conditions: (x, ctx, conds, x2, ctx2, doubled, drop)."""
    cond_inp = only(inp, names)
    conds = {k: v for k, v in cond_inp.items() if k not in ("x", "t", "text_context")}
    x, ctx = cond_inp["x"], cond_inp["text_context"]
    doubled = {k: (None if v is None else torch.cat([v, v])) for k, v in conds.items()}
    drop = torch.tensor([False] * B + [True] * B)
    return x, ctx, conds, torch.cat([x, x]), torch.cat([ctx, ctx]), doubled, drop


def _assert_encoded_equal_per_call(model: UniAnimateUNet, inp: dict, names: tuple[str, ...]) -> None:
    """Conditions encoded once, reused at several timesteps, in both guidance forms (one call with
    drop_conditions, two calls): max abs difference 0 against the per-call computation."""
    x, ctx, conds, x2, ctx2, doubled, drop = _guidance_forms(inp, names)
    with torch.inference_mode():
        enc = model.encode_conditions(x.shape, ctx, **conds)
        enc_u = model.encode_conditions(x.shape, ctx)
        enc2 = model.encode_conditions(x2.shape, ctx2, drop_conditions=drop, **doubled)
        for t in (999, 500, 1):
            tt = torch.full((B,), t)
            assert torch.equal(model(x, tt, conditions=enc), model(x, tt, ctx, **conds))
            assert torch.equal(model(x, tt, conditions=enc_u), model(x, tt, ctx))
            tt2 = torch.full((2 * B,), t)
            once = model(x2, tt2, conditions=enc2)
            per_call = model(x2, tt2, ctx2, drop_conditions=drop, **doubled)
            assert (once - per_call).abs().max().item() == 0.0
    assert enc.latent_size == (B, F, H, W) and enc2.latent_size == (2 * B, F, H, W)
    # the dropped rows hold exactly the embeddings of no conditions at all
    assert torch.equal(enc2.concat[B:], enc_u.concat) and torch.equal(enc2.ref_slot[B:], enc_u.ref_slot)
    assert torch.equal(enc2.context[B:], enc_u.context)


@pytest.mark.parametrize("names", [REFERENCE_MODE, FIRST_FRAME_MODE, ALL, ()],
                         ids=["reference", "first_frame", "all", "none"])
def test_encoded_conditions_equal_per_call_tiny(names):
    _assert_encoded_equal_per_call(tiny_model(), inputs(), names)


@pytest.mark.parametrize("names", [REFERENCE_MODE, FIRST_FRAME_MODE], ids=["reference", "first_frame"])
def test_encoded_conditions_equal_per_call_small(names):
    model = UniAnimateUNet(UNetConfig.tiny(**SMALL)).eval().init_random_weights_(0)
    _assert_encoded_equal_per_call(model, inputs(ctx_dim=64), names)


def test_encoded_conditions_are_checked():
    model = tiny_model()
    inp = inputs()
    with torch.inference_mode():
        enc = model.encode_conditions(inp["x"].shape, inp["text_context"], pose=inp["pose"])
        with pytest.raises(InputError, match="not both"):
            model(inp["x"], inp["t"], inp["text_context"], conditions=enc)
        with pytest.raises(InputError, match="encoded for"):
            model(inp["x"][:, :, :2], inp["t"], conditions=enc)
        with pytest.raises(InputError, match="text_context"):
            model(inp["x"], inp["t"])
        with pytest.raises(InputError, match="pose has shape"):
            model.encode_conditions((B, 4, F + 1, H, W), inp["text_context"], pose=inp["pose"])


# ---------------------------------------------------------------- cross-attention keys/values once per segment

def _assert_context_kv_equal_repeated_context(model: UniAnimateUNet, inp: dict, names: tuple[str, ...]) -> None:
    """Keys/values of the context projected once for the B rows (``context_kv``, the default) against
    the previous computation (``context_kv=False``: every layer projects the context repeated for each
    of the F+1 frames), in both guidance forms, at several timesteps, with both attention backends:
    max abs difference 0."""
    x, ctx, conds, x2, ctx2, doubled, drop = _guidance_forms(inp, names)
    with torch.inference_mode():
        pairs = [(x, model.encode_conditions(x.shape, ctx, **conds),
                  model.encode_conditions(x.shape, ctx, context_kv=False, **conds)),
                 (x2, model.encode_conditions(x2.shape, ctx2, drop_conditions=drop, **doubled),
                  model.encode_conditions(x2.shape, ctx2, drop_conditions=drop, context_kv=False, **doubled))]
        for xx, with_kv, without in pairs:
            assert without.context_kv is None
            n_spatial = sum(isinstance(m, SpatialTransformer) for m in model.modules())
            assert len(with_kv.context_kv) == n_spatial
            assert torch.equal(with_kv.context, without.context)
            for backend in ("sdpa", "reference"):
                with attention_backend(backend):
                    for t in (999, 500, 1):
                        tt = torch.full((xx.shape[0],), t)
                        diff = (model(xx, tt, conditions=with_kv) - model(xx, tt, conditions=without)).abs().max()
                        assert diff.item() == 0.0, (backend, t)


@pytest.mark.parametrize("config, names", [
    ("tiny", REFERENCE_MODE), ("tiny", FIRST_FRAME_MODE), ("tiny", ALL), ("tiny", ()),
    ("small", REFERENCE_MODE), ("small", FIRST_FRAME_MODE)],
    ids=["tiny-reference", "tiny-first_frame", "tiny-all", "tiny-none", "small-reference", "small-first_frame"])
def test_context_kv_equals_repeated_context(config, names):
    if config == "tiny":
        model, inp = tiny_model(), inputs()
    else:
        model, inp = UniAnimateUNet(UNetConfig.tiny(**SMALL)).eval().init_random_weights_(0), inputs(ctx_dim=64)
    _assert_context_kv_equal_repeated_context(model, inp, names)


def test_cross_attention_kv_path_equals_context_path_and_trains():
    """The layer itself: frames folded into the batch attending to precomputed keys/values of their
    row's context give the context-repeated result bit for bit (both backends), also with gradients."""
    torch.manual_seed(0)
    attn = CrossAttention(48, 24, heads=3, dim_head=16)
    x = torch.randn(2 * 5, 7, 48)  # (b*frames, tokens, C)
    ctx = torch.randn(2, 9, 24)
    for backend in ("sdpa", "reference"):
        with attention_backend(backend):
            with torch.inference_mode():
                want = attn(x, ctx.repeat_interleave(5, dim=0))
                assert torch.equal(attn(x, kv=attn.context_kv(ctx)), want)
                one_token = x[:, :1]  # the middle block of a small latent: one token per frame
                assert torch.equal(attn(one_token, kv=attn.context_kv(ctx)),
                                   attn(one_token, ctx.repeat_interleave(5, dim=0)))
            got = attn(x, kv=attn.context_kv(ctx))
            torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)
            got.square().sum().backward()
            assert attn.to_k.weight.grad is not None and torch.isfinite(attn.to_k.weight.grad).all()
            attn.zero_grad()
    with pytest.raises(ValueError, match="not both"):
        attn(x, ctx.repeat_interleave(5, dim=0), kv=attn.context_kv(ctx))
    with pytest.raises(ValueError, match="do not divide"):
        attn(x, kv=attn.context_kv(torch.randn(3, 9, 24)))


def test_geglu_inference_path_equals_training_path():
    """GEGLU multiplies into GELU's output under inference (one tensor less): same bits as h * gelu(gate)."""
    torch.manual_seed(0)
    ff = GEGLU(16, 32)
    x = torch.randn(3, 5, 16, requires_grad=True)
    trained = ff(x)
    h, gate = ff.proj(x).chunk(2, dim=-1)
    assert torch.equal(trained, h * torch.nn.functional.gelu(gate))
    trained.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.inference_mode():
        assert torch.equal(ff(x.detach()), trained.detach())
    with torch.no_grad():
        assert torch.equal(ff(x.detach()), trained.detach())


def test_feed_forward_chunked_equals_unchunked():
    """Inference runs the feed-forward over chunks of token rows: the same bits as one call, for a row
    count that no chunk size divides (released level-0 width, 2501 rows in 3 chunks of 833/834)."""
    torch.manual_seed(0)
    ff = FeedForward(320).eval()
    x = torch.randn(41, 61, 320)  # (b, tokens, dim): 2501 rows
    ff.chunk_bytes = 2501 * 2560 * 4 // 3  # bytes of a third of the (rows, 8*dim) GEGLU projection
    with torch.inference_mode():
        assert ff.n_chunks(x) == 2  # at least FF_CHUNK_MIN_ROWS (1024) rows per chunk
        ff.chunk_bytes = 1
        assert ff.n_chunks(x) == 2
        with pytest.MonkeyPatch.context() as mp:   # more threads than were measured: one plain call
            mp.setattr(layers, "FF_CHUNK_MAX_THREADS", torch.get_num_threads() - 1)
            assert ff.n_chunks(x) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layers, "FF_CHUNK_MIN_ROWS", 800)
        with torch.inference_mode():
            assert ff.n_chunks(x) == 3
            chunked = ff(x)
            ff.chunk_bytes = 0
            assert ff.n_chunks(x) == 1
            plain = ff(x)
    assert chunked.shape == plain.shape == x.shape
    assert (chunked - plain).abs().max().item() == 0.0
    assert torch.equal(chunked, ff.net(x).detach())


def test_feed_forward_grad_and_training_paths_are_unchunked():
    """With gradients, in training mode or off CPU fp32 the feed-forward is the plain ``net(x)``."""
    torch.manual_seed(0)
    ff = FeedForward(32)
    ff.chunk_bytes = 1
    x = torch.randn(4, 700, 32)  # 2800 rows
    with torch.inference_mode():
        assert ff.n_chunks(x) == 1  # training mode (dropout would draw other masks per chunk)
        ff.eval()
        assert ff.n_chunks(x) == 2
        assert ff.n_chunks(x.double()) == 1
    assert ff.n_chunks(x) == 1  # grad enabled
    xg = x.clone().requires_grad_(True)
    out = ff(xg)
    assert torch.equal(out, ff.net(xg))
    out.square().sum().backward()
    assert xg.grad is not None and ff.net[0].proj.weight.grad is not None


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_unet_forward_with_chunked_feed_forward_is_bit_identical(config):
    """The whole UNet (guidance-batched, reference mode) gives the same bits with every feed-forward
    chunked into 64-row pieces as unchunked (chunking forced: these configs are far below 32 MiB)."""
    if config == "tiny":
        model, inp = tiny_model(), inputs()
    else:
        model, inp = UniAnimateUNet(UNetConfig.tiny(**SMALL)).eval().init_random_weights_(0), inputs(ctx_dim=64)
    x, ctx, conds, x2, ctx2, doubled, drop = _guidance_forms(inp, REFERENCE_MODE)
    ffs = [m for m in model.modules() if isinstance(m, FeedForward)]
    assert ffs
    outs = {}
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        mp.setattr(layers, "FF_CHUNK_MIN_ROWS", 64)
        enc = model.encode_conditions(x2.shape, ctx2, drop_conditions=drop, **doubled)
        tt = torch.full((x2.shape[0],), 500)
        for name, chunk_bytes in (("chunked", 1), ("plain", 0)):
            for m in ffs:
                m.chunk_bytes = chunk_bytes
            seen: list[int] = []  # chunks per feed-forward call
            hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(mod.n_chunks(args[0])))
                     for m in ffs]
            outs[name] = model(x2, tt, conditions=enc)
            for h in hooks:
                h.remove()
            assert len(seen) == len(ffs)
            assert (max(seen) > 1) == (chunk_bytes > 0), seen
    assert (outs["chunked"] - outs["plain"]).abs().max().item() == 0.0


# ---------------------------------------------------------------- zero init (as the reference's fresh model)

def test_fresh_model_output_is_head_bias():
    """The reference zeroes the head conv weight but keeps its bias: a fresh model predicts the bias."""
    model = UniAnimateUNet(UNetConfig.tiny()).eval()
    out = run(model, inputs())
    expected = model.out[-1].bias.detach().view(1, 4, 1, 1, 1).expand_as(out)
    assert torch.equal(out, expected)


def test_fresh_blocks_are_identity_where_reference_zero_inits():
    torch.manual_seed(0)
    x5 = torch.randn(2, 32, 5, 4, 4)
    with torch.inference_mode():
        assert torch.equal(TemporalConvBlock(32).eval()(x5), x5)
        assert torch.equal(TemporalTransformer(32, 2, 16).eval()(x5), x5)
        x4 = torch.randn(10, 32, 4, 4)
        assert torch.equal(SpatialTransformer(32, 2, 16, 8).eval()(x4, torch.randn(10, 7, 8)), x4)
        res = ResBlock(32, 64, 0.1, 64).eval()
        assert torch.equal(res(x4, torch.randn(10, 64), batch=2), res.skip_connection(x4))


# ---------------------------------------------------------------- pieces against their definitions

def test_sinusoidal_embedding_formula():
    t = torch.tensor([0, 1, 500, 999])
    emb = sinusoidal_embedding(t, 320)
    i = torch.arange(160, dtype=torch.float64)
    args = t.double()[:, None] * 10000.0 ** (-i / 160)
    torch.testing.assert_close(emb.double(), torch.cat([args.cos(), args.sin()], dim=1), rtol=1e-5, atol=1e-4)


def test_temporal_conv_block_matches_conv3d_definition():
    """Our Conv2d-on-(B,C,F,h*w) evaluation equals the reference's GN/SiLU/Conv3d stages on 5-D input."""
    torch.manual_seed(0)
    block = TemporalConvBlock(32).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, 5, 32, 3, 4).transpose(1, 2)  # (B,C,F,h,w), non-contiguous like in the UNet
    with torch.inference_mode():
        theirs = x + block.conv4(block.conv3(block.conv2(block.conv1(x))))
        torch.testing.assert_close(block(x), theirs, rtol=1e-5, atol=1e-5)


def test_temporal_transformer_matches_conv1d_layout():
    """Our linear-on-tokens proj_in/proj_out equal the reference's Conv1d on (b h w) c f."""
    torch.manual_seed(0)
    layer = TemporalTransformer(32, 2, 16).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, 32, 5, 3, 4)
    b, c, f, h, w = x.shape
    with torch.inference_mode():
        ours = layer(x)
        tok = layer.norm(x).permute(0, 3, 4, 1, 2).reshape(b * h * w, c, f)  # (bhw,c,f)
        tok = layer.proj_in(tok).transpose(1, 2)  # (bhw,f,inner)
        tok = layer.transformer_blocks[0](tok).transpose(1, 2)  # (bhw,inner,f)
        tok = layer.proj_out(tok)  # (bhw,c,f)
        theirs = tok.view(b, h, w, c, f).permute(0, 3, 4, 1, 2) + x  # (b,c,f,h,w)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_mamba_temporal_module_swaps_in():
    pytest.importorskip("unianimate.models.mamba")
    model = tiny_model(temporal_module="mamba")
    assert not any(isinstance(m, TemporalTransformer) for m in model.modules())
    out = run(model, inputs())
    assert out.shape == (B, 4, F, H, W) and torch.isfinite(out).all()


# ---------------------------------------------------------------- full size (slow / gpu)

def _full_size_forward(device: str, dtype: torch.dtype) -> torch.Tensor:
    with torch.device("meta"):
        model = UniAnimateUNet(UNetConfig())
    model = model.to_empty(device=device).eval()
    model.init_random_weights_(0)
    model = model.to(dtype)
    g = torch.Generator().manual_seed(0)
    f, h, w = 2, 8, 8
    args = dict(x=torch.randn(1, 4, f, h, w, generator=g), t=torch.tensor([500]),
                text_context=torch.randn(1, 77, 1024, generator=g), image_embedding=torch.randn(1, 1024, generator=g),
                pose=torch.rand(1, 3, f, 64, 64, generator=g), ref_pose=torch.rand(1, 3, 64, 64, generator=g),
                ref_latent=torch.randn(1, 4, h, w, generator=g))
    args = {k: v.to(device) for k, v in args.items()}
    with torch.inference_mode():
        out = model(**args)
    assert out.shape == (1, 4, f, h, w) and out.dtype == dtype
    assert torch.isfinite(out).all()
    return out.float().cpu()


@pytest.mark.slow
def test_full_size_forward_cpu():
    torch.set_num_threads(os.cpu_count() or 1)
    _full_size_forward("cpu", torch.float32)


@pytest.mark.slow
def test_full_size_encoded_conditions_equal_per_call():
    """The released config: conditions encoded once give exactly the per-call output (fp32 CPU)."""
    torch.set_num_threads(os.cpu_count() or 1)
    with torch.device("meta"):
        model = UniAnimateUNet(UNetConfig())
    model = model.to_empty(device="cpu").eval().init_random_weights_(0)
    g = torch.Generator().manual_seed(0)
    f, h, w = 2, 8, 8
    x = torch.randn(1, 4, f, h, w, generator=g)
    ctx = torch.randn(1, 77, 1024, generator=g)
    conds = dict(image_embedding=torch.randn(1, 1024, generator=g), pose=torch.rand(1, 3, f, 64, 64, generator=g),
                 ref_pose=torch.rand(1, 3, 64, 64, generator=g), ref_latent=torch.randn(1, 4, h, w, generator=g),
                 first_frame=torch.rand(1, 3, 64, 64, generator=g))
    two = {k: v.expand(2, *v.shape[1:]) for k, v in conds.items()}
    drop = torch.tensor([False, True])
    x2 = torch.cat([x, x])
    with torch.inference_mode():
        enc = model.encode_conditions(x2.shape, ctx, drop_conditions=drop, **two)
        for t in (958, 34):
            t2 = torch.tensor([t, t])
            once = model(x2, t2, conditions=enc)
            per_call = model(x2, t2, ctx, drop_conditions=drop, **two)
            assert (once - per_call).abs().max().item() == 0.0
            # cross-attention keys/values projected once vs per frame (the computation before them)
            repeated = model.encode_conditions(x2.shape, ctx, drop_conditions=drop, context_kv=False, **two)
            assert (once - model(x2, t2, conditions=repeated)).abs().max().item() == 0.0


@pytest.mark.gpu
def test_full_size_forward_cuda_fp16():
    out16 = _full_size_forward("cuda", torch.float16)
    out32 = _full_size_forward("cuda", torch.float32)
    rel = (out16 - out32).norm() / out32.norm()
    assert rel < 5e-2, rel
