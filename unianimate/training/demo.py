"""The demo model recipe: a small UniAnimate (same classes) trained on procedural drawn people.

Two stages in one run folder, each resumable on its own:

1. ``vae``: a small AutoencoderKL learns the drawn frames; its latent scale is measured and it is
   written to ``<run>/model/vae`` (diffusers layout).
2. ``unet``: the UNet learns the diffusion objective (:mod:`unianimate.training.diffusion`) in that
   latent space with a frozen tiny CLIP image encoder (seeded random weights: its embedding is a fixed
   random projection of the reference; the reference latent carries the appearance). Each checkpoint
   also refreshes ``<run>/model`` (EMA weights as safetensors + ``unianimate_config.json``)
   so ``UniAnimatePipeline.from_pretrained(<run>/model)`` evaluates the latest state.

``recipe.json`` in the run folder fixes every setting; a rerun of the same command resumes.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from unianimate import hub
from unianimate.demo_model import (DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULTS_FILENAME, DEMO_MODEL_NAME,
                                   MAX_BYTES, MODEL_CARD_FILENAME, RECIPE_FILENAME, TRAINED_FILENAME)
from unianimate.errors import InputError
from unianimate.models.clip import ClipConfig, ClipEncoder
from unianimate.models.config import UNetConfig
from unianimate.models.vae import LatentVAE, VaeConfig
from unianimate.utils import atomic_write_json, check_known_keys

from .data import ProceduralPeople
from .diffusion import DiffusionConfig, DiffusionTask
from .trainer import OptimConfig, Trainer
from .vae_stage import VaeTask, latent_scale

logger = logging.getLogger(__name__)

# the exported layout from_pretrained reads (unianimate.hub: an exported model's safetensors)
UNET_FILENAME = hub.FILES["unet_safetensors"].filename
CLIP_FILENAME = hub.FILES["clip_safetensors"].filename


@dataclass(frozen=True)
class DemoRecipe:
    """Everything a demo run depends on (sizes, the three architectures, both stages' settings)."""

    width: int = 64
    height: int = 128
    frames: int = 8
    seed: int = 0
    # GroupNorm(1): on flat colours a group norm over few channels removes each group's mean, i.e. the
    # colour itself (with 8 groups the VAE stayed grey); 8 latent channels keep thin limbs and colours
    vae: VaeConfig = VaeConfig(block_out_channels=(16, 32, 32, 64), layers_per_block=1, norm_num_groups=1,
                               latent_channels=8, mid_block_add_attention=False, sample_size=128,
                               scaling_factor=1.0)
    unet: UNetConfig = UNetConfig(in_dim=8, out_dim=8, dim=64, context_dim=64, dim_mult=(1, 2, 2),
                                  num_heads=2, head_dim=32,
                                  num_res_blocks=1, attn_scales=(1.0, 0.5), norm_groups=16, dropout=0.0,
                                  temporal_dropout=0.0, adapter_dropout=0.0)
    clip_width: int = 64
    vae_batch: int = 5  # clips per VAE step; each gives one frame and its reference (10 images, 5 looks)
    vae_kl_weight: float = 1e-6
    vae_person_weight: float = 1.0  # see vae_stage.person_weights (1: plain loss, as runs before it had)
    # posterior log-variance starts here (quant_conv bias): with diffusers' init (std ~1) the posterior
    # noise drowns the latents and a fresh VAE decodes grey blobs for hundreds of steps
    vae_init_logvar: float = -6.0
    vae_optim: OptimConfig = OptimConfig(lr=8e-4, max_steps=3000, save_every=50, log_every=10,
                                         ema_decay=0.99, warmup_steps=50, grad_clip=0.0)
    unet_optim: OptimConfig = OptimConfig(lr=3e-4, max_steps=200_000, save_every=50, log_every=10,
                                          ema_decay=0.999, warmup_steps=100)
    # the paper drops each condition with p=0.5; the demo keeps the pose and the reference far more
    # often (and gives the first frame less often) so that a short CPU run learns to follow the pose
    diffusion: DiffusionConfig = DiffusionConfig(condition_dropout=(0.1, 0.1, 0.7, 0.05), batch_size=4)
    workers: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DemoRecipe":
        """Parse ``recipe.json``; unknown keys raise."""
        check_known_keys(cls, data, RECIPE_FILENAME)
        d = dict(data)
        for key, kind in (("vae", VaeConfig), ("unet", UNetConfig), ("vae_optim", OptimConfig),
                          ("unet_optim", OptimConfig), ("diffusion", DiffusionConfig)):
            if key in d:
                d[key] = kind.from_dict(d[key])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            out[f] = v.to_dict() if hasattr(v, "to_dict") else v
        return out

    def clip_config(self) -> ClipConfig:
        return ClipConfig.tiny(width=self.clip_width)

    def with_seed(self, seed: int) -> "DemoRecipe":
        """The same recipe with ``seed`` in the recipe and in both stages' RNGs."""
        return replace(self, seed=seed, vae_optim=replace(self.vae_optim, seed=seed),
                       unet_optim=replace(self.unet_optim, seed=seed + 1))


RECIPES: dict[str, DemoRecipe] = {
    # 2 CPU cores: 64x128, 8 frames, ~10 M-parameter UNet
    "cpu": DemoRecipe(vae_person_weight=5.0),
    # one large GPU for a few minutes: 128x192 (latent 24x16), wider UNet, bigger batches
    "gpu": DemoRecipe(
        width=128, height=192, frames=8,
        vae=VaeConfig(block_out_channels=(32, 64, 64, 128), layers_per_block=1, norm_num_groups=1,
                      latent_channels=8, mid_block_add_attention=False, sample_size=192, scaling_factor=1.0),
        vae_person_weight=5.0,
        unet=UNetConfig(in_dim=8, out_dim=8, dim=128, context_dim=128, dim_mult=(1, 2, 2), num_heads=4, head_dim=32,
                        num_res_blocks=1, attn_scales=(1.0, 0.5), norm_groups=32, dropout=0.0,
                        temporal_dropout=0.0, adapter_dropout=0.0),
        clip_width=128, vae_batch=32,
        vae_optim=OptimConfig(lr=8e-4, max_steps=1500, save_every=500, log_every=50, ema_decay=0.99,
                              warmup_steps=50, grad_clip=0.0, amp="bf16"),
        unet_optim=OptimConfig(lr=4e-4, max_steps=6000, save_every=500, log_every=50, ema_decay=0.999,
                               warmup_steps=200, amp="bf16"),
        diffusion=DiffusionConfig(condition_dropout=(0.1, 0.1, 0.5, 0.1), batch_size=32), workers=12),
}


def load_or_write_recipe(run_dir: Path, recipe: DemoRecipe) -> DemoRecipe:
    """The run folder's recipe (written on the first call; a rerun must not change it)."""
    path = run_dir / RECIPE_FILENAME
    if path.is_file():
        saved = DemoRecipe.from_dict(json.loads(path.read_text()))
        if saved != recipe:
            logger.warning("%s exists: using the run's saved recipe, not the one given", path)
        return saved
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, recipe.to_dict())
    return recipe


