"""CLIP encoder on a tiny open_clip model saved and loaded in the released file format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from unianimate.errors import CheckpointError
from unianimate.models import clip as clip_mod
from unianimate.models.clip import CLIP_MEAN, CLIP_STD, ClipConfig, ClipEncoder, load_open_clip


def make_tiny_clip_file(folder: Path, seed: int = 0, width: int = 32) -> tuple[Path, ClipConfig]:
    """A tiny open_clip CLIP (same class) with seeded random weights saved as open_clip_pytorch_model.bin."""
    cfg = ClipConfig.tiny(width=width)
    torch.manual_seed(seed)
    model = open_clip.create_model(cfg.model_name, pretrained=None, **cfg.model_kwargs())
    with torch.no_grad():  # make the layer norms non-trivial too
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, cfg


@pytest.fixture(autouse=True)
def _clear_memory_cache() -> None:
    clip_mod._ZERO_Y_MEMORY.clear()


def _manual_zero_y(model: torch.nn.Module) -> torch.Tensor:
    """Penultimate-layer empty-prompt context, written out step by step (batch-first blocks)."""
    tokens = open_clip.tokenize([""])
    assert tokens.shape == (1, 77)
    assert tokens[0, 0] == 49406 and tokens[0, 1] == 49407 and (tokens[0, 2:] == 0).all()
    x = model.token_embedding(tokens) + model.positional_embedding
    for blk in model.transformer.resblocks[: len(model.transformer.resblocks) - 1]:
        h = blk.ln_1(x)
        h = blk.attn(h, h, h, need_weights=False, attn_mask=model.attn_mask)[0]
        x = x + blk.ls_1(h)
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    return model.ln_final(x)


def test_zero_y_matches_manual(tmp_path: Path) -> None:
    path, cfg = make_tiny_clip_file(tmp_path)
    model = load_open_clip(path, cfg)
    assert type(model) is open_clip.model.CLIP
    assert model.transformer.batch_first
    enc = ClipEncoder(model)
    with torch.no_grad():
        expected = _manual_zero_y(model)
        full = model.encode_text(open_clip.tokenize([""]))  # sanity: the last block matters
    zy = enc.compute_zero_y()
    assert zy.shape == (1, 77, 32) and zy.dtype == torch.float32
    torch.testing.assert_close(zy, expected, rtol=1e-5, atol=1e-6)
    assert full.shape == (1, 32)


def test_zero_y_cached_on_disk_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cfg = make_tiny_clip_file(tmp_path)
    enc = ClipEncoder.from_file(path, cfg)
    files = list(tmp_path.glob("unianimate_zero_y.*.safetensors"))
    assert len(files) == 1
    assert enc.model.transformer is None  # text tower freed
    zy = enc.zero_y
    assert zy.shape == (1, 77, 32)

    calls = []
    orig = ClipEncoder.compute_zero_y

    def counting(self: ClipEncoder) -> torch.Tensor:
        calls.append(1)
        return orig(self)

    monkeypatch.setattr(ClipEncoder, "compute_zero_y", counting)
    enc2 = ClipEncoder.from_file(path, cfg)  # memory cache
    clip_mod._ZERO_Y_MEMORY.clear()
    enc3 = ClipEncoder.from_file(path, cfg)  # disk cache
    assert calls == []
    torch.testing.assert_close(enc2.zero_y, zy, rtol=0, atol=0)
    torch.testing.assert_close(enc3.zero_y, zy, rtol=0, atol=0)
    # different weights -> different key -> recomputed
    clip_mod._ZERO_Y_MEMORY.clear()
    path2, _ = make_tiny_clip_file(tmp_path / "other", seed=1)
    enc4 = ClipEncoder.from_file(path2, cfg)
    assert calls == [1]
    assert not torch.allclose(enc4.zero_y, zy)


def test_zero_y_cache_keyed_by_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached zero_y made by other code (a changed compute_zero_y, another open_clip) is not
    used: the stale file cannot hide the change."""
    path, cfg = make_tiny_clip_file(tmp_path)
    zy = ClipEncoder.from_file(path, cfg).zero_y
    assert len(list(tmp_path.glob("unianimate_zero_y.*.safetensors"))) == 1
    orig = ClipEncoder.compute_zero_y

    def changed(self: ClipEncoder) -> torch.Tensor:   # a new release computing it differently
        return orig(self) * 2

    clip_mod._ZERO_Y_MEMORY.clear()
    monkeypatch.setattr(ClipEncoder, "compute_zero_y", changed)
    monkeypatch.setattr(clip_mod, "_ZERO_Y_CODE", clip_mod.code_fingerprint(changed))
    assert clip_mod.code_fingerprint(changed) != clip_mod.code_fingerprint(orig)
    torch.testing.assert_close(ClipEncoder.from_file(path, cfg).zero_y, zy * 2, rtol=0, atol=0)
    assert len(list(tmp_path.glob("unianimate_zero_y.*.safetensors"))) == 2
    # another open_clip version: another key as well
    before = clip_mod.zero_y_code_fingerprint()
    monkeypatch.setattr(open_clip, "__version__", "0.0.0+other", raising=False)
    assert clip_mod.zero_y_code_fingerprint() != before


