"""Training a small KL autoencoder (a ``diffusers.AutoencoderKL`` of a :class:`VaeConfig`) on frames.

Loss: L1 + MSE reconstruction of a posterior sample plus a small KL term. The latent scaling factor is
then measured (1 / std of the latents) so the diffusion model sees unit-variance latents.

``person_weight`` > 1 weighs the pixels that differ from the image's background colour (its top-left
pixel) that much more: the drawn person covers ~10% of a frame, so with a plain loss the background
dominates and thin limbs are the last thing a small VAE learns, yet they are what the animation is.
"""
from __future__ import annotations

import torch
from torch import nn

from .data import BatchFeed, to_pixels


class VaeTask:
    """``loss_fn``: reconstruct every frame and the reference of batch ``position``."""

    def __init__(self, dataset: object, batch_size: int, kl_weight: float = 1e-6,
                 device: torch.device | str = "cpu", workers: int = 0, person_weight: float = 1.0) -> None:
        self.batches = BatchFeed(dataset, batch_size, workers)
        self.kl_weight = float(kl_weight)
        self.person_weight = float(person_weight)
        self.device = torch.device(device)

    def images(self, position: int) -> torch.Tensor:
        """(N,3,H,W) in [0,1]: the frames and references of batch ``position``."""
        b = self.batches[position]
        frames = to_pixels(b["frames"]).flatten(0, 1)
        return torch.cat([frames, to_pixels(b["reference"])]).to(self.device)

    def __call__(self, vae: nn.Module, position: int, generator: torch.Generator) -> torch.Tensor:
        x = self.images(position) * 2.0 - 1.0
        dist = vae.encode(x).latent_dist
        eps = torch.randn(dist.mean.shape, generator=generator).to(x.device)
        z = dist.mean + dist.std * eps
        rec = vae.decode(z).sample
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).sum(dim=(1, 2, 3)).mean()
        err = rec.float() - x
        if self.person_weight != 1.0:
            err = err * person_weights(x, self.person_weight)
        return err.abs().mean() + err.pow(2).mean() + self.kl_weight * kl


def person_weights(x: torch.Tensor, weight: float, threshold: float = 24 / 127.5) -> torch.Tensor:
    """(N,1,H,W): ``weight`` where a pixel of ``x`` (N,3,H,W) in [-1,1] differs from its top-left pixel
    (the background) by more than ``threshold`` in any channel, else 1."""
    person = (x - x[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > threshold  # (N,1,H,W)
    return 1.0 + (weight - 1.0) * person.to(x.dtype)


@torch.no_grad()
def latent_scale(vae: nn.Module, images: torch.Tensor) -> float:
    """1 / std of the posterior means of ``images`` (N,3,H,W) in [0,1]."""
    vae.eval()
    z = vae.encode(images * 2.0 - 1.0).latent_dist.mean
    return float(1.0 / z.float().std().clamp_min(1e-6))
