"""Tests of tracemark.imageio: formats, modes, orientation, bad inputs and writing."""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile

from tracemark import imageio
from tracemark.errors import (
    ConfigError,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageSourceError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from tracemark.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    encode_image,
    load_image,
    open_image_info,
    read_metadata,
    save_image,
    to_pil,
)

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
LOSSLESS = ("PNG", "TIFF", "BMP")
SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "GIF": ".gif",
}


# --- helpers --------------------------------------------------------------------


def blocks(h: int = 32, w: int = 64) -> np.ndarray:
    """Eight flat colour blocks of 16x16: few colours (GIF-exact), aligned to JPEG's MCUs."""
    palette = np.array(
        [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40],
         [40, 220, 220], [220, 40, 220], [250, 250, 250], [10, 10, 10]],
        dtype=np.uint8,
    )  # fmt: skip
    yy, xx = np.mgrid[0:h, 0:w]
    return palette[((yy // 16) * 4 + xx // 16) % 8]


def noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pil_bytes(im: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` RGB with a tiny (far too short) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def lossy_close(a: np.ndarray, b: np.ndarray, tol: float = 8.0) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < tol


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- round trips of every format and source kind ------------------------------------


def _as_source(kind: str, data: bytes, fmt: str, tmp_path: Path) -> object:
    if kind == "path":
        path = tmp_path / f"img{SUFFIX[fmt]}"
        path.write_bytes(data)
        return path
    if kind == "str":
        path = tmp_path / f"img{SUFFIX[fmt]}"
        path.write_bytes(data)
        return str(path)
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "file":
        return io.BytesIO(data)
    if kind == "pil":
        return Image.open(io.BytesIO(data))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "bytearray", "memoryview", "file", "pil"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format_and_source(fmt: str, kind: str, tmp_path: Path) -> None:
    original = blocks()
    data = pil_bytes(Image.fromarray(original), fmt)
    out = load_image(_as_source(kind, data, fmt, tmp_path))
    assert out.dtype == np.uint8 and out.shape == original.shape and out.flags.c_contiguous
    if fmt in ("JPEG", "WEBP"):
        assert lossy_close(out, original)
    else:  # lossless, and GIF is exact for 8 colours
        np.testing.assert_array_equal(out, original)


def test_file_object_is_read_from_its_position(tmp_path: Path) -> None:
    data = pil_bytes(Image.fromarray(blocks()), "PNG")
    fh = io.BytesIO(b"JUNK" + data)
    fh.seek(4)
    np.testing.assert_array_equal(load_image(fh), blocks())
    with open(tmp_path / "a.png", "wb") as out:
        out.write(data)
    with open(tmp_path / "a.png", "rb") as fh2:
        np.testing.assert_array_equal(load_image(fh2), blocks())


def test_pil_input_is_not_modified() -> None:
    im = Image.fromarray(blocks()).convert("RGBA")
    before = im.tobytes()
    load_image(im)
    assert im.mode == "RGBA" and im.tobytes() == before


def test_one_pixel_images_load() -> None:
    for fmt in FORMATS:
        out = load_image(pil_bytes(Image.new("RGB", (1, 1), (10, 200, 30)), fmt))
        assert out.shape == (1, 1, 3)
    np.testing.assert_array_equal(load_image(np.full((1, 1), 7, np.uint8)), [[[7, 7, 7]]])


# --- numpy inputs -----------------------------------------------------------------


def test_array_uint8_shapes() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    expected = np.stack([grey] * 3, axis=-1)
    np.testing.assert_array_equal(load_image(grey), expected)
    np.testing.assert_array_equal(load_image(grey[:, :, None]), expected)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    out[0, 0] = 0 if rgb[0, 0, 0] else 1
    assert not np.shares_memory(out, rgb) and (out != rgb).any()


def test_array_uint16_is_scaled_with_rounding() -> None:
    values = np.array([[0, 1, 128, 129, 257, 385, 386, 257 * 100, 65534, 65535]], dtype=np.uint16)
    expected = np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    out = load_image(values)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert out[0, -1, 0] == 255 and out[0, 7, 0] == 100
    big_endian = values.astype(">u2")
    np.testing.assert_array_equal(load_image(big_endian), out)


def test_array_bool() -> None:
    out = load_image(np.array([[True, False]]))
    np.testing.assert_array_equal(out[0, :, 0], [255, 0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_array_float_is_unit_range_clipped(dtype: type) -> None:
    values = np.array([[-1.0, 0.0, 0.25, 0.5, 1.0, 7.0, np.nan, np.inf]], dtype=dtype)
    out = load_image(values)
    expected = [0, 0, round(0.25 * 255), 128, 255, 255, 0, 255]
    np.testing.assert_array_equal(out[0, :, 0], expected)


def test_array_rgba_is_flattened_over_background() -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    bg = (10, 250, 90)
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    oracle = np.rint(rgba[..., :3] * a + np.array(bg) * (1.0 - a)).astype(np.uint8)
    out = load_image(rgba, background=bg)
    np.testing.assert_array_equal(out, oracle)
    np.testing.assert_array_equal(out[0, 0], bg)
    np.testing.assert_array_equal(out[0, 1], rgba[0, 1, :3])
    # Pillow's own compositing as a second, independent oracle (it may round differently).
    pil = Image.alpha_composite(Image.new("RGBA", (11, 9), (*bg, 255)), Image.fromarray(rgba))
    assert np.abs(np.asarray(pil.convert("RGB")).astype(int) - out.astype(int)).max() <= 1


def test_array_noncontiguous_and_rgba_uint16() -> None:
    base = noise(10, 12)
    view = base[::2, ::-1]
    out = load_image(view)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)
    rgba16 = np.zeros((2, 2, 4), np.uint16)
    rgba16[..., 0] = 65535
    rgba16[..., 3] = 65535
    np.testing.assert_array_equal(load_image(rgba16)[0, 0], [255, 0, 0])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4), np.int8),
        np.zeros((4, 4), np.uint32),
        np.zeros((4, 4), np.complex64),
        np.zeros((4, 4), object),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
    ],
    ids=["int32", "int8", "uint32", "complex", "object", "2ch", "5ch", "1d", "4d"],
)
def test_array_unsupported(array: np.ndarray) -> None:
    with pytest.raises(UnsupportedImageError) as err:
        load_image(array)
    assert err.value.source == "<array>"


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0, 3), (3, 0, 4)])
def test_array_zero_size_is_empty(shape: tuple[int, ...]) -> None:
    with pytest.raises(EmptyImageError) as err:
        load_image(np.zeros(shape, np.uint8))
    assert err.value.source == "<array>"


def test_huge_array_refused_without_allocating() -> None:
    huge = np.broadcast_to(
        np.zeros((1, 1, 3), np.uint8), (200_000, 200_000, 3)
    )  # a view: no memory
    with pytest.raises(ImageTooLargeError) as err:
        load_image(huge)
    assert err.value.source == "<array>" and "100,000,000" in err.value.message


# --- every mode in every format that can store it (property tests) -----------------------

# What Pillow 13 can write (mode -> formats); checked in the first test below.
WRITABLE = {
    "1": ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"),
    "L": FORMATS,
    "LA": ("PNG", "WEBP", "TIFF", "GIF"),
    "P": ("PNG", "WEBP", "TIFF", "BMP", "GIF"),
    "PA": ("WEBP", "TIFF"),
    "RGB": FORMATS,
    "RGBA": ("PNG", "WEBP", "TIFF", "BMP", "GIF"),
    "RGBa": ("WEBP",),
    "RGBX": ("JPEG", "WEBP", "TIFF"),
    "CMYK": ("JPEG", "WEBP", "TIFF"),
    "YCbCr": ("JPEG", "WEBP", "TIFF"),
    "LAB": ("WEBP", "TIFF"),
    "HSV": ("WEBP",),
    "I": ("WEBP", "TIFF", "GIF"),
    "F": ("WEBP", "TIFF", "GIF"),
    "I;16": ("PNG", "WEBP", "TIFF", "GIF"),
    "I;16B": ("PNG", "WEBP", "TIFF", "GIF"),
}
COMBOS = [(m, f) for m, fmts in WRITABLE.items() for f in fmts]
ALL_MODES = [*WRITABLE, "La", "I;16L", "I;16N"]


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    size = len(Image.new(mode, (width, height)).tobytes())
    raw = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    im = Image.frombytes(mode, (width, height), raw)
    if mode in ("P", "PA"):
        rng = np.random.default_rng(seed + 1)
        im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return im


@pytest.mark.parametrize(("mode", "fmt"), COMBOS)
def test_writable_table_is_accurate(mode: str, fmt: str) -> None:
    pil_bytes(Image.new(mode, (3, 2)), fmt)  # the property test below relies on it


sides = st.integers(min_value=1, max_value=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(combo=st.sampled_from(COMBOS), width=sides, height=sides, seed=st.integers(0, 2**16))
def test_every_mode_and_format_loads(
    combo: tuple[str, str], width: int, height: int, seed: int
) -> None:
    mode, fmt = combo
    im = random_image(mode, width, height, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns when saving some modes lossily
        data = pil_bytes(im, fmt)
    out = load_image(data)
    assert out.dtype == np.uint8 and out.shape == (height, width, 3) and out.flags.c_contiguous
    if fmt in LOSSLESS and mode in ("RGB", "L"):
        expected = np.asarray(im) if mode == "RGB" else np.stack([np.asarray(im)] * 3, axis=-1)
        np.testing.assert_array_equal(out, expected)
    if fmt in LOSSLESS and Image.open(io.BytesIO(data)).mode == mode:
        np.testing.assert_array_equal(out, load_image(im))  # decoding is lossless


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(ALL_MODES), width=sides, height=sides, seed=st.integers(0, 2**16))
def test_every_pil_mode_converts(mode: str, width: int, height: int, seed: int) -> None:
    out = load_image(random_image(mode, width, height, seed))
    assert out.dtype == np.uint8 and out.shape == (height, width, 3)


@settings(max_examples=40, deadline=None)
@given(width=sides, height=sides, seed=st.integers(0, 2**16), fmt=st.sampled_from(LOSSLESS))
def test_lossless_save_load_is_exact(width: int, height: int, seed: int, fmt: str) -> None:
    image = noise(height, width, seed)
    np.testing.assert_array_equal(load_image(encode_image(image, fmt)), image)


# --- explicit conversion oracles ----------------------------------------------------------


def test_16bit_tiff_and_png_scaled() -> None:
    values = np.array([[0, 257, 257 * 2, 257 * 100, 257 * 254, 65535, 128, 129]], dtype=np.uint16)
    expected = [0, 1, 2, 100, 254, 255, 0, 1]
    im = Image.frombytes("I;16", (values.shape[1], 1), values.astype("<u2").tobytes())
    for fmt in ("TIFF", "PNG"):
        data = pil_bytes(im, fmt)
        assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
        np.testing.assert_array_equal(load_image(data)[0, :, 0], expected)


def test_32bit_int_tiff_is_clipped_to_16_bit_range() -> None:
    values = np.array([[-5, 0, 257 * 3, 65535, 70_000, 2**31 - 1]], dtype=np.int32)
    data = pil_bytes(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    np.testing.assert_array_equal(load_image(data)[0, :, 0], [0, 0, 3, 255, 255, 255])


def test_float_tiff_is_unit_range() -> None:
    values = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]], dtype=np.float32)
    data = pil_bytes(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    np.testing.assert_array_equal(load_image(data)[0, :, 0], [0, 0, 128, 255, 255, 0])


def test_bilevel_and_palette() -> None:
    im = Image.frombytes("1", (8, 1), bytes([0b10100000]))
    np.testing.assert_array_equal(load_image(im)[0, :3, 0], [255, 0, 255])
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    p.putpixel((1, 0), 1)
    np.testing.assert_array_equal(load_image(pil_bytes(p, "PNG"))[0], [[10, 20, 30], [40, 50, 60]])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_flattened(fmt: str) -> None:
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    p.putpixel((1, 0), 1)
    data = pil_bytes(p, fmt, transparency=1)
    assert open_image_info(data).has_alpha
    out = load_image(data, background=(0, 0, 255))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [0, 0, 255]])


def test_colour_key_transparency_in_rgb_and_grey_png() -> None:
    rgb = Image.new("RGB", (2, 1), (1, 2, 3))
    rgb.putpixel((1, 0), (9, 9, 9))
    out = load_image(pil_bytes(rgb, "PNG", transparency=(1, 2, 3)))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [9, 9, 9]])
    grey = Image.new("L", (2, 1), 5)
    grey.putpixel((1, 0), 80)
    out = load_image(pil_bytes(grey, "PNG", transparency=5), background=(0, 0, 0))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [80, 80, 80]])


def test_grey_alpha_and_premultiplied() -> None:
    la = Image.new("LA", (1, 1), (100, 0))
    np.testing.assert_array_equal(load_image(pil_bytes(la, "PNG"))[0, 0], [255, 255, 255])
    la_half = Image.new("LA", (1, 1), (100, 128))
    expected = round((100 * 128 + 255 * 127) / 255)
    np.testing.assert_array_equal(load_image(la_half)[0, 0], [expected] * 3)
    # premultiplied: stored 50 at alpha 128 is an unpremultiplied ~99.6
    rgba_pm = Image.new("RGBa", (1, 1), (50, 50, 50, 128))
    out = load_image(rgba_pm, background=(0, 0, 0)).astype(int)
    assert np.abs(out[0, 0] - 50).max() <= 1
    la_pm = Image.new("La", (1, 1), (50, 128))
    assert np.abs(load_image(la_pm, background=(0, 0, 0)).astype(int)[0, 0] - 50).max() <= 1


def test_cmyk_jpeg_and_tiff() -> None:
    red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    jpeg = pil_bytes(red, "JPEG", quality=95)
    assert open_image_info(jpeg).mode == "CMYK"
    r, g, b = load_image(jpeg)[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60
    np.testing.assert_array_equal(load_image(pil_bytes(red, "TIFF"))[0, 0], [255, 0, 0])


def test_other_colour_spaces_give_plausible_colours() -> None:
    np.testing.assert_array_equal(
        load_image(Image.new("HSV", (1, 1), (0, 255, 255)))[0, 0], [255, 0, 0]
    )
    for mode, white in (("LAB", (255, 128, 128)), ("YCbCr", (255, 128, 128))):
        out = load_image(pil_bytes(Image.new(mode, (2, 2), white), "TIFF"))
        assert (out >= 250).all(), (mode, out[0, 0])
    # skimage as an independent oracle for Lab -> sRGB (Pillow stores a*, b* offset by 128)
    skcolor = pytest.importorskip("skimage.color")
    lab = (53.24, 80.09, 67.20)  # sRGB red
    stored = (round(lab[0] * 255 / 100), round(lab[1]) + 128, round(lab[2]) + 128)
    out = load_image(Image.new("LAB", (1, 1), stored))[0, 0].astype(int)
    oracle = np.rint(skcolor.lab2rgb(np.array([[lab]]))[0, 0] * 255).astype(int)
    assert np.abs(out - oracle).max() <= 12


# --- frames and orientation --------------------------------------------------------------


def _two_frames() -> list[Image.Image]:
    return [Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animated_and_multipage_read_first_frame(fmt: str) -> None:
    first, second = _two_frames()
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = pil_bytes(first, fmt, save_all=True, append_images=[second], **kw)
    info = open_image_info(data)
    assert info.n_frames == 2
    np.testing.assert_array_equal(load_image(data)[3, 4], [255, 0, 0])


def _oriented_jpeg(orientation: int) -> tuple[np.ndarray, bytes]:
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:16, :24] = (255, 0, 0)
    stored[16:, 24:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return stored, pil_bytes(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_orientation_6_rotates_clockwise() -> None:
    stored, data = _oriented_jpeg(6)
    out = load_image(data)
    assert out.shape == (48, 32, 3)
    oracle = np.rot90(stored, k=-1)  # orientation 6: rotate 90 degrees clockwise to display
    for y, x in ((12, 8), (12, 24), (36, 8), (36, 24)):  # the centres of the four quadrants
        assert np.abs(out[y, x].astype(int) - oracle[y, x].astype(int)).max() < 24, (y, x)
    assert out[12, 24, 0] > 200 and out[36, 8, 2] > 200
    info = open_image_info(data)
    assert (info.width, info.height, info.orientation, info.has_exif) == (48, 32, 6, True)


def test_exif_orientation_applied_to_pil_input_and_3() -> None:
    stored, data = _oriented_jpeg(3)
    out = load_image(Image.open(io.BytesIO(data)))
    assert out.shape == stored.shape
    assert out[-4, -4, 0] > 200 and out[4, 4, 2] > 200  # rotated by 180 degrees


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared JPEG corpus is not in this checkout")
def test_real_jpegs_and_their_truncated_halves(tmp_path: Path) -> None:
    for path in sorted(CORPUS.glob("*/*.jpg"))[:3]:
        info = open_image_info(path)
        out = load_image(path)
        assert out.shape == (info.height, info.width, 3)
        data = path.read_bytes()
        half = tmp_path / path.name
        half.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptImageError) as err:
            load_image(half)
        assert err.value.source == str(half)


# --- bad inputs ------------------------------------------------------------------------


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = pil_bytes(Image.fromarray(noise(96, 96)), "JPEG")
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError) as err:
        load_image(path)
    assert err.value.source == str(path)
    with pytest.raises(CorruptImageError) as err:
        load_image(data[: len(data) // 2], name="upload-7")
    assert err.value.source == "upload-7"


def test_truncated_png() -> None:
    data = pil_bytes(Image.fromarray(noise(64, 64)), "PNG")
    for cut in (len(data) // 2, len(data) - 30, 40):  # cuts inside the pixel data
        with pytest.raises(CorruptImageError) as err:
            load_image(data[:cut])
        assert err.value.source == "<bytes>"


def test_truncation_detected_even_with_pillow_load_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jpeg = pil_bytes(Image.fromarray(noise(96, 96)), "JPEG")
    png = pil_bytes(Image.fromarray(noise(64, 64)), "PNG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for data in (jpeg[: len(jpeg) // 2], png[: len(png) // 2]):
        with pytest.raises(CorruptImageError):
            load_image(data)
    for fmt in FORMATS:  # and no false alarm on complete files
        assert load_image(encode_image(blocks(), fmt)).shape == (32, 64, 3)


def test_corrupt_png_data() -> None:
    data = bytearray(pil_bytes(Image.fromarray(noise(32, 32)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 60] = bytes(50)
    with pytest.raises(CorruptImageError):
        load_image(bytes(data))


@pytest.mark.parametrize("kind", ["path", "bytes", "bytearray", "memoryview", "file"])
def test_empty_inputs(kind: str, tmp_path: Path) -> None:
    source = _as_source(kind, b"", "JPEG", tmp_path)
    with pytest.raises(EmptyImageError) as err:
        load_image(source)
    expected = (
        str(tmp_path / "img.jpg")
        if kind == "path"
        else ("<file object>" if kind == "file" else "<bytes>")
    )
    assert err.value.source == expected


def test_empty_pil_image() -> None:
    with pytest.raises(EmptyImageError) as err:
        load_image(Image.new("RGB", (0, 0)))
    assert err.value.source == "<PIL image>"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 10)
    for call in (load_image, open_image_info, read_metadata):
        with pytest.raises(CorruptImageError) as err:
            call(path)
        assert err.value.source == str(path)


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
        (b"%PDF-1.7\n", "PDF"),
        (b"icns" + bytes(12), "ICNS"),
    ],
)
def test_other_formats_are_unsupported(head: bytes, name: str) -> None:
    with pytest.raises(UnsupportedImageError, match=name) as err:
        load_image(head + bytes(64))
    assert err.value.source == "<bytes>"


def test_crafted_png_bomb_fails_fast() -> None:
    data = crafted_png(50_000, 50_000)
    start = time.perf_counter()
    for call in (load_image, open_image_info, read_metadata):
        with pytest.raises(ImageTooLargeError) as err:
            call(data)
        assert err.value.source == "<bytes>"
    assert time.perf_counter() - start < 1.0


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 12000 x 12000 passes Pillow's hard limit but not ours; the IDAT is far too short, so
    # reaching the decoder would raise CorruptImageError instead.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may leak
        with pytest.raises(ImageTooLargeError, match="12000x12000"):
            load_image(crafted_png(12_000, 12_000))
        info = open_image_info(crafted_png(9_500, 9_500))  # over Pillow's warning threshold
    assert (info.width, info.height) == (9_500, 9_500)
    with pytest.raises(CorruptImageError):
        load_image(crafted_png(3_000, 3_000), max_pixels=None)


def test_max_pixels_configurable(tmp_path: Path) -> None:
    image = noise(100, 100)
    data = encode_image(image, "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data), Image.fromarray(image), image):
        with pytest.raises(ImageTooLargeError):
            load_image(source, max_pixels=5000)
    assert load_image(data, max_pixels=10_000).shape == (100, 100, 3)  # the limit is inclusive
    with pytest.raises(ImageTooLargeError):
        load_image(data, max_pixels=9_999)
    assert DEFAULT_MAX_PIXELS == 100_000_000


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100", [10]])
def test_bad_max_pixels(bad: object) -> None:
    with pytest.raises(ConfigError):
        load_image(blocks(), max_pixels=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [(0, 0), (0, 0, 256), (0, 0, -1), (0.5, 0, 0), "white", None, (True, 0, 0)]
)
def test_bad_background(bad: object) -> None:
    with pytest.raises(ConfigError):
        load_image(blocks(), background=bad)  # type: ignore[arg-type]


def test_directory_and_missing_paths(tmp_path: Path) -> None:
    for source in (tmp_path, str(tmp_path), tmp_path / "missing.jpg", "", tmp_path / "a\x00b.png"):
        with pytest.raises(ImageSourceError) as err:
            load_image(source)
        assert err.value.source is not None
    with pytest.raises(ImageSourceError, match="directory"):
        open_image_info(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageSourceError, match="regular file"):
        load_image(fifo)


@pytest.mark.parametrize("bad", [42, 4.2, None, [1, 2], {"a": 1}, object()])
def test_wrong_python_type(bad: object) -> None:
    with pytest.raises(ImageSourceError) as err:
        load_image(bad)  # type: ignore[arg-type]
    assert type(bad).__name__ in err.value.message
    assert err.value.source == f"<{type(bad).__name__}>"


def test_text_mode_and_closed_file_objects(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode_image(blocks()))
    with open(path, encoding="latin-1") as text, pytest.raises(ImageSourceError, match="binary"):
        load_image(text)
    fh = io.BytesIO(b"x")
    fh.close()
    with pytest.raises(ImageSourceError):
        load_image(fh)


def test_errors_are_image_errors_with_dicts() -> None:
    with pytest.raises(ImageError) as err:
        load_image(b"\x89PNG\r\n\x1a\n garbage")
    assert err.value.to_dict()["source"] == "<bytes>"


def test_pillow_global_state_untouched() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    load_image(encode_image(blocks(), "PNG"))
    for bad in (crafted_png(50_000, 50_000), crafted_png(12_000, 12_000), b"junk", b"\xff\xd8\xff"):
        with pytest.raises(ImageError):
            load_image(bad)
    assert (
        Image.MAX_IMAGE_PIXELS,
        ImageFile.LOAD_TRUNCATED_IMAGES,
        list(warnings.filters),
    ) == before


# --- header and metadata ------------------------------------------------------------------


def test_open_image_info_reads_header() -> None:
    data = pil_bytes(Image.new("RGBA", (7, 5)), "PNG")
    assert open_image_info(data) == ImageInfo("PNG", "RGBA", 7, 5, 1, True, False, 1)
    info = open_image_info(np.zeros((3, 4, 4), np.uint8))
    assert (info.format, info.mode, info.width, info.height, info.has_alpha) == (
        None,
        "RGBA",
        4,
        3,
        True,
    )
    assert open_image_info(Image.new("L", (2, 3))).mode == "L"


def test_read_metadata_of_jpeg_with_exif_and_icc() -> None:
    exif = Image.Exif()
    exif[0x010F] = "tracemark-camera"
    icc = srgb_icc()
    data = pil_bytes(Image.fromarray(blocks()), "JPEG", exif=exif.tobytes(), icc_profile=icc)
    meta = read_metadata(data)
    assert meta["format"] == "JPEG" and meta["icc_profile"] == icc
    assert meta["exif"].startswith(b"Exif\x00\x00")
    assert read_metadata(blocks()) == {
        "format": None,
        "exif": None,
        "icc_profile": None,
        "xmp": None,
    }


# --- writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_save_strip_and_keep_metadata(fmt: str, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "tracemark-camera"
    icc = srgb_icc()
    source = pil_bytes(Image.fromarray(blocks()), "JPEG", exif=exif.tobytes(), icc_profile=icc)
    image = load_image(source)
    stripped, kept = tmp_path / f"s{SUFFIX[fmt]}", tmp_path / f"k{SUFFIX[fmt]}"
    save_image(image, stripped)
    meta = read_metadata(source)
    save_image(image, kept, metadata="keep", exif=meta["exif"], icc_profile=meta["icc_profile"])
    assert read_metadata(stripped) == {
        "format": fmt,
        "exif": None,
        "icc_profile": None,
        "xmp": None,
    }
    kept_meta = read_metadata(kept)
    assert kept_meta["icc_profile"] == icc and kept_meta["exif"] is not None
    with Image.open(kept) as reopened:
        assert reopened.getexif()[0x010F] == "tracemark-camera"
    assert not open_image_info(stripped).has_exif


def test_exif_without_header_is_accepted() -> None:
    exif = Image.Exif()
    exif[0x010F] = "x"
    raw = exif.tobytes()[6:]  # bare TIFF block
    data = encode_image(blocks(), "JPEG", metadata="keep", exif=raw)
    assert Image.open(io.BytesIO(data)).getexif()[0x010F] == "x"


def test_icc_in_tiff() -> None:
    data = encode_image(blocks(), "TIFF", metadata="keep", icc_profile=srgb_icc())
    assert read_metadata(data)["icc_profile"] == srgb_icc()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_quality_is_honoured(fmt: str) -> None:
    image = load_image(np.linspace(0, 1, 64 * 64 * 3).reshape(64, 64, 3)) // 2 + noise(64, 64) // 2
    low, high = encode_image(image, fmt, quality=10), encode_image(image, fmt, quality=95)
    assert len(low) < len(high)
    err_low = np.abs(load_image(low).astype(int) - image).mean()
    err_high = np.abs(load_image(high).astype(int) - image).mean()
    assert err_high < err_low


@pytest.mark.parametrize("bad", [0, 101, -5, 50.5, True, "high"])
def test_bad_quality(bad: object) -> None:
    with pytest.raises(ConfigError):
        encode_image(blocks(), "JPEG", quality=bad)  # type: ignore[arg-type]


def test_config_contradictions() -> None:
    with pytest.raises(ConfigError, match="quality"):
        encode_image(blocks(), "PNG", quality=90)
    with pytest.raises(ConfigError, match="strip"):
        encode_image(blocks(), "JPEG", exif=Image.Exif().tobytes())
    with pytest.raises(ConfigError):
        encode_image(blocks(), "BMP", metadata="keep", icc_profile=srgb_icc())
    with pytest.raises(ConfigError):
        encode_image(blocks(), "GIF", metadata="keep", exif=Image.Exif().tobytes())
    with pytest.raises(ConfigError):
        encode_image(blocks(), "PNG", metadata="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        encode_image(blocks(), "JPEG", metadata="keep", exif=b"\x00\x01 not exif")
    with pytest.raises(ConfigError):
        encode_image(blocks(), "JPEG", metadata="keep", exif="text")  # type: ignore[arg-type]


def test_formats_and_suffixes(tmp_path: Path) -> None:
    for name, fmt in (
        ("a.JPG", "JPEG"),
        ("b.jpeg", "JPEG"),
        ("c.tiff", "TIFF"),
        ("d.webp", "WEBP"),
    ):
        save_image(blocks(), tmp_path / name)
        assert open_image_info(tmp_path / name).format == fmt
    save_image(blocks(), tmp_path / "noext", format="png")
    assert open_image_info(tmp_path / "noext").format == "PNG"
    assert open_image_info(encode_image(blocks(), "jpg")).format == "JPEG"
    with pytest.raises(UnsupportedImageError):
        save_image(blocks(), tmp_path / "a.xyz")
    with pytest.raises(UnsupportedImageError):
        save_image(blocks(), tmp_path / "noext2")
    with pytest.raises(UnsupportedImageError):
        encode_image(blocks(), "XYZ")
    assert not (tmp_path / "a.xyz").exists()


def test_save_to_file_object() -> None:
    out = io.BytesIO()
    save_image(blocks(), out, format="PNG")
    np.testing.assert_array_equal(load_image(out.getvalue()), blocks())
    with pytest.raises(ConfigError):
        save_image(blocks(), io.BytesIO())
    with pytest.raises(ImageSourceError):
        save_image(blocks(), 42, format="PNG")  # type: ignore[arg-type]


def test_save_to_bad_destinations(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageSourceError, match="directory"):
        save_image(blocks(), tmp_path / "dir.png")
    with pytest.raises(ImageSourceError) as err:
        save_image(blocks(), tmp_path / "missing" / "a.png")
    assert err.value.source == str(tmp_path / "missing" / "a.png")


def test_save_rejects_non_rgb_arrays() -> None:
    for bad in (
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        Image.new("RGB", (2, 2)),
    ):
        with pytest.raises(UnsupportedImageError):
            encode_image(bad)  # type: ignore[arg-type]


def test_to_pil() -> None:
    image = noise(5, 6)
    pil = to_pil(image[:, ::-1])
    assert pil.mode == "RGB" and pil.size == (6, 5)
    np.testing.assert_array_equal(np.asarray(pil), image[:, ::-1])
    with pytest.raises(UnsupportedImageError):
        to_pil(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(UnsupportedImageError):
        to_pil([[0]])  # type: ignore[arg-type]
    with pytest.raises(EmptyImageError):
        to_pil(np.zeros((0, 4, 3), np.uint8))


def test_public_api() -> None:
    assert set(imageio.__all__) >= {
        "DEFAULT_MAX_PIXELS",
        "ImageInfo",
        "encode_image",
        "load_image",
        "open_image_info",
        "read_metadata",
        "save_image",
        "to_pil",
    }


@pytest.mark.parametrize("quality", [40, 90])
def test_opaque_webp_is_decoded_by_opencv_with_pillows_pixels(quality: int) -> None:
    """The low-memory WebP path (OpenCV) gives exactly Pillow's pixels; translucent files
    still take Pillow's path (their alpha is flattened as documented)."""
    from PIL import Image as PILImage

    from tracemark.imageio import _webp_by_opencv

    rng = np.random.default_rng(quality)
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([xx * 1.5, yy * 2.0, (xx + yy) % 255], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, "WEBP", quality=quality)
    data = buf.getvalue()
    with PILImage.open(io.BytesIO(data)) as im:
        pillow = np.asarray(im.convert("RGB"))
    assert np.array_equal(load_image(data), pillow)
    with PILImage.open(io.BytesIO(data)) as im:
        assert _webp_by_opencv(im, io.BytesIO(data)) is not None  # the OpenCV path was taken
    rgba = io.BytesIO()
    PILImage.fromarray(np.dstack([img, np.full(img.shape[:2], 128, np.uint8)])).save(
        rgba, "WEBP", quality=quality)
    with PILImage.open(io.BytesIO(rgba.getvalue())) as im:
        assert _webp_by_opencv(im, io.BytesIO(rgba.getvalue())) is None
    assert load_image(rgba.getvalue()).shape == img.shape
