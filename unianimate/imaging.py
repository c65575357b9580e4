"""Image input: opening files safely, converting any mode to RGB uint8, sizes, fitting to W x H.

Everything that reaches the model goes through :func:`to_rgb_array` (uint8 (H,W,3)) and, for the
size, :func:`check_size` (multiples of 64, as the UNet's three downsamplings of the 1/8 latent
need). Bad input raises :class:`~unianimate.errors.InputError` with a message naming the problem.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

logger = logging.getLogger(__name__)

ImageLike = Union[Image.Image, np.ndarray]

MAX_IMAGE_PIXELS = 64_000_000  # refuse larger images before decoding them (decompression bombs)
MIN_SIZE = 64
MAX_SIZE = 2048
SIZE_MULTIPLE = 64
FitMode = Literal["crop", "pad", "stretch"]
_BACKGROUNDS = {"white": 255, "black": 0}


def open_image(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image file, bytes or file object; EXIF orientation applied.

    Refuses (``InputError``): missing, empty, truncated or non-image files, and images with more
    than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    name = "image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise InputError(f"image file {path} does not exist; check the path.")
        if path.stat().st_size == 0:
            raise InputError(f"image file {path} is empty (0 bytes); choose another file.")
        fh: BinaryIO = io.BytesIO(path.read_bytes())
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InputError("the uploaded image is empty (0 bytes); choose another file.")
        fh = io.BytesIO(bytes(source))
    else:
        fh = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fh)
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(
                    f"{name} is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the limit of "
                    f"{max_pixels / 1e6:.0f}; resize it before uploading.")
            img.load()
            img = ImageOps.exif_transpose(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name} is too large to decode safely (decompression bomb guard); "
                         "resize it before uploading.") from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image Pillow can read (PNG, JPEG, WebP, ...); "
                         "choose an image file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} is damaged or truncated and cannot be decoded ({exc}); "
                         "re-export it or choose another file.") from None
    return img


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: str) -> np.ndarray:
    """Alpha-composite float RGB (H,W,3) in 0..255 with alpha in 0..1 over a flat background."""
    try:
        bg = _BACKGROUNDS[background]
    except KeyError:
        raise InputError(f"unknown background {background!r}; use 'white' or 'black'.") from None
    a = alpha[..., None]  # (H,W) -> (H,W,1)
    return rgb * a + bg * (1.0 - a)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _pil_to_array(img: Image.Image, background: str) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA"):
        rgba = img.convert("RGBA") if mode == "RGBa" else img
        arr = np.asarray(rgba, dtype=np.float64)
        if mode == "LA":
            rgb, alpha = np.repeat(arr[..., :1], 3, axis=2), arr[..., 1] / 255.0
        else:
            rgb, alpha = arr[..., :3], arr[..., 3] / 255.0
        return _to_uint8(_composite(rgb, alpha, background))
    if mode == "1":
        return np.repeat(np.asarray(img, dtype=np.uint8)[..., None] * 255, 3, axis=2)
    if mode == "L":
        return np.repeat(np.asarray(img, dtype=np.uint8)[..., None], 3, axis=2)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if mode == "I" and arr.max(initial=0) <= 255:
            pass  # 32-bit integer image holding 8-bit values
        else:
            arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)  # 16-bit range -> 8-bit
        return np.repeat(_to_uint8(arr)[..., None], 3, axis=2)
    if mode == "F":
        return _array_to_rgb(np.asarray(img, dtype=np.float32), background)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        try:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
        except ValueError as exc:
            raise InputError(f"cannot convert a {mode} image to RGB ({exc}); save it as RGB.") from None
    raise InputError(f"unsupported image mode {mode!r}; save the image as RGB PNG or JPEG.")


def _array_to_rgb(arr: np.ndarray, background: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]  # (H,W,1) -> (H,W)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"image array must be (H,W), (H,W,1), (H,W,3) or (H,W,4); got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image array is empty (shape {arr.shape}).")
    if arr.dtype == np.bool_:
        x = arr.astype(np.float64) * 255.0
    elif arr.dtype == np.uint8:
        x = arr.astype(np.float64)
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float64) * (255.0 / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float64)
        if not np.isfinite(x).all():
            raise InputError("image array contains NaN or infinite values.")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise InputError(f"float image arrays must hold values in [0, 1]; got [{lo:.3g}, {hi:.3g}].")
        x = np.clip(x, 0.0, 1.0) * 255.0
    else:
        raise InputError(f"unsupported image array dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1].")
    if x.ndim == 2:
        return np.repeat(_to_uint8(x)[..., None], 3, axis=2)
    if x.shape[2] == 4:
        return _to_uint8(_composite(x[..., :3], x[..., 3] / 255.0, background))
    return _to_uint8(x)


def to_rgb_array(image: ImageLike, background: Literal["white", "black"] = "white") -> np.ndarray:
    """Any supported PIL image or numpy array -> uint8 (H,W,3) RGB.

    PIL modes: RGB, RGBA/RGBa/LA/P/PA (transparency composited over ``background``, white by
    default: a cut-out person on white is what users expect), L, 1, I;16* and I (16-bit range
    scaled to 8 bits; an ``I`` image whose values all fit in 0..255 is taken as 8-bit), F (float in
    [0,1]), CMYK, YCbCr, LAB, HSV. Arrays: uint8, uint16 (scaled), bool, float in [0,1]; shapes
    (H,W), (H,W,1), (H,W,3), (H,W,4) (RGBA). Anything else raises ``InputError``.
    """
    if isinstance(image, Image.Image):
        out = _pil_to_array(image, background)
    elif isinstance(image, np.ndarray):
        out = _array_to_rgb(image, background)
    else:
        raise InputError(f"expected a PIL image or a numpy array, got {type(image).__name__}.")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError("the image has zero width or height.")
    return out


def check_size(height: int, width: int) -> None:
    """Raise ``InputError`` unless H and W are multiples of 64 in [64, 2048]."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"{name} must be an integer, got {v!r}.")
        if v < MIN_SIZE or v > MAX_SIZE:
            raise InputError(f"{name} {v} is out of range; use {MIN_SIZE}..{MAX_SIZE} pixels "
                             f"(the model was trained at 512x768).")
        if v % SIZE_MULTIPLE:
            lo = max(MIN_SIZE, v // SIZE_MULTIPLE * SIZE_MULTIPLE)
            raise InputError(f"{name} {v} is not a multiple of {SIZE_MULTIPLE}; use {lo} or "
                             f"{min(MAX_SIZE, lo + SIZE_MULTIPLE)}.")


def fit_geometry(src_w: int, src_h: int, width: int, height: int,
                 mode: FitMode) -> tuple[float, float, float, float]:
    """Where :func:`fit_image` (Pillow's ``ImageOps.fit`` / ``ImageOps.pad``, centred) puts a
    ``src_w`` x ``src_h`` image on the ``width`` x ``height`` canvas: the scaled size (sw, sh)
    and the canvas position (left, top) of its top-left corner (negative for ``crop``, which
    cuts the edges). Shared with ``unianimate.pose.fit`` so that poses land exactly where the
    fitted image's pixels do. ``crop`` resamples a fractional box, so its values are floats."""
    if mode == "stretch":
        return width, height, 0, 0
    src_ratio, dst_ratio = src_w / src_h, width / height
    if mode == "crop":                                  # as ImageOps.fit with no bleed
        if src_ratio == dst_ratio:
            crop_w, crop_h = float(src_w), float(src_h)
        elif src_ratio >= dst_ratio:
            crop_w, crop_h = dst_ratio * src_h, float(src_h)
        else:
            crop_w, crop_h = float(src_w), src_w / dst_ratio
        sx, sy = width / crop_w, height / crop_h
        return (src_w * sx, src_h * sy, -(src_w - crop_w) * 0.5 * sx, -(src_h - crop_h) * 0.5 * sy)
    if mode == "pad":                                   # as ImageOps.pad (contain, then centre)
        sw, sh = width, height
        if src_ratio > dst_ratio:
            sh = round(src_h / src_w * width)
        elif src_ratio < dst_ratio:
            sw = round(src_w / src_h * height)
        return sw, sh, round((width - sw) * 0.5), round((height - sh) * 0.5)
    raise InputError(f"unknown fit mode {mode!r}; use 'crop', 'pad' or 'stretch'.")


def fit_image(image: ImageLike, width: int, height: int, mode: FitMode = "crop",
              pad_color: tuple[int, int, int] = (0, 0, 0),
              background: Literal["white", "black"] = "white") -> np.ndarray:
    """Resize ``image`` to exactly ``width`` x ``height`` -> uint8 (height,width,3).

    ``stretch``: straight bilinear resize, aspect ratio lost (the reference's behaviour).
    ``crop``: scale to cover, centre crop (keeps aspect ratio, cuts edges).
    ``pad``: scale to fit inside, centre on ``pad_color`` (keeps everything, adds borders).
    """
    if width <= 0 or height <= 0:
        raise InputError(f"target size must be positive, got {width}x{height}.")
    rgb = Image.fromarray(to_rgb_array(image, background))
    w0, h0 = rgb.size
    if mode == "stretch":
        out = rgb.resize((width, height), Image.BILINEAR)
    elif mode == "crop":
        out = ImageOps.fit(rgb, (width, height), Image.BILINEAR, centering=(0.5, 0.5))
    elif mode == "pad":
        out = ImageOps.pad(rgb, (width, height), Image.BILINEAR,
                           color=tuple(int(c) for c in pad_color), centering=(0.5, 0.5))
    else:
        raise InputError(f"unknown fit mode {mode!r}; use 'crop', 'pad' or 'stretch'.")
    return np.asarray(out, dtype=np.uint8).copy()
