"""Image input: every mode to RGB uint8, bad files, sizes, fitting."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unianimate.errors import InputError
from unianimate.imaging import check_size, fit_image, open_image, to_rgb_array


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_passthrough() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_rgb_array(Image.fromarray(arr))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(to_rgb_array(arr), arr)


def test_rgba_composited() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish
    rgba[0, 1, 3] = 0  # fully transparent
    rgba[1, :, 3] = 128
    white = to_rgb_array(Image.fromarray(rgba, "RGBA"))
    black = to_rgb_array(Image.fromarray(rgba, "RGBA"), background="black")
    assert tuple(white[0, 0]) == (200, 0, 0) and tuple(black[0, 0]) == (200, 0, 0)
    assert tuple(white[0, 1]) == (255, 255, 255) and tuple(black[0, 1]) == (0, 0, 0)
    a = 128 / 255
    assert tuple(white[1, 0]) == (round(200 * a + 255 * (1 - a)), round(255 * (1 - a)), round(255 * (1 - a)))
    np.testing.assert_array_equal(to_rgb_array(rgba), white)
    with pytest.raises(InputError):
        to_rgb_array(Image.fromarray(rgba, "RGBA"), background="green")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "1", "CMYK", "I;16", "I", "F", "YCbCr", "RGBa"])
def test_modes(mode: str) -> None:
    base = Image.fromarray(np.random.default_rng(1).integers(0, 256, (6, 4, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.full((6, 4), 65535, np.uint16))
        assert img.mode == "I;16"
    elif mode == "I":
        img = Image.fromarray(np.full((6, 4), 40000, np.int32))
        assert img.mode == "I"
    elif mode == "F":
        img = Image.fromarray(np.full((6, 4), 0.5, np.float32))
    else:
        img = base.convert(mode)
    out = to_rgb_array(img)
    assert out.dtype == np.uint8 and out.shape == (6, 4, 3)
    if mode == "I;16":
        assert (out == 255).all()
    if mode == "I":
        assert (out == round(40000 * 255 / 65535)).all()
    if mode == "F":
        assert (out == 128).all()
    if mode == "L":
        np.testing.assert_array_equal(out[..., 0], np.asarray(img))


def test_sixteen_bit_png_roundtrip(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((8, 8), 257 * 100, np.uint16))
    p = tmp_path / "g16.png"
    img.save(p)
    out = to_rgb_array(open_image(p))
    assert (out == 100).all()


def test_arrays() -> None:
    assert (to_rgb_array(np.full((3, 3), 65535, np.uint16)) == 255).all()
    assert (to_rgb_array(np.ones((3, 3, 1), np.float32)) == 255).all()
    assert (to_rgb_array(np.ones((3, 3), bool)) == 255).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert (to_rgb_array(rgba) == 255).all()
    for bad in (np.zeros((3, 3), np.int64), np.zeros((3, 3, 2), np.uint8), np.zeros((3,), np.uint8),
                np.full((3, 3), 2.0), np.full((3, 3), np.nan), np.zeros((0, 3, 3), np.uint8),
                np.zeros((3, 3), np.complex64)):
        with pytest.raises(InputError):
            to_rgb_array(bad)
    with pytest.raises(InputError, match="unsupported image mode"):
        to_rgb_array(Image.new("La", (2, 2)))  # premultiplied LA: not supported
    with pytest.raises(InputError):
        to_rgb_array("not an image")  # type: ignore[arg-type]


def test_open_image_good(tmp_path: Path) -> None:
    img = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    data = _png_bytes(img)
    (tmp_path / "a.png").write_bytes(data)
    assert open_image(tmp_path / "a.png").size == (6, 4)
    assert open_image(data).size == (6, 4)
    assert open_image(io.BytesIO(data)).size == (6, 4)


def test_open_image_exif_orientation() -> None:
    img = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert open_image(buf.getvalue()).size == (4, 6)


def test_open_image_bad(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_image(empty)
    with pytest.raises(InputError, match="empty"):
        open_image(b"")
    with pytest.raises(InputError, match="does not exist"):
        open_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    with pytest.raises(InputError, match="not an image"):
        open_image(text)
    good = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InputError, match="truncated"):
        open_image(good[: len(good) // 2])


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge 1-bit image (never decoded by the guard)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb() -> None:
    with pytest.raises(InputError, match="megapixels|too large"):
        open_image(_bomb_png(20000, 20000))  # 400 MP: Pillow's own bomb error, turned into InputError
    with pytest.raises(InputError, match="megapixels"):
        open_image(_bomb_png(9000, 8000))  # 72 MP: over our limit
    with pytest.raises(InputError, match="megapixels"):
        open_image(_png_bytes(Image.new("L", (100, 100))), max_pixels=5000)


def test_check_size() -> None:
    check_size(768, 512)
    check_size(64, 2048)
    with pytest.raises(InputError, match="multiple of 64"):
        check_size(770, 512)
    with pytest.raises(InputError, match="out of range"):
        check_size(0, 512)
    with pytest.raises(InputError, match="out of range"):
        check_size(4096, 512)
    with pytest.raises(InputError):
        check_size(512.0, 512)  # type: ignore[arg-type]


def test_fit_image_modes() -> None:
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = 255  # left half white
    st = fit_image(arr, 64, 128, "stretch")
    assert st.shape == (128, 64, 3)
    np.testing.assert_array_equal(st, np.asarray(Image.fromarray(arr).resize((64, 128), Image.BILINEAR)))
    cr = fit_image(arr, 64, 64, "crop")
    assert cr.shape == (64, 64, 3)
    assert cr[:, :30].mean() > 250 and cr[:, 34:].mean() < 5  # centre crop across the edge
    pd = fit_image(Image.fromarray(np.full((100, 200, 3), 255, np.uint8)), 64, 64, "pad")
    assert pd.shape == (64, 64, 3)
    assert (pd[:15] == 0).all() and (pd[32] == 255).all()  # black bars above, content in the middle
    with pytest.raises(InputError):
        fit_image(arr, 64, 64, "zoom")  # type: ignore[arg-type]
