"""LoRA adapters on the UNet through ``peft`` (saved and loaded on their own, as safetensors).

``add_lora`` injects rank-``r`` adapters into the attention projections (``to_q``, ``to_k``, ``to_v``,
``to_out.0``) of the spatial and temporal transformers and freezes everything else. The adapter file
holds only the adapter tensors plus their settings in its metadata; ``load_lora`` injects the same
adapters into a base UNet and fills them. ``merge_lora`` folds them into the base weights (the
result is a plain UNet state dict the pipeline loads).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unianimate.errors import CheckpointError, InputError
from unianimate.utils import file_sha256

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_NAME = "default"


def _peft():
    try:
        import peft
    except ImportError:
        raise InputError("LoRA needs the 'peft' package: pip install peft") from None
    return peft


def add_lora(unet: nn.Module, rank: int = 8, alpha: float | None = None,
             targets: tuple[str, ...] = DEFAULT_TARGETS, dropout: float = 0.0) -> nn.Module:
    """Inject LoRA adapters into ``unet`` (in place) and make only them trainable."""
    peft = _peft()
    if int(rank) < 1:
        raise InputError(f"LoRA rank must be >= 1, got {rank}")
    cfg = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else rank),
                          target_modules=list(targets), lora_dropout=float(dropout), bias="none")
    peft.inject_adapter_in_model(cfg, unet, adapter_name=ADAPTER_NAME)
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    unet._unianimate_lora = {"rank": int(rank), "alpha": float(cfg.lora_alpha), "targets": list(targets),
                             "dropout": float(dropout)}
    return unet


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (peft's names, adapter name stripped)."""
    peft = _peft()
    return {k: v.detach().cpu().contiguous() for k, v in peft.get_peft_model_state_dict(unet).items()}


def save_lora(unet: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapters to a ``.safetensors`` file with their settings in the metadata."""
    from safetensors.torch import save_file

    settings = getattr(unet, "_unianimate_lora", None)
    if settings is None:
        raise InputError("this UNet has no LoRA adapters; call add_lora first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_state_dict(unet), str(path), metadata={"unianimate_lora": json.dumps(settings)})
    return path


def load_lora(unet: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Inject the adapters described in ``path`` into a base ``unet`` and load their values."""
    peft = _peft()
    path = Path(path)
    state, s = read_lora(path)
    add_lora(unet, s["rank"], s["alpha"], tuple(s["targets"]), s.get("dropout", 0.0))
    result = peft.set_peft_model_state_dict(unet, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise CheckpointError(f"{path.name} does not fit this UNet: unexpected adapter keys {missing[:3]}")
    return unet


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The adapter tensors and settings of a :func:`save_lora` file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read LoRA adapters {path.name}: {exc}") from None
    if "unianimate_lora" not in meta:
        raise CheckpointError(f"{path.name} is not a UniAnimate LoRA adapter file (no settings in its "
                              "metadata); save adapters with save_lora")
    return state, json.loads(meta["unianimate_lora"])


@torch.no_grad()
def apply_lora_file(unet: nn.Module, path: str | os.PathLike) -> int:
    """Fold the adapters of ``path`` into a plain UNet's weights in place (W += alpha/r * B @ A),
    without peft and without a second copy of the UNet; returns the number of layers changed."""
    state, settings = read_lora(path)
    scale = float(settings["alpha"]) / float(settings["rank"])
    params = dict(unet.named_parameters())
    done = 0
    for key, a in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        base = key[: -len(".lora_A.weight")]
        b = state.get(base + ".lora_B.weight")
        target = params.get(base + ".weight")
        if b is None or target is None or target.shape != (b.shape[0], a.shape[1]):
            raise CheckpointError(f"{Path(path).name} does not fit this UNet at {base!r}")
        target.add_((b.float() @ a.float() * scale).to(target.device, target.dtype))
        done += 1
    if not done:
        raise CheckpointError(f"{Path(path).name} holds no LoRA layers")
    return done


def lora_model_name(base: str, path: str | os.PathLike) -> str:
    """The model name of ``base`` with the adapter file ``path`` folded in, e.g.
    ``"UniAnimate (...) + LoRA style.safetensors (sha256 0123456789ab)"``: what candidates record,
    so another adapter (or none) shows up on re-render like another model does."""
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read LoRA adapters {Path(path).name}: {exc.strerror}") from None
    return f"{base} + LoRA {Path(path).name} (sha256 {digest[:12]})"


def fold_lora_into_pipeline(pipe: Any, path: str | os.PathLike) -> int:
    """Fold the adapter file ``path`` into ``pipe.unet`` and name the pipeline after it
    (:func:`lora_model_name`); returns the number of adapted layers."""
    name = lora_model_name(str(pipe.model_name), path)
    layers = apply_lora_file(pipe.unet, path)
    pipe.model_name = name
    return layers


def merge_lora(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The base UNet's state dict with the adapters folded in (adapter names removed)."""
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in unet.named_modules():
            if hasattr(module, "merge") and hasattr(module, "base_layer"):
                module.merge()
        for k, v in unet.state_dict().items():
            if "lora_" in k:
                continue
            merged[k.replace(".base_layer.", ".")] = v.detach().cpu()
    return merged
