"""The demo model shipped with the app (``assets/demo/``): where it is, whether it is there, and the
studio settings it was made for. Reading only: ``python -m unianimate.train export`` writes the
folder (:mod:`unianimate.training.demo`). No torch, no weights at import.

The folder is a ``UniAnimatePipeline.from_pretrained`` folder in the exported layout (safetensors
UNet and CLIP, diffusers VAE, ``unianimate_config.json``) plus ``recipe.json`` (the training recipe:
its ``width``, ``height`` and ``frames`` are the model's native size), ``defaults.json`` (the
sampler steps and guidance it was measured at), ``trained.json`` and ``MODEL_CARD.md``.
``UNIANIMATE_DEMO_DIR`` (read at call time) points elsewhere, e.g. a test's folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unianimate.errors import InputError

#: how the app, the CLI and the model card name the demo model (never "UniAnimate" alone)
DEMO_MODEL_NAME = "demo model trained on drawn people, not UniAnimate"
DEMO_DIR_ENV = "UNIANIMATE_DEMO_DIR"
DEFAULT_DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
#: the app's example dance; an export draws its in-domain example person in it
EXAMPLE_DANCE = DEFAULT_DEMO_DIR.parent / "example_dance.json"
#: the demo folder's own example (a held-out drawn person at the native size, and the dance fitted)
EXAMPLE_REFERENCE_FILENAME = "example_reference.png"
EXAMPLE_DANCE_FILENAME = "example_dance.json"
RECIPE_FILENAME = "recipe.json"
DEFAULTS_FILENAME = "defaults.json"
TRAINED_FILENAME = "trained.json"
MODEL_CARD_FILENAME = "MODEL_CARD.md"
#: the shipping budget of the demo weights (issue 13): 40 MB in all
MAX_BYTES = 40_000_000
#: the sampler settings the demo model is measured at (docs/DEMO_MODEL.md: quality is flat from
#: 5 to 30 DDIM steps; guidance 1.0 = one UNet pass per step)
DEFAULT_STEPS = 10
DEFAULT_GUIDANCE = 1.0
# the weights files a complete exported folder holds (hub keys; the diffusers VAE in ``vae/``)
_MODEL_KEYS = ("unet_safetensors", "clip_safetensors", "vae_config", "vae_weights")
CONFIG_FILENAME = "unianimate_config.json"     # unianimate.pipeline.CONFIG_FILENAME (no torch here)


def demo_dir(folder: str | os.PathLike | None = None) -> Path:
    """The demo model's folder: ``folder``, else ``$UNIANIMATE_DEMO_DIR``, else ``assets/demo``."""
    if folder is not None:
        return Path(folder).expanduser()
    env = os.environ.get(DEMO_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_DEMO_DIR


def has_demo_model(folder: str | os.PathLike | None = None) -> bool:
    """True when the demo folder holds a complete exported model (config, UNet, CLIP, VAE)."""
    from unianimate import hub

    root = demo_dir(folder)
    return (root / CONFIG_FILENAME).is_file() and root.is_dir() and \
        not hub.missing_files(root.resolve(), keys=_MODEL_KEYS)


@dataclass(frozen=True)
class DemoDefaults:
    """What the studio starts the demo model with: its native size and sampler settings."""

    width: int
    height: int
    frames: int
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE

    def settings(self) -> dict[str, Any]:
        """The project's generation settings (``Studio.set_settings`` keywords)."""
        return {"frames_per_segment": self.frames, "steps": self.steps, "guidance": self.guidance}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the demo model's {path.name} ({exc}); export the model "
                         "again with `python -m unianimate.train export`") from None
    if not isinstance(data, dict):
        raise InputError(f"the demo model's {path.name} must hold a JSON object")
    return data


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"the demo model's {where} needs a positive integer {key!r}, got {value!r}")
    return value


def read_defaults(folder: str | os.PathLike | None = None) -> DemoDefaults:
    """The native size (``recipe.json``: width, height, frames) and the sampler settings
    (``defaults.json``, optional) of the demo model in ``folder``."""
    root = demo_dir(folder)
    recipe = _read_json(root / RECIPE_FILENAME)
    size = {k: _positive_int(recipe, k, RECIPE_FILENAME) for k in ("width", "height", "frames")}
    extra = _read_json(root / DEFAULTS_FILENAME) if (root / DEFAULTS_FILENAME).is_file() else {}
    unknown = sorted(set(extra) - {"steps", "guidance"})
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in the demo model's {DEFAULTS_FILENAME}; "
                         "known: ['guidance', 'steps']")
    steps = _positive_int(extra, "steps", DEFAULTS_FILENAME) if "steps" in extra else DEFAULT_STEPS
    guidance = extra.get("guidance", DEFAULT_GUIDANCE)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance < 0:
        raise InputError(f"the demo model's {DEFAULTS_FILENAME} needs a number >= 0 'guidance', "
                         f"got {guidance!r}")
    return DemoDefaults(steps=steps, guidance=float(guidance), **size)


def example_files(folder: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """The demo folder's in-domain example (reference image, pose JSON), when it has one."""
    root = demo_dir(folder)
    ref, dance = root / EXAMPLE_REFERENCE_FILENAME, root / EXAMPLE_DANCE_FILENAME
    return (ref, dance) if ref.is_file() and dance.is_file() else None


__all__ = ["DEMO_MODEL_NAME", "EXAMPLE_DANCE", "example_files", "DEMO_DIR_ENV", "DEFAULT_DEMO_DIR", "DemoDefaults", "MAX_BYTES",
           "demo_dir", "has_demo_model", "read_defaults"]
