"""Writing an exported model folder: safetensors state dicts (optionally float16), the diffusers VAE,
the model card, the size budget, and the swap of a finished export into place.

:func:`unianimate.training.demo.export_model` / ``export_latest`` (``python -m unianimate.train
export``) use these; :mod:`unianimate.demo_model` reads what they write.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unianimate import hub
from unianimate.errors import InputError

logger = logging.getLogger(__name__)

#: the released files' names an earlier export (before safetensors) wrote; a folder holding both
#: them and the safetensors would load the pickle first (:data:`unianimate.hub.UNET_OPTIONS`)
_STALE_KEYS = ("unet", "clip")


def save_tensors(path: Path, state: Mapping[str, torch.Tensor], half: bool = False) -> Path:
    """Write a state dict as ``.safetensors`` atomically (floating tensors as float16 with
    ``half``; every tensor copied contiguous to the CPU, so tied weights are stored once each)."""
    from safetensors.torch import save_file

    def conv(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu")
        return (t.half() if half and t.is_floating_point() else t).contiguous().clone()

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: conv(v) for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return path


def save_vae(src: Path, dest: Path, half: bool = False) -> None:
    """The diffusers VAE folder ``src`` at ``dest`` (its safetensors in float16 with ``half``)."""
    from safetensors.torch import load_file

    if src.resolve() != dest.resolve():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    if half:
        weights = dest / hub.FILES["vae_weights"].filename
        save_tensors(weights, load_file(str(weights)), half=True)


def check_no_released_files(dest: Path) -> None:
    """Refuse a destination holding the released UNet or CLIP (an export must not replace them)."""
    for key in _STALE_KEYS:
        path = dest / hub.FILES[key].filename
        if path.is_file() and path.stat().st_size >= hub.MIN_BYTES[key]:
            raise InputError(f"the export folder {dest.name!r} holds the released {path.name}; "
                             "export into an empty or new folder")


def remove_stale_weights(dest: Path) -> None:
    """Delete the pickled UNet/CLIP an earlier export left in ``dest`` (below the released sizes:
    :func:`check_no_released_files` ran first), so the new safetensors are what loads."""
    for key in _STALE_KEYS:
        path = dest / hub.FILES[key].filename
        if path.is_file() and path.stat().st_size < hub.MIN_BYTES[key]:
            path.unlink()
            logger.info("removed %s of an earlier export from %s", path.name, dest)


def folder_bytes(folder: Path) -> dict[str, int]:
    """Size of every file under ``folder`` (relative POSIX path -> bytes), largest first."""
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def check_budget(folder: Path, max_bytes: int) -> int:
    """Total size of ``folder``; raises ``InputError`` listing the files when above ``max_bytes``
    (0 = no limit)."""
    sizes = folder_bytes(folder)
    total = sum(sizes.values())
    if max_bytes and total > max_bytes:
        listing = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items())
        raise InputError(f"the exported model is {total / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB "
                         f"budget ({listing}); export with --half, or train a smaller recipe "
                         "(--max-mb 0 lifts the limit for an export that is not shipped)")
    return total


def replace_folder(staging: Path, dest: Path, marker: str) -> None:
    """Move the finished export ``staging`` to ``dest``; an existing ``dest`` must be empty or an
    earlier export (holding ``marker``), which is then removed."""
    if dest.exists():
        if not dest.is_dir() or (any(dest.iterdir()) and not (dest / marker).is_file()):
            raise InputError(f"{dest.name!r} exists and is not an exported model folder; export "
                             "into an empty or new folder")
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)


def model_card(name: str, recipe: Mapping[str, Any], unet_step: int, steps: int, guidance: float,
               files: Mapping[str, int], half: bool, parameters: Mapping[str, int],
               recipe_name: str | None = None) -> str:
    """``MODEL_CARD.md`` of an exported demo model: what it is and is not, how it was made."""
    unet, vae = recipe.get("unet", {}), recipe.get("vae", {})
    rows = "\n".join(f"| `{f}` | {b / 1e6:.2f} MB |" if b >= 10_000 else f"| `{f}` | {b:,} bytes |"
                     for f, b in files.items())
    params = ", ".join(f"{part} {n / 1e6:.1f} M" for part, n in parameters.items())
    how = (f"`OMP_NUM_THREADS=1 python -m unianimate.train demo --run-dir RUN --recipe {recipe_name} "
           f"--seed {recipe.get('seed')} --threads 1 --steps {unet_step}` (a fresh RUN folder: the VAE stage, "
           f"then {unet_step} UNet steps)"
           if recipe_name else "a custom recipe (`recipe.json` in a run folder, then "
           "`python -m unianimate.train demo --run-dir RUN`)")
    return f"""# {name}

**This is not UniAnimate.** It is a small model of the same architecture (UniAnimate's UNet, an
open_clip image encoder and a KL autoencoder, the classes of this repository) trained by this
project from scratch on procedural drawn people only: flat-colour cartoon figures on
plain backgrounds made by `unianimate/training/people.py`. It never saw a photo or a real person.
It animates figures like its own example in this folder (`example_reference.png`, a held-out drawn
person, with `example_dance.json`, the app's example dance fitted to the native size); on photos
of people its output is meaningless.

- Native size: {recipe.get('width')}x{recipe.get('height')} px, {recipe.get('frames')} frames per segment;
  sampler defaults: {steps} DDIM steps, guidance {guidance:.1f}.
- UNet: dim {unet.get('dim')}, mult {unet.get('dim_mult')}, context {unet.get('context_dim')}, {unet.get('in_dim')} latent
  channels; trained {unet_step} steps (EMA weights).
- VAE: channels {vae.get('block_out_channels')}, {vae.get('latent_channels')} latent channels.
- CLIP: a tiny open_clip ViT with seeded random weights (frozen): its image embedding is a fixed
  random projection of the reference; the reference latent carries the appearance.
- Parameters: {params}. Weights stored in {'float16' if half else 'float32'} (safetensors).
- Training recipe: `recipe.json` (every setting); reproduce with
  {how}, then
  `python -m unianimate.train export --run-dir RUN --dest assets/demo{' --half' if half else ''} --steps {steps} --guidance {guidance:g}`.
- Quality on held-out drawn people, the bar and how it was measured: `docs/DEMO_MODEL.md`.

Use: `python app.py --model demo` (the app's default when the released UniAnimate weights are not
on the machine), or `python -m unianimate --model demo ...`.

| file | size |
|---|---|
{rows}
"""


__all__ = ["save_tensors", "save_vae", "check_no_released_files", "remove_stale_weights",
           "folder_bytes", "check_budget", "replace_folder", "model_card"]
