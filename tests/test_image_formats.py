"""Issue 12, kinds 1, 2, 13 and 14 at the loader: data that ends early is corrupt whatever
Pillow's global settings; complete images without their end marker load; the formats read
by default and on request; too-small images are a typed error (HTTP 422)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from tracemark.errors import (
    ConfigError,
    CorruptImageError,
    ImageTooSmallError,
    UnsupportedImageError,
)
from tracemark.imageio import (
    OPTIONAL_FORMATS,
    READ_FORMATS,
    format_of_suffix,
    image_suffixes,
    load_image,
    open_image_info,
    sniff_format,
)


def noise(h: int = 96, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth(h: int = 96, w: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 2 % 256, yy * 2 % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


def pil_bytes(a: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    im = a if isinstance(a, Image.Image) else Image.fromarray(a)
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@pytest.fixture(params=[False, True], ids=["pillow-default", "LOAD_TRUNCATED_IMAGES"])
def truncated_flag(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every test of kinds 1 and 2 runs under both values of Pillow's global flag."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", request.param)
    return bool(request.param)


# --- kind 1: data that ends early ------------------------------------------------------


def test_jpeg_bomb_with_end_marker_is_corrupt(truncated_flag: bool) -> None:
    """A 2 KB JPEG whose header says 9000x9000: its scan ends at once, an EOI follows (the
    form libjpeg turns into a grey 243 MB image without an error)."""
    big = pil_bytes(np.full((9000, 9000, 3), 128, np.uint8), "JPEG", quality=10)
    assert Image.open(io.BytesIO(big)).size == (9000, 9000)
    for data in (big[:2000] + b"\xff\xd9", big[:2000]):
        with pytest.raises(CorruptImageError, match="truncated"):
            load_image(data)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("cut", [3, 10, 200, "half"])
def test_jpeg_missing_scan_data_is_corrupt(progressive: bool, cut: object,
                                           truncated_flag: bool) -> None:
    data = pil_bytes(noise(), "JPEG", progressive=progressive)
    body = data[:-2]  # without EOI
    n = len(body) // 2 if cut == "half" else int(cut)  # type: ignore[call-overload]
    # (Data cut and then followed by other bytes is out of reach: libjpeg takes those bytes
    # for scan data, as any decoder must.)
    for damaged in (body[:-n], body[:-n] + b"\xff\xd9"):
        with pytest.raises(CorruptImageError):
            load_image(damaged)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "BMP", "WEBP", "PPM", "JPEG2000"])
def test_other_formats_cut_in_their_pixels_are_corrupt(fmt: str, truncated_flag: bool) -> None:
    if fmt == "JPEG2000" and truncated_flag:
        pytest.xfail("openjpeg reads the file itself; Pillow drops its error under the flag")
    data = pil_bytes(noise(64, 64), fmt)
    for cut in (len(data) // 2, len(data) * 3 // 4):
        with pytest.raises(CorruptImageError):
            load_image(data[:cut])


def test_png_whose_idat_is_short_before_iend_is_corrupt(truncated_flag: bool) -> None:
    """A 12-byte IDAT then IEND: the end marker is there, the pixel data is not."""
    ihdr = struct.pack(">IIBBBBB", 4000, 4000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
    with pytest.raises(CorruptImageError):
        load_image(data)


def test_size_is_refused_before_the_scan_check() -> None:
    big = pil_bytes(np.full((9000, 9000, 3), 128, np.uint8), "JPEG", quality=10)
    from tracemark.errors import ImageTooLargeError

    with pytest.raises(ImageTooLargeError):
        load_image(big[:2000] + b"\xff\xd9", max_pixels=1_000_000)


# --- kind 2: complete images whose end marker is missing --------------------------------


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_without_end_marker_or_with_trailer_loads_identically(
    progressive: bool, truncated_flag: bool
) -> None:
    data = pil_bytes(noise(), "JPEG", progressive=progressive)
    assert data.endswith(b"\xff\xd9")
    intact = load_image(data)
    body = data[:-2]
    for variant in (body, body + b"VENDOR-TRAILER\x00\x01" * 3, data + b"garbage after EOI"):
        np.testing.assert_array_equal(load_image(variant), intact)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_whose_end_marker_is_replaced_by_an_appended_jpeg_loads_identically(
    progressive: bool, truncated_flag: bool
) -> None:
    """``full[:-2] + thumbnail``: a thumbnail-style trailer starting with a second SOI, also
    after a marker segment, and a marker segment that runs past the end. OpenCV decodes
    the baseline forms identically to the intact file; they load pixel-identically here."""
    import cv2

    data = pil_bytes(noise(), "JPEG", progressive=progressive)
    thumb = pil_bytes(noise(16, 16, seed=3), "JPEG")
    intact = load_image(data)
    body = data[:-2]
    app1 = b"\xff\xe1\x00\x10" + b"vendor-trailer"
    variants = (body + thumb, body + app1 + thumb, body + b"\xff\xfe\x00\x08ok" + thumb + thumb,
                body + b"\xff\xe1\x40\x00" + b"cut short", body + thumb[:40])
    for variant in variants:
        np.testing.assert_array_equal(load_image(variant), intact)
    if not progressive:
        for variant in variants[:2]:
            decoded = cv2.imdecode(np.frombuffer(variant, np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(decoded[:, :, ::-1], intact)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("cut", [3, 200, "half"])
def test_jpeg_missing_scan_data_then_an_appended_jpeg_is_corrupt(
    progressive: bool, cut: object, truncated_flag: bool
) -> None:
    """A scan cut short and then followed by a thumbnail JPEG: the thumbnail's SOI ends the
    scan, which is then missing its last blocks."""
    data = pil_bytes(noise(), "JPEG", progressive=progressive)
    thumb = pil_bytes(noise(16, 16, seed=3), "JPEG")
    body = data[:-2]
    n = len(body) // 2 if cut == "half" else int(cut)  # type: ignore[call-overload]
    with pytest.raises(CorruptImageError):
        load_image(body[:-n] + thumb)


def test_png_without_iend_or_last_byte_loads_identically(truncated_flag: bool) -> None:
    data = pil_bytes(smooth(), "PNG")
    assert data.endswith(png_chunk(b"IEND", b""))
    intact = load_image(data)
    for variant in (data[:-12], data[:-1], data[:-4]):
        np.testing.assert_array_equal(load_image(variant), intact)


# --- kind 13: formats ---------------------------------------------------------------------


def _psd(a: np.ndarray) -> bytes:
    """A minimal RGB PSD: header, empty sections, raw composite image data."""
    h, w, _ = a.shape
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    planes = b"".join(a[:, :, c].tobytes() for c in range(3))
    return head + struct.pack(">I", 0) * 3 + struct.pack(">H", 0) + planes


def _xpm(a: np.ndarray) -> bytes:
    grey = (a[:, :, 0] > 127).astype(int)
    rows = ",\n".join('"' + "".join(".#"[v] for v in row) + '"' for row in grey)
    h, w = grey.shape
    return (f'/* XPM */\nstatic char *x[] = {{\n"{w} {h} 2 1",\n". c #000000",\n'
            f'"# c #FFFFFF",\n{rows}\n}};\n').encode()


def _cur(a: np.ndarray) -> bytes:
    """An icon file with BMP entries (what Pillow's CUR reader takes), typed as a cursor."""
    ico = bytearray(pil_bytes(a, "ICO", sizes=[(a.shape[1], a.shape[0])], bitmap_format="bmp"))
    ico[2] = 2  # resource type 2: cursor
    return bytes(ico)


def _fits(a: np.ndarray) -> bytes:
    grey = a[:, :, 0]
    h, w = grey.shape
    cards = [f"{'SIMPLE':8}= {'T':>20}", f"{'BITPIX':8}= {8:>20}", f"{'NAXIS':8}= {2:>20}",
             f"{'NAXIS1':8}= {w:>20}", f"{'NAXIS2':8}= {h:>20}", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode()
    data = grey.tobytes()
    return header + data + bytes(-len(data) % 2880)


def _heif(a: np.ndarray) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra is not installed")
    out = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(a)).save(out, quality=95)
    return out.getvalue()


A = smooth(48, 64)
MAKERS = {
    "PSD": _psd,
    "JPEG2000": lambda a: pil_bytes(a, "JPEG2000"),
    "AVIF": lambda a: pil_bytes(a, "AVIF", quality=95),
    "HEIF": _heif,
    "PPM": lambda a: pil_bytes(a, "PPM"),
    "PGM16": lambda a: pil_bytes(Image.fromarray(a[:, :, 0].astype(np.uint16) * 257), "PPM"),
    "TGA": lambda a: pil_bytes(a, "TGA"),
    "PCX": lambda a: pil_bytes(a, "PCX"),
    "XBM": lambda a: pil_bytes(Image.fromarray(a[:, :, 0] > 127), "XBM"),
    "XPM": _xpm,
    "ICO": lambda a: pil_bytes(a, "ICO", sizes=[(a.shape[1], a.shape[0])]),
    "CUR": _cur,
    "SGI": lambda a: pil_bytes(a, "SGI"),
    "DDS": lambda a: pil_bytes(a, "DDS"),
    "QOI": lambda a: pil_bytes(a, "QOI"),
    "FITS": _fits,
    "IM": lambda a: pil_bytes(a, "IM"),
}
FORMAT_OF = {"PGM16": "PPM"}
LOSSLESS_RGB = {"PSD", "JPEG2000", "PPM", "TGA", "PCX", "ICO", "CUR", "SGI", "QOI", "IM"}


def test_every_declared_format_has_a_generated_file() -> None:
    covered = {FORMAT_OF.get(k, k) for k in MAKERS}
    assert covered == set(READ_FORMATS[6:]) | set(OPTIONAL_FORMATS)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_each_format_loads_as_declared(kind: str) -> None:
    if kind == "AVIF" and "AVIF" not in Image.OPEN:
        pytest.skip("this Pillow has no AVIF decoder")
    data = MAKERS[kind](A)
    fmt = FORMAT_OF.get(kind, kind)
    if fmt in READ_FORMATS:
        out = load_image(data)
        assert open_image_info(data).format == fmt
    else:
        with pytest.raises(UnsupportedImageError, match="formats='all'"):
            load_image(data)
        with pytest.raises(UnsupportedImageError):
            load_image(data, formats=["PNG"])
        out = load_image(data, formats="all")
        assert np.array_equal(out, load_image(data, formats=[fmt]))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    if kind in LOSSLESS_RGB:
        np.testing.assert_array_equal(out, A)
    elif kind in ("AVIF", "HEIF"):
        assert float(np.abs(out.astype(int) - A.astype(int)).mean()) < 8
    elif kind == "PGM16":
        np.testing.assert_array_equal(out[:, :, 0], A[:, :, 0])


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_corrupt_bytes_of_each_format_are_corrupt(kind: str) -> None:
    if kind == "AVIF" and "AVIF" not in Image.OPEN:
        pytest.skip("this Pillow has no AVIF decoder")
    data = MAKERS[kind](A)
    damaged = data[: max(len(data) // 2, 40)]
    with pytest.raises(CorruptImageError):
        load_image(damaged, formats="all")


def test_formats_argument_is_checked() -> None:
    png = pil_bytes(A, "PNG")
    for bad in ("everything", ["PNG", "EPS"], [], 3):
        with pytest.raises(ConfigError):
            load_image(png, formats=bad)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedImageError, match="PNG"):
        load_image(png, formats=["JPEG"])
    assert load_image(png, formats=["png", "jpg"]).shape == (48, 64, 3)


def test_vocabulary_follows_the_default_set() -> None:
    suffixes = image_suffixes()
    for ext, fmt in ((".psd", "PSD"), (".jp2", "JPEG2000"), (".ppm", "PPM"), (".pgm", "PPM")):
        assert ext in suffixes and format_of_suffix(ext) == fmt
    for ext in (".tga", ".pcx", ".ico", ".qoi", ".eps"):
        assert ext not in suffixes and format_of_suffix(ext) is None
    assert sniff_format(MAKERS["PSD"](A)[:64]) == "PSD"
    assert sniff_format(MAKERS["JPEG2000"](A)[:64]) == "JPEG2000"
    assert sniff_format(MAKERS["TGA"](A)[:64]) is None


# --- kind 14: too small --------------------------------------------------------------------


def test_too_small_is_a_typed_error_with_size_and_minimum() -> None:
    from tracemark.fingerprint.pdq import pdq_hash

    with pytest.raises(ImageTooSmallError, match=r"5 px; got 1x1"):
        pdq_hash(np.zeros((1, 1, 3), np.uint8))


def test_service_answers_422_for_a_too_small_image(tmp_path: object) -> None:
    pytest.importorskip("fastapi")
    from tracemark.errors import ImageError
    from tracemark.service.app import _status_for

    err = ImageTooSmallError("PDQ needs both sides >= 5 px; got 1x1")
    assert isinstance(err, ImageError)
    assert _status_for(err) == 422
    assert _status_for(UnsupportedImageError("x")) == 415
