"""VAE: a tiny AutoencoderKL saved as a diffusers folder and as an SD-style .ckpt loads identically."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from unianimate.errors import CheckpointError
from unianimate.models.vae import SCALE_FACTOR, LatentVAE, VaeConfig, ldm_vae_to_diffusers
from unianimate.utils import make_generator


def _diffusers_to_ldm(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Test-side inverse mapping (diffusers -> LDM names), written independently of the module."""
    out = {}
    for k, v in sd.items():
        n = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        n = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", n)
        if "mid_block.attentions.0." in n:
            n = n.replace("mid_block.attentions.0.", "mid.attn_1.")
            for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                         ("to_out.0", "proj_out")):
                n = n.replace(f".{a}.", f".{b}.")
            if n.endswith("weight") and not n.endswith("norm.weight"):
                v = v[:, :, None, None]
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets", r"encoder.down.\1.block", n)
        n = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", n)
        n = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block", n)
        n = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                   lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample", n)
        out["first_stage_model." + n] = v.clone()
    return out


def make_tiny_vae_files(folder: Path, seed: int = 0) -> tuple[Path, Path, VaeConfig]:
    """Tiny AutoencoderKL with seeded random weights: diffusers folder ``vae/`` and an SD-style .ckpt."""
    cfg = VaeConfig.tiny()
    torch.manual_seed(seed)
    model = AutoencoderKL(**cfg.diffusers_kwargs())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vae_dir = folder / "vae"
    model.save_pretrained(vae_dir)
    ldm = _diffusers_to_ldm(model.state_dict(), len(cfg.block_out_channels))
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 2)  # a UNet key, ignored
    ldm["first_stage_model.loss.logvar"] = torch.zeros(())  # training-only, ignored
    ckpt = folder / "v2-1_512-ema-pruned.ckpt"
    torch.save({"state_dict": ldm, "global_step": 1}, ckpt)
    return vae_dir, ckpt, cfg


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, VaeConfig]:
    return make_tiny_vae_files(tmp_path_factory.mktemp("vae"))


def test_conversion_matches_diffusers_converter(tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    vae_dir, ckpt, cfg = tiny_files
    ldm = torch.load(ckpt, weights_only=True)["state_dict"]
    ours = ldm_vae_to_diffusers(ldm, len(cfg.block_out_channels))
    ldm_vae = {k[len("first_stage_model."):]: v for k, v in ldm.items()
               if k.startswith("first_stage_model.") and ".loss." not in k and not k.startswith("first_stage_model.loss")}
    theirs = convert_ldm_vae_checkpoint(ldm_vae, AutoencoderKL(**cfg.diffusers_kwargs()).config)
    assert set(ours) == set(theirs)
    for k in ours:
        assert torch.equal(ours[k].reshape(theirs[k].shape), theirs[k]), k
        assert ours[k].shape == theirs[k].shape, k


def test_folder_and_ckpt_identical(tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    vae_dir, ckpt, cfg = tiny_files
    a = LatentVAE.load(vae_dir)
    b = LatentVAE.load(ckpt, cfg)
    c = LatentVAE.load(vae_dir.parent / "vae")
    for (ka, va), (kb, vb) in zip(sorted(a.model.state_dict().items()), sorted(b.model.state_dict().items())):
        assert ka == kb and torch.equal(va, vb), ka
    pixels = torch.rand(2, 3, 64, 64, generator=make_generator(0))
    za = a.encode(pixels, make_generator(1))
    zb = b.encode(pixels, make_generator(1))
    assert za.shape == (2, 4, 8, 8) and za.dtype == torch.float32
    torch.testing.assert_close(za, zb, rtol=0, atol=0)
    torch.testing.assert_close(c.decode(za), b.decode(zb), rtol=0, atol=0)


def test_encode_is_scaled_posterior_sample(tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    vae_dir, _, _ = tiny_files
    v = LatentVAE.load(vae_dir)
    pixels = torch.rand(1, 3, 64, 64, generator=make_generator(0))
    dist = v.model.encode(pixels * 2 - 1).latent_dist
    noise = torch.randn(dist.mean.shape, generator=make_generator(5))
    expected = (dist.mean + dist.std * noise) * SCALE_FACTOR
    torch.testing.assert_close(v.encode(pixels, make_generator(5)), expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(v.encode(pixels, make_generator(5)), v.encode(pixels, make_generator(6)))


def test_chunked_decode_equals_full(tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    vae_dir, _, _ = tiny_files
    v = LatentVAE.load(vae_dir)
    z = torch.randn(3, 4, 8, 8, generator=make_generator(2))
    full = v.decode(z, chunk=3)
    assert full.shape == (3, 3, 64, 64)
    assert float(full.min()) >= 0.0 and float(full.max()) <= 1.0
    expected = ((v.model.decode(z / SCALE_FACTOR).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    for chunk in (1, 2):
        torch.testing.assert_close(v.decode(z, chunk=chunk), full, rtol=1e-5, atol=1e-5)


def test_released_config_matches_sd21() -> None:
    cfg = VaeConfig()
    kw = cfg.diffusers_kwargs()
    assert kw["block_out_channels"] == (128, 256, 512, 512) and kw["layers_per_block"] == 2
    assert kw["latent_channels"] == 4 and kw["scaling_factor"] == 0.18215
    assert VaeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        VaeConfig.from_dict({"channels": 3})


def test_bad_checkpoints(tmp_path: Path, tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    _, ckpt, cfg = tiny_files
    with pytest.raises(CheckpointError):  # wrong config for the weights
        LatentVAE.load(ckpt, VaeConfig(block_out_channels=(32, 32, 32, 64), layers_per_block=1))
    no_vae = tmp_path / "unet_only.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, no_vae)
    with pytest.raises(CheckpointError, match="no VAE"):
        LatentVAE.load(no_vae, cfg)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError):
        LatentVAE.load(junk, cfg)
    (tmp_path / "emptyvae").mkdir()
    (tmp_path / "emptyvae" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        LatentVAE.load(tmp_path / "emptyvae")


def test_not_a_state_dict_names_the_vae_file(tmp_path: Path) -> None:
    """A VAE checkpoint that is not a state dict is reported as such, not as a bad UNet file."""
    for name, obj in (("list.ckpt", [torch.zeros(1)]), ("mixed.ckpt", {"encoder.conv_in.weight": 1.0})):
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="v2-1_512-ema-pruned.ckpt") as info:
            LatentVAE.load(path, VaeConfig.tiny())
        assert "UNet" not in str(info.value)


def test_an_unknown_vae_key_is_named_not_dropped(tiny_files: tuple[Path, Path, VaeConfig]) -> None:
    """diffusers' converter skips keys it does not know; the project's check names them."""
    _, ckpt, cfg = tiny_files
    sd = dict(torch.load(ckpt, weights_only=True)["state_dict"])
    sd["first_stage_model.encoder.mystery.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected VAE key\(s\) \['encoder.mystery.weight'\]"):
        ldm_vae_to_diffusers(sd, len(cfg.block_out_channels))