def build_clip(recipe: DemoRecipe) -> tuple[dict[str, torch.Tensor], ClipEncoder]:
    """The tiny CLIP's state dict (seeded random weights, frozen) and its encoder."""
    import open_clip

    cfg = recipe.clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = open_clip.create_model(cfg.model_name, pretrained=None, **cfg.model_kwargs())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    enc = ClipEncoder(model, name="tiny open_clip (random, frozen)")
    _ = enc.zero_y
    return state, enc


def _vae_dir(run_dir: Path) -> Path:
    return run_dir / "model" / "vae"


def run_vae_stage(run_dir: Path, recipe: DemoRecipe, device: torch.device,
                  should_stop: Callable[[], bool] | None = None) -> bool:
    """Train (or resume) the VAE; when finished, export it with its measured scale. True when done."""
    from diffusers import AutoencoderKL

    if (_vae_dir(run_dir) / "config.json").is_file():
        return True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        vae = AutoencoderKL(**recipe.vae.diffusers_kwargs()).to(device)
    with torch.no_grad():
        vae.quant_conv.bias[recipe.vae.latent_channels:] = recipe.vae_init_logvar
    # one frame per clip: a clip's frames share one look, so more clips per step teach colours faster
    data = ProceduralPeople(recipe.seed, 1, recipe.width, recipe.height)
    task = VaeTask(data, recipe.vae_batch, recipe.vae_kl_weight, device, recipe.workers, recipe.vae_person_weight)
    trainer = Trainer(vae, task, run_dir, recipe.vae_optim, name="vae")
    trainer.resume()
    trainer.run(should_stop=should_stop)
    if trainer.step < recipe.vae_optim.max_steps:
        return False
    trainer.ema.copy_to(vae)
    probe = torch.cat([VaeTask(data, recipe.vae_batch, device=device).images(10_000_000 + i) for i in range(4)])
    scale = latent_scale(vae, probe)
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(str(_vae_dir(run_dir)))
    logger.info("VAE stage done: latent scale %.4f, written to %s", scale, _vae_dir(run_dir))
    return True


