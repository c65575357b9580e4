"""Fine-tuning a UniAnimate UNet (the released one, or any ``from_pretrained`` folder) on your clips.

Full fine-tuning trains every UNet parameter and writes ``unet_finetuned.pth`` (EMA weights, the
released state-dict layout). LoRA (``lora_rank > 0``) trains adapters only and writes
``lora_adapters.safetensors``, loaded on its own with :func:`unianimate.training.lora.load_lora`.
CLIP and the VAE stay frozen (as in the paper).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unianimate.utils import resolve_device

from .data import ClipFolder
from .diffusion import PAPER_DROPOUT, DiffusionConfig, DiffusionTask
from .lora import add_lora, save_lora
from .trainer import OptimConfig, Trainer

logger = logging.getLogger(__name__)

FULL_FILENAME = "unet_finetuned.pth"
LORA_FILENAME = "lora_adapters.safetensors"


@dataclass(frozen=True)
class FinetuneOptions:
    """What to fine-tune on what (see :func:`finetune`)."""

    data: Path
    weights: str
    run_dir: Path
    frames: int = 16
    width: int = 512
    height: int = 768
    lora_rank: int = 0
    steps: int = 1000
    lr: float = 1e-5
    batch_size: int = 1
    grad_accum: int = 1
    seed: int = 0
    device: str = "auto"
    extract_poses: bool = False
    save_every: int = 100
    condition_dropout: tuple[float, ...] = PAPER_DROPOUT
    workers: int = 0


def _pose_extractor():
    from unianimate.pose.dwpose import DWPoseDetector

    detector = DWPoseDetector.from_pretrained()

    def extract(frames: np.ndarray) -> list:
        return [detector(f).pose for f in frames]

    return extract


def finetune(opts: FinetuneOptions) -> Trainer:
    """Run (or resume) a fine-tuning; returns the trainer after the last step."""
    from unianimate.pipeline import UniAnimatePipeline

    device = resolve_device(opts.device)
    data = ClipFolder(opts.data, opts.seed, opts.frames, opts.width, opts.height,
                      pose_extractor=_pose_extractor() if opts.extract_poses else None)
    pipe = UniAnimatePipeline.from_pretrained(opts.weights, device=device, dtype=torch.float32)
    unet = pipe.unet
    if opts.lora_rank > 0:
        add_lora(unet, opts.lora_rank)
        name = "lora"
    else:
        unet.requires_grad_(True)
        name = "finetune"
    amp = "bf16" if device.type == "cuda" else "none"
    task = DiffusionTask(data, pipe.vae, pipe.clip, DiffusionConfig(opts.condition_dropout, 0.1, opts.batch_size),
                         device, opts.workers)
    trainer = Trainer(unet, task, opts.run_dir, OptimConfig(lr=opts.lr, max_steps=opts.steps,
                                                            save_every=opts.save_every, grad_accum=opts.grad_accum,
                                                            amp=amp, seed=opts.seed), name=name)
    trainer.resume()

    def export(tr: Trainer) -> None:
        live = {k: v.detach().clone() for k, v in tr.params.items()}
        tr.ema.copy_to(tr.model)
        try:
            if opts.lora_rank > 0:
                save_lora(tr.model, opts.run_dir / LORA_FILENAME)
            else:
                torch.save({k: v.cpu() for k, v in tr.model.state_dict().items()}, opts.run_dir / FULL_FILENAME)
        finally:
            with torch.no_grad():
                for k, v in live.items():
                    tr.params[k].copy_(v)

    trainer.run(on_save=export)
    return trainer
