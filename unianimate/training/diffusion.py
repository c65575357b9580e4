"""The UniAnimate training objective (paper §3-4) on the sampler's schedule.

v-prediction MSE with the released model's zero-terminal-SNR ``alpha_bar`` (:mod:`unianimate.sampling`),
offset noise, and independent dropout of each condition of :data:`~unianimate.models.unet.CONDITIONS`
(image embedding; reference latent + reference pose; first frame; driving pose). A segment whose
first-frame condition is kept is a continuation from a given first frame (the unified noised input);
one whose first frame is dropped starts from noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unianimate.errors import InputError
from unianimate.models.clip import ClipEncoder
from unianimate.models.unet import CONDITIONS
from unianimate.models.vae import LatentVAE
from unianimate.sampling import NUM_TRAIN_TIMESTEPS, reference_alphas_cumprod
from unianimate.utils import check_known_keys

from .data import BatchFeed, to_pixels

PAPER_DROPOUT = (0.5, 0.5, 0.5, 0.5)


@dataclass(frozen=True)
class DiffusionConfig:
    """Objective settings; ``condition_dropout`` follows :data:`CONDITIONS`' order."""

    condition_dropout: tuple[float, ...] = PAPER_DROPOUT
    offset_noise: float = 0.1
    batch_size: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition_dropout", tuple(float(p) for p in self.condition_dropout))
        if len(self.condition_dropout) != len(CONDITIONS) or not all(0 <= p <= 1 for p in self.condition_dropout):
            raise InputError(f"condition_dropout must be {len(CONDITIONS)} probabilities in [0, 1] for "
                             f"{CONDITIONS}; got {self.condition_dropout}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffusionConfig":
        """Build from a dict; unknown keys raise."""
        check_known_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"condition_dropout": list(self.condition_dropout), "offset_noise": self.offset_noise,
                "batch_size": self.batch_size}


def sample_drops(batch: int, probs: tuple[float, ...], generator: torch.Generator) -> torch.Tensor:
    """(B, 4) bool: each condition of each row dropped independently with its probability."""
    u = torch.rand((batch, len(probs)), generator=generator)
    return u < torch.tensor(probs, dtype=u.dtype)


def noised(x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator,
           offset_noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, v) for clean latents x0 (B,C,F,h,w) at timesteps t (B,): offset noise as the sampler's
    initial latents; ``v = sqrt(ab) eps - sqrt(1 - ab) x0``."""
    b, c, f = x0.shape[:3]
    noise = torch.randn(x0.shape, generator=generator)
    noise = noise + offset_noise * torch.randn((b, c, f, 1, 1), generator=generator)
    noise = noise.to(x0.device)
    ab = reference_alphas_cumprod()[t.cpu()].float().to(x0.device).view(b, 1, 1, 1, 1)
    a, s = ab.sqrt(), (1.0 - ab).sqrt()
    return a * x0 + s * noise, a * noise - s * x0


@dataclass
class Conditions:
    """What the UNet is trained on for one batch (already encoded, on the training device)."""

    latents: torch.Tensor          # (B,4,F,h,w)
    image_embedding: torch.Tensor  # (B,C)
    ref_latent: torch.Tensor       # (B,4,h,w)
    ref_pose: torch.Tensor         # (B,3,H,W)
    pose: torch.Tensor             # (B,3,F,H,W)
    first_frame: torch.Tensor      # (B,3,H,W)


@torch.no_grad()
def encode_batch(batch: dict[str, torch.Tensor], vae: LatentVAE, clip: ClipEncoder,
                 generator: torch.Generator, device: torch.device) -> Conditions:
    """Encode a collated batch: VAE posterior samples (noise from ``generator``), CLIP embedding."""
    frames = batch["frames"]  # (B,F,H,W,3) uint8
    b, f = frames.shape[:2]
    px = to_pixels(frames).flatten(0, 1)  # (B*F,3,H,W)
    z = vae.encode(px, generator).to(device)  # (B*F,4,h,w)
    latents = z.view(b, f, *z.shape[1:]).transpose(1, 2)  # (B,F,4,h,w) -> (B,4,F,h,w)
    ref_latent = vae.encode(to_pixels(batch["reference"]), generator).to(device)  # (B,4,h,w)
    emb = clip.encode_image(list(batch["reference"].numpy())).to(device)  # (B,C)
    pose = to_pixels(batch["poses"]).transpose(1, 2).to(device)  # (B,F,3,H,W) -> (B,3,F,H,W)
    return Conditions(latents=latents, image_embedding=emb, ref_latent=ref_latent,
                      ref_pose=to_pixels(batch["ref_pose"]).to(device), pose=pose,
                      first_frame=to_pixels(frames[:, 0]).to(device))


def diffusion_loss(unet: nn.Module, cond: Conditions, zero_y: torch.Tensor, generator: torch.Generator,
                   config: DiffusionConfig) -> torch.Tensor:
    """v-prediction MSE at uniform timesteps with per-condition dropout."""
    b = cond.latents.shape[0]
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,), generator=generator)
    x_t, v = noised(cond.latents, t, generator, config.offset_noise)
    drop = sample_drops(b, config.condition_dropout, generator).to(x_t.device)
    pred = unet(x_t, t.to(x_t.device), zero_y, image_embedding=cond.image_embedding, pose=cond.pose,
                ref_pose=cond.ref_pose, ref_latent=cond.ref_latent, first_frame=cond.first_frame,
                drop_conditions=drop)
    return torch.nn.functional.mse_loss(pred.float(), v.float())


class DiffusionTask:
    """``loss_fn`` for :class:`~unianimate.training.trainer.Trainer`: batch ``position`` of
    ``dataset``, encoded and noised with the trainer's generator."""

    def __init__(self, dataset: object, vae: LatentVAE, clip: ClipEncoder, config: DiffusionConfig,
                 device: torch.device, workers: int = 0) -> None:
        self.vae, self.clip, self.config = vae, clip, config
        self.device = torch.device(device)
        self.batches = BatchFeed(dataset, config.batch_size, workers)
        self.zero_y = clip.zero_y.to(self.device)  # (1,77,C)

    def __call__(self, unet: nn.Module, position: int, generator: torch.Generator) -> torch.Tensor:
        cond = encode_batch(self.batches[position], self.vae, self.clip, generator, self.device)
        return diffusion_loss(unet, cond, self.zero_y.to(next(unet.parameters()).dtype), generator, self.config)