def export_model(run_dir: Path, recipe: DemoRecipe, unet_state: dict[str, torch.Tensor],
                 clip_state: dict[str, torch.Tensor], dest: Path | None = None,
                 half: bool = False) -> Path:
    """Write a from_pretrained folder: UNet and CLIP state dicts (safetensors; float16 with
    ``half``), the diffusers VAE, ``unianimate_config.json``."""
    from unianimate.pipeline import CONFIG_FILENAME

    from .export import check_no_released_files, remove_stale_weights, save_tensors, save_vae

    dest = dest or run_dir / "model"
    dest.mkdir(parents=True, exist_ok=True)
    check_no_released_files(dest)
    vae_src = _vae_dir(run_dir)
    save_vae(vae_src, dest / "vae", half)
    vae_cfg = json.loads((vae_src / "config.json").read_text())
    save_tensors(dest / UNET_FILENAME, unet_state, half)
    save_tensors(dest / CLIP_FILENAME, clip_state, half)
    remove_stale_weights(dest)
    vae = replace(recipe.vae, scaling_factor=float(vae_cfg["scaling_factor"]))
    atomic_write_json(dest / CONFIG_FILENAME, {"unet": recipe.unet.to_dict(), "clip": recipe.clip_config().to_dict(),
                                               "vae": vae.to_dict(), "model_name": DEMO_MODEL_NAME})
    return dest


def run_unet_stage(run_dir: Path, recipe: DemoRecipe, device: torch.device,
                   should_stop: Callable[[], bool] | None = None, steps: int | None = None) -> Trainer:
    """Train (or resume) the UNet; each checkpoint refreshes ``<run>/model`` with the EMA weights."""
    from unianimate.models.unet import UniAnimateUNet

    vae = LatentVAE.from_diffusers_folder(_vae_dir(run_dir), device=device)
    clip_state, clip = build_clip(recipe)
    clip.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed + 2)
        unet = UniAnimateUNet(recipe.unet).to(device)
    data = ProceduralPeople(recipe.seed + 3, recipe.frames, recipe.width, recipe.height)
    task = DiffusionTask(data, vae, clip, recipe.diffusion, device, recipe.workers)
    trainer = Trainer(unet, task, run_dir, recipe.unet_optim, name="unet")
    trainer.resume()

    def export(tr: Trainer) -> None:
        ema = dict(tr.model.state_dict())
        ema.update({k: v for k, v in tr.ema.shadow.items()})
        export_model(run_dir, recipe, ema, clip_state)
        atomic_write_json(run_dir / "model" / TRAINED_FILENAME, {"unet_step": tr.step, "data_position": tr.position})

    trainer.run(steps=steps, should_stop=should_stop, on_save=export)
    return trainer


