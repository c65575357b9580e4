"""Training loop on tiny real components: overfitting, exact resume, per-condition dropout, LoRA
round trip, and clear messages for bad clips."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unianimate.models.clip import ClipConfig, ClipEncoder
from unianimate.models.config import UNetConfig
from unianimate.models.unet import CONDITIONS, UniAnimateUNet
from unianimate.models.vae import LatentVAE, VaeConfig
from unianimate.pose import PoseSequence, save_pose_sequence
from unianimate.training.data import ClipFolder, DataError, ProceduralPeople, collate
from unianimate.training.diffusion import DiffusionConfig, DiffusionTask, diffusion_loss, encode_batch
from unianimate.training.people import heldout_clips, sample_clip
from unianimate.training.trainer import OptimConfig, Trainer

W, H, F = 64, 64, 2


def _unet_config(**kw: object) -> UNetConfig:
    return UNetConfig.tiny(dim=16, context_dim=16, head_dim=8, num_heads=2, norm_groups=8, **kw)


@pytest.fixture(scope="module")
def parts() -> tuple[LatentVAE, ClipEncoder]:
    import open_clip
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**VaeConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                                    mid_block_add_attention=False, sample_size=64,
                                    scaling_factor=0.5).diffusers_kwargs())
    cfg = ClipConfig.tiny(width=16)
    clip = open_clip.create_model(cfg.model_name, pretrained=None, **cfg.model_kwargs())
    return LatentVAE(vae), ClipEncoder(clip)


def test_vae_uses_its_config_scaling_factor(parts: tuple[LatentVAE, ClipEncoder]) -> None:
    assert parts[0].scale == 0.5


def test_people_generator_is_deterministic_and_heldout_is_separate() -> None:
    a, b = sample_clip(3, 7, frames=4), sample_clip(3, 7, frames=4)
    assert a.frames.shape == (4, 128, 64, 3) and a.poses.shape == (4, 128, 64, 3)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.reference, b.reference)
    assert not np.array_equal(sample_clip(3, 8, frames=4).frames, a.frames)
    held = heldout_clips(2, frames=4)
    assert all(not np.array_equal(h.frames, sample_clip(0, i, frames=4).frames) for i, h in enumerate(held))
    assert np.array_equal(heldout_clips(2, frames=4)[1].frames, held[1].frames)
    # the figure moves: consecutive frames differ, and the background is one flat colour
    assert (a.frames[0] != a.frames[-1]).any()
    assert (a.frames[:, 0, 0] == a.frames[0, 0, 0]).all()


def _fixed_cond(parts: tuple[LatentVAE, ClipEncoder]):
    vae, clip = parts
    batch = collate([sample_clip(0, i, F, W, H) for i in range(2)])
    return encode_batch(batch, vae, clip, torch.Generator().manual_seed(0), torch.device("cpu"))


def test_loss_falls_on_a_fixed_batch(parts: tuple[LatentVAE, ClipEncoder]) -> None:
    cond = _fixed_cond(parts)
    zero_y = parts[1].zero_y
    torch.manual_seed(0)
    unet = UniAnimateUNet(_unet_config(dropout=0.0, temporal_dropout=0.0, adapter_dropout=0.0))
    cfg = DiffusionConfig(condition_dropout=(0.0, 0.0, 0.0, 0.0))

    def loss_fn(model: torch.nn.Module, position: int, gen: torch.Generator) -> torch.Tensor:
        return diffusion_loss(model, cond, zero_y, torch.Generator().manual_seed(0), cfg)  # same t, noise

    trainer = Trainer(unet, loss_fn, "/nonexistent", OptimConfig(lr=3e-3, ema_decay=0.9))
    losses = [trainer.train_step() for _ in range(25)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def _resume_trainer(parts: tuple[LatentVAE, ClipEncoder], out: Path) -> Trainer:
    vae, clip = parts
    torch.manual_seed(1)
    unet = UniAnimateUNet(_unet_config(dropout=0.1))  # dropout draws from torch's global RNG
    task = DiffusionTask(ProceduralPeople(5, F, W, H), vae, clip, DiffusionConfig(batch_size=2), torch.device("cpu"))
    cfg = OptimConfig(lr=1e-3, max_steps=4, save_every=2, log_every=1, grad_accum=2, ema_decay=0.9, seed=9)
    return Trainer(unet, task, out, cfg, name="unet")


def test_resume_equals_uninterrupted_run(parts: tuple[LatentVAE, ClipEncoder], tmp_path: Path) -> None:
    full = _resume_trainer(parts, tmp_path / "full")
    full.run()
    part = _resume_trainer(parts, tmp_path / "part")
    part.run(steps=2)
    torch.manual_seed(12345)  # a fresh process: the global RNG state comes from the checkpoint
    again = _resume_trainer(parts, tmp_path / "part")
    assert again.resume() and again.step == 2 and again.position == 4
    again.run()
    for (k, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k in full.ema.shadow:
        assert torch.equal(full.ema.shadow[k], again.ema.shadow[k]), k
    log_full = (tmp_path / "full" / "unet_loss.csv").read_text().splitlines()
    log_part = (tmp_path / "part" / "unet_loss.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in log_full] == [r.split(",")[1] for r in log_part]
    assert (tmp_path / "part" / "unet_loss.png").is_file()


def test_each_condition_dropout_drops_only_that_condition(parts: tuple[LatentVAE, ClipEncoder]) -> None:
    cond = _fixed_cond(parts)
    unet = UniAnimateUNet(_unet_config()).init_random_weights_(0, scale=0.5).eval()
    x = torch.randn_like(cond.latents)
    t = torch.tensor([500, 500])
    zero_y = parts[1].zero_y
    full = dict(image_embedding=cond.image_embedding, ref_latent=cond.ref_latent, ref_pose=cond.ref_pose,
                pose=cond.pose, first_frame=cond.first_frame)
    without = {"image_embedding": ("image_embedding",), "reference": ("ref_latent", "ref_pose"),
               "first_frame": ("first_frame",), "pose": ("pose",)}
    with torch.no_grad():
        v_full = unet(x, t, zero_y, **full)
        for i, name in enumerate(CONDITIONS):
            drop = torch.zeros(2, len(CONDITIONS), dtype=torch.bool)
            drop[0, i] = True  # row 0 drops condition i only; row 1 keeps everything
            v = unet(x, t, zero_y, drop_conditions=drop, **full)
            kw = {k: (None if k in without[name] else val) for k, val in full.items()}
            v_none = unet(x, t, zero_y, **kw)
            torch.testing.assert_close(v[0], v_none[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v[1], v_full[1], rtol=1e-5, atol=1e-5)
            assert (v[0] - v_full[0]).abs().max() > 1e-4, name
        # the (B,) form still drops every condition of a row
        v_all = unet(x, t, zero_y, drop_conditions=torch.tensor([True, False]), **full)
        torch.testing.assert_close(v_all[0], unet(x, t, zero_y)[0], rtol=1e-5, atol=1e-5)


def test_lora_round_trip_touches_only_adapted_layers(parts: tuple[LatentVAE, ClipEncoder], tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from unianimate.training.lora import add_lora, apply_lora_file, load_lora, merge_lora, save_lora

    cond = _fixed_cond(parts)
    zero_y = parts[1].zero_y
    base = UniAnimateUNet(_unet_config(dropout=0.0)).init_random_weights_(1, scale=0.5)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    unet = UniAnimateUNet(_unet_config(dropout=0.0))
    unet.load_state_dict(base_sd)
    add_lora(unet, rank=2)
    trainable = [k for k, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    cfg = DiffusionConfig(condition_dropout=(0.0, 0.0, 0.0, 0.0))
    trainer = Trainer(unet, lambda m, p, g: diffusion_loss(m, cond, zero_y, g, cfg), tmp_path,
                      OptimConfig(lr=1e-2, ema_decay=0.0))
    for _ in range(3):
        trainer.train_step()
    # base weights untouched, adapters changed
    for k, v in unet.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, base_sd[k.replace(".base_layer.", ".")]), k
    path = save_lora(unet, tmp_path / "adapters.safetensors")
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert saved and all("lora_" in k for k in saved)
    assert {k.rsplit(".lora_", 1)[0].rsplit(".", 1)[-1] for k in saved} <= {"to_q", "to_k", "to_v", "0"}
    fresh = UniAnimateUNet(_unet_config(dropout=0.0))
    fresh.load_state_dict(base_sd)
    load_lora(fresh, path)
    x = torch.randn_like(cond.latents)
    t = torch.tensor([300, 700])
    kw = dict(image_embedding=cond.image_embedding, pose=cond.pose)
    unet.eval(), fresh.eval()
    with torch.no_grad():
        a, b = unet(x, t, zero_y, **kw), fresh(x, t, zero_y, **kw)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (a - base.eval()(x, t, zero_y, **kw)).abs().max() > 1e-6
        folded = UniAnimateUNet(_unet_config(dropout=0.0))
        folded.load_state_dict(base_sd)
        assert apply_lora_file(folded, path) == len(saved) // 2  # one A and one B per layer
        torch.testing.assert_close(folded.eval()(x, t, zero_y, **kw), a, rtol=1e-4, atol=1e-5)
        merged = UniAnimateUNet(_unet_config(dropout=0.0))
        merged.load_official_state_dict(merge_lora(fresh))
        torch.testing.assert_close(merged.eval()(x, t, zero_y, **kw), a, rtol=1e-4, atol=1e-5)


def _write_frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    clip = sample_clip(0, 0, n, W, H)
    for i, f in enumerate(clip.frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")


def _write_poses(path: Path, n: int) -> None:
    from unianimate.pose.synthetic import synthetic_pose

    save_pose_sequence(PoseSequence([synthetic_pose() for _ in range(n)], fps=8.0, width=W, height=H), path)


def test_clip_folder_reads_good_clips(tmp_path: Path) -> None:
    _write_frames(tmp_path / "dance_a", 5)
    _write_poses(tmp_path / "dance_a" / "poses.json", 5)
    data = ClipFolder(tmp_path, seed=0, frames=4, width=W, height=H)
    item = data[3]
    assert item.frames.shape == (4, H, W, 3) and item.poses.shape == (4, H, W, 3)
    assert item.reference.shape == (H, W, 3) and item.name == "dance_a"
    assert np.array_equal(data[3].frames, item.frames)


@pytest.mark.parametrize("problem", ["short", "mismatch", "unreadable", "no_poses"])
def test_bad_clips_get_messages_naming_them(tmp_path: Path, problem: str) -> None:
    _write_frames(tmp_path / "good_clip", 5)
    _write_poses(tmp_path / "good_clip" / "poses.json", 5)
    if problem == "short":
        _write_frames(tmp_path / "tiny_clip", 2)
        _write_poses(tmp_path / "tiny_clip" / "poses.json", 2)
        name, words = "tiny_clip", "shorter than a training segment"
    elif problem == "mismatch":
        _write_frames(tmp_path / "odd_clip", 5)
        _write_poses(tmp_path / "odd_clip" / "poses.json", 3)
        name, words = "odd_clip", "3 poses but 5 frames"
    elif problem == "unreadable":
        (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
        _write_poses(tmp_path / "broken.json", 5)
        name, words = "broken.mp4", "cannot read it"
    else:
        _write_frames(tmp_path / "bare_clip", 5)
        name, words = "bare_clip", "has no poses"
    with pytest.raises(DataError) as err:
        ClipFolder(tmp_path, seed=0, frames=4, width=W, height=H)
    msg = str(err.value)
    assert name in msg and words in msg, msg
    assert str(tmp_path) not in msg


def test_recipe_round_trip() -> None:
    from unianimate.training.demo import RECIPES, DemoRecipe

    for recipe in RECIPES.values():
        assert DemoRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_recipes_keep_vae_and_unet_latents_consistent() -> None:
    from unianimate.training.demo import RECIPES

    for recipe in RECIPES.values():
        assert recipe.unet.in_dim == recipe.unet.out_dim == recipe.vae.latent_channels


def test_person_weights_mark_the_drawn_person_only() -> None:
    from unianimate.training.vae_stage import person_weights

    clip = sample_clip(1, 2, frames=2)
    x = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (F,3,H,W) in [-1,1]
    w = person_weights(x, 5.0)
    assert w.shape == (2, 1, x.shape[2], x.shape[3])
    assert set(torch.unique(w).tolist()) == {1.0, 5.0}
    bg = torch.tensor(clip.frames[0, 0, 0], dtype=torch.int16)
    differs = (torch.from_numpy(clip.frames[0]).to(torch.int16) - bg).abs().amax(dim=-1) > 24  # (H,W)
    assert torch.equal(w[0, 0] == 5.0, differs)
    assert 0.02 < differs.float().mean() < 0.4  # a person, not the whole frame
    assert torch.equal(person_weights(x, 1.0), torch.ones_like(w))


def test_metrics_on_known_answers() -> None:
    from unianimate.training.metrics import moving_psnr, pose_following

    clip = sample_clip(1, 2, frames=6)
    assert pose_following(clip.frames, clip.frames) == 1.0
    assert pose_following(clip.frames[::-1].copy(), clip.frames) <= 2 / 6  # only a middle frame can hit
    assert moving_psnr(clip.frames, clip.frames, clip.reference) == float("inf")
    repeated = np.repeat(clip.reference[None], 6, axis=0)
    assert 0 < moving_psnr(repeated, clip.frames, clip.reference) < 20


def test_stopping_saves_between_checkpoints(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 1)
    calls = {"n": 0}

    def loss_fn(m: torch.nn.Module, position: int, gen: torch.Generator) -> torch.Tensor:
        return m(torch.randn(4, 3, generator=gen)).pow(2).mean()

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    trainer = Trainer(model, loss_fn, tmp_path, OptimConfig(max_steps=100, save_every=50), name="toy")
    trainer.run(should_stop=stop)
    assert trainer.step == 3 and trainer.latest_checkpoint() == trainer.checkpoint_path(3)


def test_any_pose_sequence_drives_a_look() -> None:
    from unianimate.pose import load_pose_sequence
    from unianimate.training.people import Look, sequence_clip

    seq = load_pose_sequence(Path(__file__).resolve().parents[1] / "assets" / "example_dance.json")
    clip = sequence_clip(Look(), seq.with_poses(list(seq)[:3]), "example", width=64, height=96)
    assert clip.frames.shape == (3, 96, 64, 3) and np.array_equal(clip.reference, clip.frames[0])


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_finetune_on_a_clip_folder(tmp_path: Path, lora_rank: int) -> None:
    if lora_rank:
        pytest.importorskip("peft")
    from tests.test_pipeline import _write_tiny_weights
    from unianimate.training.finetune import FULL_FILENAME, LORA_FILENAME, FinetuneOptions, finetune

    _write_tiny_weights(tmp_path / "weights")
    _write_frames(tmp_path / "clips" / "dance_a", 4)
    _write_poses(tmp_path / "clips" / "dance_a" / "poses.json", 4)
    opts = FinetuneOptions(data=tmp_path / "clips", weights=str(tmp_path / "weights"), run_dir=tmp_path / "run",
                           frames=2, width=W, height=H, lora_rank=lora_rank, steps=2, lr=1e-3, save_every=2,
                           device="cpu")
    trainer = finetune(opts)
    assert trainer.step == 2
    out = tmp_path / "run" / (LORA_FILENAME if lora_rank else FULL_FILENAME)
    assert out.is_file()
    if not lora_rank:  # the released layout: loads strictly into a UNet of the same config
        base = UniAnimateUNet(UNetConfig.tiny())
        base.load_official_state_dict(torch.load(out, weights_only=True))
