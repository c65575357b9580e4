"""Media files of a project: PNG frames in and out, the reference image checked and fitted,
upload size limits, swapping a staged folder in. No project logic here."""
from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unianimate.errors import InputError, ProjectError
from unianimate.studio.project import FIT_MODES

#: upload size limits (bytes) checked before anything is decoded
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
MAX_DRIVING_BYTES = 1024 * 1024 * 1024


def check_upload_size(path: Path, limit: int, what: str) -> None:
    """InputError when a file (or a folder's files together) exceed ``limit`` bytes."""
    if not path.exists():
        raise InputError(f"{what} {path.name!r} does not exist; upload it again")
    size = (path.stat().st_size if path.is_file() else
            sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    if size > limit:
        raise InputError(f"the {what} {path.name!r} is {size / 2**20:.0f} MB; the limit is "
                         f"{limit / 2**20:.0f} MB")


def swap_dir(target: Path, staging: Path) -> None:
    """Replace folder ``target`` by ``staging`` (old one removed after the rename)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_name(reference: Any) -> str:
    """A project name from the reference's file name, else the date."""
    if isinstance(reference, (str, os.PathLike)):
        return Path(reference).stem[:80] or "project"
    return time.strftime("project %Y-%m-%d %H:%M")


VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv"}


def is_video(path: Path) -> bool:
    """Whether a driving input is a video file (by its extension)."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXT


def to_uint8(img: Any) -> np.ndarray:
    """An image as uint8 (H, W, 3) (grey stacked, alpha dropped, values clipped)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3]


def save_png(path: Path, image: Any) -> None:
    """PNG bytes written atomically."""
    from unianimate.utils import atomic_write_bytes
    img = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getvalue())


def read_pngs(folder: Path, start: int, end: int) -> np.ndarray:
    """Frames ``start..end-1`` of a folder of ``%06d.png`` files as uint8 (F,H,W,3)."""
    frames = []
    for i in range(start, end):
        p = folder / f"{i:06d}.png"
        if not p.exists():
            raise ProjectError(f"missing media file {p.name} in {folder.name}; the project folder "
                               "was changed by hand (restore it or delete the project)")
        try:
            with Image.open(p) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except (OSError, ValueError, SyntaxError) as err:     # PIL: not/ truncated/ bad PNG
            raise ProjectError(f"media file {p.name} in {folder.name} is damaged "
                               f"({type(err).__name__})") from None
    return np.stack(frames, axis=0)


def prepare_reference(reference: Any, width: int, height: int, fit: str
                       ) -> tuple[Image.Image, Image.Image]:
    """Validate and decode a reference (path, bytes, PIL, array) -> (original RGB, fitted WxH)."""
    from unianimate import imaging
    if fit not in FIT_MODES:
        raise InputError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    imaging.check_size(height, width)
    if isinstance(reference, (np.ndarray, Image.Image)):
        rgb = imaging.to_rgb_array(reference)
    else:
        if isinstance(reference, (bytes, bytearray)) and len(reference) > MAX_REFERENCE_BYTES:
            raise InputError(f"the reference image is {len(reference) / 2**20:.0f} MB; the limit "
                             f"is {MAX_REFERENCE_BYTES / 2**20:.0f} MB")
        if isinstance(reference, (str, os.PathLike)):
            check_upload_size(Path(reference), MAX_REFERENCE_BYTES, "reference image")
        rgb = imaging.to_rgb_array(imaging.open_image(reference))
    fitted = imaging.fit_image(rgb, int(width), int(height), mode=fit)
    return Image.fromarray(rgb), Image.fromarray(to_uint8(fitted))


__all__ = ["MAX_REFERENCE_BYTES", "MAX_DRIVING_BYTES", "check_upload_size", "swap_dir",
           "default_name", "is_video", "to_uint8", "save_png", "read_pngs", "prepare_reference"]
