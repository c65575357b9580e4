"""open_clip ViT-H-14 image encoder and the constant text context ``zero_y`` (spec §2).

The released model conditions on two CLIP outputs:

* ``image_embedding = model.visual(x)``: the pooled, projected embedding of the reference image,
  preprocessed by a PIL bilinear resize straight to 224x224 (no crop) and the CLIP mean/std;
* ``zero_y``: the empty prompt through the text transformer up to but excluding its last residual
  block ("penultimate" layer), then ``ln_final`` -> (1, 77, 1024). It never changes, so it is
  computed once per weights file, cached on disk next to the weights (a small safetensors file
  keyed by a fingerprint of the weights file, the config and the code that computes it) and in
  memory; the text tower is then freed.

Loading goes through ``open_clip.create_model(name, pretrained=<path>)`` for the released weights
and for tiny test models alike (a tiny model passes its tower configs as ``create_model``'s
constructor overrides). Written against the current open_clip, whose text transformer is
batch-first (older releases were sequence-first; both are handled).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import pickle
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import CheckpointError, InputError
from ..imaging import ImageLike, to_rgb_array
from ..utils import atomic_write_bytes, check_known_keys

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZERO_Y_CACHE_VERSION = 1
_ZERO_Y_MEMORY: dict[str, torch.Tensor] = {}
_ZERO_Y_LOCK = threading.Lock()


@dataclass(frozen=True)
class ClipConfig:
    """Which open_clip model to build. Tower overrides are ``create_model`` constructor kwargs.

    The default is the released ViT-H-14; :meth:`tiny` gives a small model of the same class.
    """

    model_name: str = "ViT-H-14"
    embed_dim: int | None = None
    vision_cfg: Mapping[str, Any] | None = None
    text_cfg: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipConfig":
        """Build from a dict; unknown keys raise ``ValueError``."""
        check_known_keys(cls, data)
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the fields that define the model."""
        return {"model_name": self.model_name, "embed_dim": self.embed_dim,
                "vision_cfg": dict(self.vision_cfg) if self.vision_cfg else None,
                "text_cfg": dict(self.text_cfg) if self.text_cfg else None}

    @classmethod
    def tiny(cls, width: int = 32, image_size: int = 32) -> "ClipConfig":
        """A tiny CLIP of the same class: text width and embedding both ``width`` (for tests)."""
        return cls(embed_dim=width,
                   vision_cfg={"image_size": image_size, "layers": 2, "width": 32, "head_width": 16,
                               "patch_size": 8},
                   text_cfg={"context_length": 77, "vocab_size": 49408, "width": width,
                             "heads": max(1, width // 16), "layers": 2})

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor overrides for ``open_clip.create_model``."""
        kw: dict[str, Any] = {}
        if self.embed_dim is not None:
            kw["embed_dim"] = int(self.embed_dim)
        if self.vision_cfg is not None:
            kw["vision_cfg"] = dict(self.vision_cfg)
        if self.text_cfg is not None:
            kw["text_cfg"] = dict(self.text_cfg)
        return kw


def load_open_clip(path: str | os.PathLike, config: ClipConfig | None = None) -> torch.nn.Module:
    """Build the open_clip model of ``config`` and load ``path`` into it (strict, weights_only).

    Raises ``CheckpointError`` naming the file when it is unreadable or does not fit.
    """
    import open_clip

    config = config or ClipConfig()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"CLIP weights file {path} does not exist.")
    try:
        model = open_clip.create_model(config.model_name, pretrained=str(path), weights_only=True,
                                       **config.model_kwargs())
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError,
            TypeError, AssertionError) as exc:  # open_clip asserts on mismatched embedding widths
        raise CheckpointError(
            f"cannot load the open_clip {config.model_name} weights from {path}: {exc}. The file may "
            "be truncated or not an open_clip state dict; download it again.") from None
    model.eval().requires_grad_(False)
    return model


def weights_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content fingerprint of a weights file (hex, 16 chars), without reading gigabytes.

    A file in the Hugging Face cache is a link to ``blobs/<sha256 of its content>``: that hash is
    used. Otherwise: sha256 of the size and the first and last MiB.
    """
    path = Path(path)
    blob = path.resolve()
    if blob.parent.name == "blobs" and len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name):
        return blob.name[:16]
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def clip_resize(image: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """The reference's CLIP downscale: PIL bilinear straight to ``size`` (H, W), no crop ->
    uint8 (H,W,3). Pillow 10.0-12.x give identical pixels (the reference ran 10.2); Pillow 13.0
    resamples some sizes differently, hence the pin in requirements.txt (tests/test_clip.py)."""
    pil = Image.fromarray(to_rgb_array(image)).resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil)


def code_fingerprint(fn: Any) -> str:
    """sha256 of a function's source (of its compiled code when no source ships)."""
    try:
        code = inspect.getsource(fn)
    except (OSError, TypeError):
        code = repr((fn.__code__.co_code, fn.__code__.co_consts, fn.__code__.co_names))
    return hashlib.sha256(code.encode()).hexdigest()


def zero_y_code_fingerprint() -> str:
    """8 hex digits of the code that computes ``zero_y``: :meth:`ClipEncoder.compute_zero_y` as
    this release ships it, open_clip's version (tokenizer, text tower) and torch's. Part of the
    cache key, so a cached file made by other code is never used."""
    import open_clip

    text = "\n".join((_ZERO_Y_CODE, str(getattr(open_clip, "__version__", "?")), torch.__version__))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unianimate"


class ClipEncoder:
    """CLIP image embeddings and the cached ``zero_y`` text context for the UNet.

    ``encode_image(images) -> (B, D)``; ``zero_y -> (1, 77, D_text)``. ``to(device)`` moves the
    vision tower (used to park it on the CPU while the UNet samples).
    """

    def __init__(self, model: torch.nn.Module, zero_y: torch.Tensor | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 name: str = "open_clip") -> None:
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        self.name = name
        self.model.to(self.device, self.dtype)
        vis_size = getattr(model.visual, "image_size", 224)
        self.image_size: tuple[int, int] = (tuple(vis_size) if isinstance(vis_size, (tuple, list))
                                            else (int(vis_size), int(vis_size)))
        self._zero_y = zero_y.detach().to("cpu", torch.float32) if zero_y is not None else None

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, config: ClipConfig | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  cache_dir: str | os.PathLike | None = None, keep_text_tower: bool = False) -> "ClipEncoder":
        """Load ``open_clip_pytorch_model.bin`` (or a tiny one) and get ``zero_y`` from cache or compute it.

        ``cache_dir``: where the zero_y file goes; default: next to the weights, or
        ``~/.cache/unianimate`` if that folder is read-only. The text tower is freed afterwards
        unless ``keep_text_tower``.
        """
        config = config or ClipConfig()
        path = Path(path)
        model = load_open_clip(path, config)
        key = (f"{weights_fingerprint(path)}-"
               f"{hashlib.sha256(repr(config.to_dict()).encode()).hexdigest()[:8]}-"
               f"{zero_y_code_fingerprint()}")
        enc = cls(model, device=device, dtype=dtype, name=f"open_clip {config.model_name}")
        enc._zero_y = cls._cached_zero_y(enc, key, path, cache_dir)
        if not keep_text_tower:
            enc.release_text_tower()
        return enc

    @staticmethod
    def zero_y_cache_path(weights_path: str | os.PathLike, key: str,
                          cache_dir: str | os.PathLike | None = None) -> Path:
        """Where the zero_y of a weights file is cached on disk."""
        folder = Path(cache_dir) if cache_dir is not None else Path(weights_path).resolve().parent
        return folder / f"unianimate_zero_y.v{ZERO_Y_CACHE_VERSION}.{key}.safetensors"

    @classmethod
    def _cached_zero_y(cls, enc: "ClipEncoder", key: str, path: Path,
                       cache_dir: str | os.PathLike | None) -> torch.Tensor:
        from safetensors.torch import load_file, save

        with _ZERO_Y_LOCK:
            if key in _ZERO_Y_MEMORY:
                return _ZERO_Y_MEMORY[key]
        candidates = [cls.zero_y_cache_path(path, key, cache_dir)]
        if cache_dir is None:
            candidates.append(cls.zero_y_cache_path(path, key, _user_cache_dir()))
        for cand in candidates:
            if cand.is_file():
                try:
                    zy = load_file(str(cand))["zero_y"]
                except (OSError, KeyError, ValueError, RuntimeError) as exc:
                    logger.warning("ignoring unreadable zero_y cache %s (%s)", cand, exc)
                    continue
                logger.info("zero_y loaded from cache %s", cand)
                with _ZERO_Y_LOCK:
                    _ZERO_Y_MEMORY[key] = zy
                return zy
        zy = enc.compute_zero_y()
        data = save({"zero_y": zy.contiguous()}, metadata={"weights": path.name, "key": key})
        for cand in candidates:
            try:
                atomic_write_bytes(cand, data)
            except OSError as exc:
                logger.info("cannot write zero_y cache %s (%s); trying the next place", cand, exc)
                continue
            logger.info("zero_y computed and cached at %s", cand)
            break
        with _ZERO_Y_LOCK:
            _ZERO_Y_MEMORY[key] = zy
        return zy

    # -- text --------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_zero_y(self) -> torch.Tensor:
        """Empty prompt -> penultimate text layer -> ln_final: (1, 77, D_text) float32 on CPU."""
        import open_clip

        m = self.model
        if getattr(m, "transformer", None) is None:
            raise RuntimeError("the text tower was released; zero_y can no longer be computed")
        tokens = open_clip.tokenize([""]).to(self.device)  # (1, 77) int
        x = m.token_embedding(tokens).to(self.dtype)  # (1, 77, D)
        x = x + m.positional_embedding.to(self.dtype)
        batch_first = getattr(m.transformer, "batch_first", True)
        if not batch_first:
            x = x.permute(1, 0, 2)  # (1, 77, D) -> (77, 1, D) for sequence-first open_clip
        blocks = list(m.transformer.resblocks)
        for block in blocks[:-1]:  # all but the last residual block ("penultimate")
            x = block(x, attn_mask=m.attn_mask)
        if not batch_first:
            x = x.permute(1, 0, 2)  # back to (1, 77, D)
        x = m.ln_final(x)
        return x.float().cpu()

    @property
    def zero_y(self) -> torch.Tensor:
        """The constant text context (1, 77, D_text), float32 on CPU."""
        if self._zero_y is None:
            self._zero_y = self.compute_zero_y()
        return self._zero_y

    def release_text_tower(self) -> None:
        """Free the text transformer and embeddings (only zero_y was needed from them)."""
        if self._zero_y is None:
            self._zero_y = self.compute_zero_y()
        m = self.model
        for name in ("transformer", "token_embedding", "ln_final"):
            if getattr(m, name, None) is not None:
                setattr(m, name, None)
        if isinstance(getattr(m, "text_projection", None), torch.nn.Parameter):
            m.text_projection = None
        if hasattr(m, "positional_embedding"):
            m.positional_embedding = None

    # -- images ------------------------------------------------------------------------------
    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images -> (B,3,S,S) float32: PIL bilinear resize to S x S (no crop), CLIP mean/std."""
        if isinstance(images, (Image.Image, np.ndarray)) and not (
                isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        out = []
        mean = np.asarray(CLIP_MEAN, np.float32)
        std = np.asarray(CLIP_STD, np.float32)
        for img in images:
            arr = clip_resize(img, self.image_size).astype(np.float32) / 255.0  # (S,S,3) in [0,1]
            arr = (arr - mean) / std
            out.append(torch.from_numpy(arr).permute(2, 0, 1))  # (S,S,3) -> (3,S,S)
        if not out:
            raise InputError("no image given to the CLIP encoder.")
        return torch.stack(out)

    @torch.no_grad()
    def encode_image(self, images: ImageLike | Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Pooled, projected image embedding ``model.visual(x)``: (B, D) float32 on the CLIP device.

        ``images``: PIL/uint8 images, or an already preprocessed (B,3,S,S) tensor.
        """
        x = images if isinstance(images, torch.Tensor) else self.preprocess(images)
        x = x.to(self.device, self.dtype)
        return self.model.visual(x).float()

    def to(self, device: str | torch.device) -> "ClipEncoder":
        """Move the model (e.g. to the CPU while the UNet samples)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def embed_dim(self) -> int:
        """Width of the image embedding."""
        return int(getattr(self.model.visual, "output_dim", 0) or self.model.visual.proj.shape[1])


#: fingerprint of the zero_y code as shipped (taken at import, see zero_y_code_fingerprint)
_ZERO_Y_CODE = code_fingerprint(ClipEncoder.compute_zero_y)
