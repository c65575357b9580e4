"""Reading state-dict files safely and checking them against a model before anything is copied.

``.pth``/``.ckpt``/``.bin`` files are pickles: they are read with ``torch.load(weights_only=True)``
(memory-mapped when the file is in the zip format) and NEVER by full unpickling. ``.safetensors``
files are read with ``safetensors``. Every failure becomes a CheckpointError naming the file and
what to do.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from unianimate.errors import CheckpointError, WeightsMissingError

logger = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_SHOW = 5  # how many offending keys a message lists per category


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Accept a state dict, ``{'state_dict': sd}`` and DataParallel ``module.``-prefixed keys."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    sd = dict(obj)
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


_UNET_ADVICE = ("Use the released UniAnimate UNet checkpoint (unianimate_16f_32f_non_ema_223000.pth) "
                "with the released UNetConfig().")


def validate_state_dict(expected: Mapping[str, tuple[int, ...]], sd: Mapping[str, Any], what: str = "the model",
                        advice: str = _UNET_ADVICE) -> None:
    """Raise CheckpointError unless ``sd`` has exactly the expected keys, each a tensor of the expected shape.

    The message lists the offending keys, says nothing was loaded and ends with ``advice``.
    """
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(str(k) for k in sd if k not in expected)
    not_tensor = sorted(k for k in expected if k in sd and not isinstance(sd[k], torch.Tensor))
    misshaped = [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k])}" for k in expected
                 if k in sd and isinstance(sd[k], torch.Tensor) and tuple(sd[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or not_tensor or misshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped key(s): {_listing(misshaped)}")
    if not_tensor:
        parts.append(f"{len(not_tensor)} non-tensor value(s): {_listing(not_tensor)}")
    raise CheckpointError(f"state dict does not fit {what}: " + "; ".join(parts) + f". Nothing was loaded. {advice}")


def _load_pickle(path: Path, mmap: bool) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if head == _ZIP_MAGIC and not is_zip:
        raise CheckpointError(f"{path} looks like a truncated or damaged PyTorch checkpoint (zip archive "
                              "without its directory); download it again")
    if not is_zip and head[:1] != b"\x80":  # neither a zip archive nor a pickle (protocol >= 2)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                              "check that this is the right file")
    # mmap only works for the zip format; legacy (pre-1.6) pickles are read into memory
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=bool(mmap and is_zip))
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only load failed" in str(err):
            raise CheckpointError(f"{path} contains Python objects other than tensors and plain containers; "
                                  "refusing to unpickle it (that could run arbitrary code). Use a plain "
                                  "state-dict checkpoint or convert it to .safetensors") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({err}); check the file") from None
    except EOFError:
        raise CheckpointError(f"{path} ends early: the checkpoint is truncated; download it again") from None
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as err:
        detail = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint (truncated or damaged?): "
                              f"{type(err).__name__}: {detail}; download it again") from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable .safetensors file (truncated or damaged?): {err}; "
                              "download it again") from None


def load_state_dict_file(path: str | os.PathLike, mmap: bool = True,
                         expected: str = "the UNet weights file") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.ckpt``/``.bin`` (weights_only pickle) or ``.safetensors``.

    Unwraps ``{'state_dict': ...}``. Raises WeightsMissingError when the file does not exist and
    CheckpointError when it is truncated, not a checkpoint, refused by weights_only, or not a
    mapping of names to tensors. ``expected`` names the right file in those messages.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(f"checkpoint file {path} does not exist; download it or point to the right folder")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (an interrupted download?); download it again")
    if path.suffix == ".safetensors":
        obj: Any = _load_safetensors(path)
    else:
        obj = _load_pickle(path, mmap)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; use {expected}")
    sd = unwrap_state_dict(obj)
    bad = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not a state dict: {len(bad)} entries are not name -> tensor "
                              f"(first: {_listing(bad)}); use {expected}")
    logger.info("read %d tensors from %s", len(sd), path)
    return sd