def test_zero_y_cache_dir_readonly_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, cfg = make_tiny_clip_file(tmp_path / "w")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_write = clip_mod.atomic_write_bytes

    def refuse_weights_dir(p: Path, data: bytes) -> None:
        if Path(p).parent == (tmp_path / "w").resolve():
            raise PermissionError("read-only")
        real_write(p, data)

    monkeypatch.setattr(clip_mod, "atomic_write_bytes", refuse_weights_dir)
    ClipEncoder.from_file(path, cfg)
    assert list((tmp_path / "xdg" / "unianimate").glob("unianimate_zero_y.*"))


def test_preprocess_matches_spec(tmp_path: Path) -> None:
    path, cfg = make_tiny_clip_file(tmp_path)
    enc = ClipEncoder(load_open_clip(path, cfg))
    assert enc.image_size == (32, 32)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    x = enc.preprocess(img)
    assert x.shape == (1, 3, 32, 32)
    resized = np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR), np.float64) / 255.0
    expected = (resized - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5)
    # white pixel: (1 - mean) / std
    white = enc.preprocess(Image.new("RGB", (10, 10), (255, 255, 255)))
    np.testing.assert_allclose(white[0, :, 0, 0].numpy(), (1 - np.array(CLIP_MEAN)) / np.array(CLIP_STD),
                               rtol=1e-6)
    emb = enc.encode_image([img, img])
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb, enc.model.visual(x.repeat(2, 1, 1, 1)), rtol=1e-5, atol=1e-5)


def test_released_config_defaults() -> None:
    cfg = ClipConfig()
    assert cfg.model_name == "ViT-H-14" and cfg.model_kwargs() == {}
    assert open_clip.get_model_config("ViT-H-14")["embed_dim"] == 1024
    assert ClipConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ClipConfig.from_dict({"model": "x"})


def test_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "open_clip_pytorch_model.bin"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="open_clip_pytorch_model.bin"):
        ClipEncoder.from_file(bad, ClipConfig.tiny())
    path, cfg = make_tiny_clip_file(tmp_path / "ok")
    data = path.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        ClipEncoder.from_file(tmp_path / "trunc.bin", cfg)
    with pytest.raises(CheckpointError):  # wrong config for the weights
        ClipEncoder.from_file(path, ClipConfig.tiny(width=48))


def test_fingerprint(tmp_path: Path) -> None:
    from unianimate.models.clip import weights_fingerprint

    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 3_000_000)
    b = tmp_path / "b.bin"
    b.write_bytes(b"x" * 2_999_999 + b"y")  # differs in the last MiB
    assert weights_fingerprint(a) != weights_fingerprint(b)
    blobs = tmp_path / "models--x--y" / "blobs"
    blobs.mkdir(parents=True)
    digest = "ab" * 32
    (blobs / digest).write_bytes(b"w")
    link = tmp_path / "models--x--y" / "snapshot.bin"
    link.symlink_to(blobs / digest)
    assert weights_fingerprint(link) == digest[:16]


def _hash_pattern(h: int, w: int) -> np.ndarray:
    """A noise-like uint8 (h,w,3) image from integer arithmetic only (no RNG whose stream could
    change between numpy versions)."""
    y, x, c = np.mgrid[0:h, 0:w, 0:3].astype(np.uint64)
    v = x * np.uint64(1103515245) + y * np.uint64(2654435761) + c * np.uint64(40503) + np.uint64(12345)
    v = (v ^ (v >> np.uint64(13))) * np.uint64(2246822519) >> np.uint64(16)
    return (v & np.uint64(255)).astype(np.uint8)


def test_clip_downscale_matches_pillow_10_2() -> None:
    """The CLIP input equals what the reference's Pillow (10.2) made, byte for byte. Pinned
    checksum computed with Pillow 10.2.0 (10.0 to 12.3 give the same bytes); Pillow 13.0 gives
    another one (the 517x333 case), hence requirements.txt's pillow<13."""
    import hashlib

    outs = [clip_mod.clip_resize(_hash_pattern(h, w), (224, 224))
            for h, w in ((517, 333), (768, 512), (1216, 768))]
    assert all(o.shape == (224, 224, 3) and o.dtype == np.uint8 for o in outs)
    digest = hashlib.sha256(b"".join(o.tobytes() for o in outs)).hexdigest()
    assert digest == "32296668d9620b5890aeced8a72038c4e9e377853b598e37a9b63be5c1ac4efd", (
        f"Pillow {Image.__version__} resamples the CLIP input differently from Pillow 10.2; "
        "install a Pillow in the range requirements.txt pins")