def write_example(folder: Path, recipe: DemoRecipe) -> None:
    """The model's own example: the app's example dance fitted to the native size and a held-out
    drawn person in its first pose (the app's example figure is outside the training domain)."""
    from PIL import Image

    from unianimate.demo_model import EXAMPLE_DANCE, EXAMPLE_DANCE_FILENAME, EXAMPLE_REFERENCE_FILENAME
    from unianimate.pose import load_pose_sequence, save_pose_sequence

    from .people import example_for_size

    if not EXAMPLE_DANCE.is_file():
        raise InputError(f"the example dance {EXAMPLE_DANCE.name!r} is missing from assets/; "
                         "run `python assets/make_assets.py`")
    reference, dance = example_for_size(load_pose_sequence(EXAMPLE_DANCE), recipe.width, recipe.height)
    Image.fromarray(reference).save(folder / EXAMPLE_REFERENCE_FILENAME, optimize=True)
    save_pose_sequence(dance, folder / EXAMPLE_DANCE_FILENAME)


def export_latest(run_dir: Path, dest: Path, half: bool = False, max_bytes: int = MAX_BYTES,
                  steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE) -> Path:
    """A from_pretrained folder at ``dest`` from the newest UNet checkpoint's EMA weights, with
    ``recipe.json``, ``trained.json``, ``defaults.json`` (``steps``, ``guidance``) and
    ``MODEL_CARD.md``. Built beside ``dest`` and moved into place only when its size is within
    ``max_bytes`` (0: no limit); an earlier export at ``dest`` is replaced."""
    from .export import check_budget, folder_bytes, model_card, replace_folder

    if not (run_dir / RECIPE_FILENAME).is_file():
        raise InputError(f"{run_dir.name!r} is not a demo run folder (no {RECIPE_FILENAME}); train with "
                         "`python -m unianimate.train demo --run-dir ...` first")
    if steps < 1 or guidance < 0:
        raise InputError(f"--steps must be >= 1 and --guidance >= 0; got {steps} and {guidance}")
    recipe = DemoRecipe.from_dict(json.loads((run_dir / RECIPE_FILENAME).read_text()))
    found = sorted(run_dir.glob("unet-ckpt-*.pt"))
    if not found:
        raise InputError(f"no UNet checkpoint in {run_dir.name!r} yet; train the unet stage first")
    state = torch.load(found[-1], map_location="cpu", weights_only=True)
    weights = dict(state["model"])
    weights.update(state["ema"]["shadow"])
    clip_state, _ = build_clip(recipe)
    staging = dest.with_name(f".{dest.name}.export-tmp")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        out = export_model(run_dir, recipe, weights, clip_state, dest=staging, half=half)
        step = int(state["step"])
        atomic_write_json(out / RECIPE_FILENAME, recipe.to_dict())
        atomic_write_json(out / TRAINED_FILENAME, {"unet_step": step, "data_position": int(state["position"])})
        atomic_write_json(out / DEFAULTS_FILENAME, {"steps": int(steps), "guidance": float(guidance)})
        write_example(out, recipe)
        parameters = {"UNet": sum(v.numel() for v in weights.values()),
                      "CLIP": sum(v.numel() for v in clip_state.values())}
        card = model_card(DEMO_MODEL_NAME, recipe.to_dict(), step, steps, guidance,
                          folder_bytes(out), half, parameters, recipe_name(recipe))
        (out / MODEL_CARD_FILENAME).write_text(card, encoding="utf-8")
        total = check_budget(out, max_bytes)
        replace_folder(out, dest, marker=MODEL_CARD_FILENAME)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported UNet step %d to %s: %.1f MB%s", step, dest, total / 1e6,
                " (float16)" if half else "")
    return dest


def recipe_name(recipe: DemoRecipe) -> str | None:
    """The name of the built-in recipe that ``recipe`` is (with its seed), None for a custom one."""
    return next((name for name, r in RECIPES.items() if r.with_seed(recipe.seed) == recipe), None)


def check_recipe_name(name: str) -> DemoRecipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


__all__ = ["DEMO_MODEL_NAME", "DemoRecipe", "RECIPES", "run_vae_stage", "run_unet_stage", "export_model", "export_latest",
           "load_or_write_recipe", "check_recipe_name", "build_clip"]
