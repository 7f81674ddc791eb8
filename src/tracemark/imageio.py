"""Safe image input and output: one loader for every part of tracemark.

:func:`load_image` turns a path, bytes, a binary file object, a PIL image or a numpy
array into an RGB ``uint8`` array of shape ``(H, W, 3)`` (C-contiguous, always a new
array). :func:`open_image_info` and :func:`read_metadata` read the header only;
:func:`save_image` / :func:`encode_image` write images with metadata stripped by default.

Formats written, and read by default: JPEG (also MPO, the multi-picture JPEG of many
cameras), PNG, WebP, TIFF, BMP and GIF (:data:`SUPPORTED_FORMATS`); also written
(:data:`WRITE_FORMATS`): AVIF (Pillow's libavif) and HEIF/HEIC (the ``heif`` extra,
pillow-heif with x265), lossy at :data:`HEIF_AVIF_QUALITY` by default. Also read by default
(:data:`READ_FORMATS`), the formats rights holders and platforms keep works in: PSD (the
composite image), JPEG 2000, AVIF (a Pillow with libavif), HEIF/HEIC (the ``heif`` extra,
pillow-heif; libheif applies the file's rotation) and Netpbm (8 and 16 bit). Read only
when asked (``formats="all"`` or an allow-list; :data:`OPTIONAL_FORMATS`): TGA, PCX, XBM,
XPM, ICO, CUR, SGI, DDS, QOI, FITS, IM. No other decoder of Pillow is ever run (EPS would
run Ghostscript). A file of a format that is not allowed, or that tracemark recognises but
does not read (JPEG XL, PDF, SVG, ...), is :class:`~tracemark.errors.UnsupportedImageError`;
:class:`~tracemark.errors.CorruptImageError` is for data no decoder can make sense of.
``bytes`` are always image data, never a path.
For animated GIF, APNG and WebP, multi-page TIFF and MPO, only the first frame is read.
The EXIF orientation tag is applied (``ImageOps.exif_transpose``); a corrupt EXIF block
is ignored rather than making the image unreadable. Embedded ICC profiles are *not*
applied: pixel values are taken as they are (as sRGB).

Conversion policy (every input ends as RGB ``uint8``):

==========================  ===========================================================
Input                       Conversion
==========================  ===========================================================
``RGB``                     unchanged
``1``, ``L``, ``P``         grey / palette expanded to RGB (``1``: 0 or 255)
``RGBX``, ``YCbCr``,        Pillow's ``convert("RGB")`` (``CMYK`` is naive, without ICC;
``CMYK``, ``HSV``, ``LAB``  Adobe's inverted CMYK JPEGs are handled by Pillow)
``RGBA``, ``LA``, ``PA``,   alpha flattened over ``background`` (white by default):
``RGBa``, ``La``, and       ``out = round((c * a + bg * (255 - a)) / 255)``; premultiplied
``P``/``L``/``RGB`` with    modes are un-premultiplied first
``transparency``
``I;16`` (all byte orders)  ``round(v / 257)``: 0..65535 maps onto 0..255 (257*k -> k)
``I`` (32-bit signed int)   clipped to 0..65535 (the range 16-bit files decode to), then
                            ``round(v / 257)``
``F`` (32-bit float)        taken as [0, 1] like float arrays: clipped, NaN -> 0,
                            ``round(v * 255)``
array ``uint8``             copied; ``(H, W)`` and ``(H, W, 1)`` repeated to 3 channels
array ``uint16``            ``round(v / 257)``
array ``bool``              False -> 0, True -> 255
array float (16/32/64)      taken as [0, 1]: clipped, NaN -> 0, ``round(v * 255)``
array ``(H, W, 4)``         channels converted as above, then alpha flattened as above
==========================  ===========================================================

Decompression bombs: the header is read first and an image with more than
``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, ``None`` disables it) is
refused with :class:`~tracemark.errors.ImageTooLargeError` before any pixel is decoded;
arrays and PIL images are checked too. Pillow's own hard limit (twice
``PIL.Image.MAX_IMAGE_PIXELS``, about 179 Mpx) still applies to files and is reported the
same way; tracemark never changes Pillow's global settings (``MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``). Data that ends before the decoder is done raises
:class:`~tracemark.errors.CorruptImageError` even where an application has set
``LOAD_TRUNCATED_IMAGES = True`` (see :func:`_strict_load`): a JPEG whose scan data runs
out is refused before the full decode (libjpeg-turbo's own "premature end of data
segment", through simplejpeg at 1/8 scale), while a JPEG whose scan data is complete but
whose end-of-image marker is missing or replaced by a trailer (bytes, a marker segment, an
appended thumbnail JPEG) loads, as does a PNG whose
pixel data is complete but whose IEND chunk (or last byte) is missing. Limits: bytes that
follow a cut inside a JPEG scan are taken as scan data (by any decoder); under the flag,
errors of decoders that read the file themselves (JPEG 2000) are dropped by Pillow.

Large images are converted a strip of rows at a time (:data:`CONVERT_STRIP_PIXELS`): the
peak memory of a load is the decoded Pillow image plus the ``(H, W, 3)`` result plus one
strip. :func:`rgb_view` reads an RGB array without copying it. Transparency can be kept
beside the colour (:func:`load_image_with_alpha`, :func:`composite`,
:func:`colour_under_alpha`, :func:`encode_image_with_alpha`, :func:`save_image_with_alpha`;
see the block at the end of this module and docs/watermark.md, *Transparency*).

A 1x1 image loads fine: minimum sizes are checked by the operations that need them.
Every error is a :class:`~tracemark.errors.ImageError` subclass whose ``source`` is the
path, ``"<bytes>"``, ``"<file object>"``, ``"<PIL image>"``, ``"<array>"``, or the
``name`` given.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import stat
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Final, Literal, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tracemark.errors import (
    ConfigError,
    CorruptImageError,
    EmptyImageError,
    ImageSourceError,
    ImageTooLargeError,
    TracemarkError,
    UnsupportedImageError,
)

__all__ = [
    "ALPHA_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "OPTIONAL_FORMATS",
    "READ_FORMATS",
    "SUPPORTED_FORMATS",
    "WRITE_FORMATS",
    "HEIF_AVIF_QUALITY",
    "ImageInfo",
    "ImageSource",
    "colour_under_alpha",
    "composite",
    "encode_image",
    "encode_image_with_alpha",
    "has_alpha_channel",
    "format_of_suffix",
    "image_suffixes",
    "load_image",
    "load_image_with_alpha",
    "media_type",
    "sniff_format",
    "sniff_media_type",
    "open_image_info",
    "read_metadata",
    "resolve_formats",
    "rgb_view",
    "save_image",
    "save_image_with_alpha",
    "to_pil",
    "write_file",
    "written_suffixes",
]

DEFAULT_MAX_PIXELS: Final[int] = 100_000_000
"""Default pixel limit (width * height) of :func:`load_image`."""

SUPPORTED_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
"""Formats written, and read by default (Pillow's names)."""

WRITE_FORMATS: Final[tuple[str, ...]] = (*SUPPORTED_FORMATS, "AVIF", "HEIF")
"""Formats :func:`encode_image` writes: :data:`SUPPORTED_FORMATS`, plus AVIF (needs a
Pillow built with libavif, 11.2 or later; else :class:`~tracemark.errors.UnsupportedImageError`)
and HEIF/HEIC (HEVC in a HEIF container, brand ``heic``: needs the ``heif`` extra,
pillow-heif; else :class:`~tracemark.errors.MissingExtraError`)."""

HEIF_AVIF_QUALITY: Final[int] = 90
"""Default ``quality`` (0..100) of the HEIF and AVIF writers (pillow-heif's own default is 50,
Pillow's AVIF 75). Measured on six corpus images (three photos, three drawings, long side
1024 px): tracemark's lattice watermark reads back with its full payload from HEIC and AVIF
files at every quality tried (50, 75, 85, 90, 95), p-values 1e-17 to 1e-50; 90 keeps a margin
(p <= 1e-20 on the hardest image) at about a third of the size of quality 95 for AVIF."""

READ_FORMATS: Final[tuple[str, ...]] = (
    *SUPPORTED_FORMATS, "PSD", "JPEG2000", "AVIF", "HEIF", "PPM",
)
"""Formats :func:`load_image` reads by default (``formats="default"``): the written ones,
plus those rights holders and platforms keep works in: PSD (the composite image),
JPEG 2000, AVIF (needs a Pillow built with libavif, 11.2 or later), HEIF/HEIC (needs the
``heif`` extra, pillow-heif) and Netpbm (PBM/PGM/PPM, 8 and 16 bit; Pillow's ``PPM``)."""

OPTIONAL_FORMATS: Final[tuple[str, ...]] = (
    "TGA", "PCX", "XBM", "XPM", "ICO", "CUR", "SGI", "DDS", "QOI", "FITS", "IM",
)
"""Formats read only on request (``formats="all"`` or an allow-list naming them): Pillow
decodes them, but they are rare as works and have weak magic numbers (TGA has none).
No other Pillow decoder is ever run (EPS would run Ghostscript)."""

ImageFormats: TypeAlias = "Literal['default', 'all'] | Iterable[str]"

ImageSource: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image | np.ndarray"
)

_OPEN_FORMATS: Final = READ_FORMATS  # MPO files are opened by the JPEG plugin
_HEIF_SUFFIXES: Final = (".heic", ".heif", ".hif")
_HEIF_BRANDS: Final = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
                       b"msf1")
_REPORTED_FORMAT: Final = {"MPO": "JPEG"}
# Decoders that read to the end of the file by design (JPEG: through load_read only).
_READS_TO_EOF: Final = frozenset({"JPEG", "MPO", "JPEG2000"})
# Names of _FOREIGN_MAGIC -> tracemark's format names, for formats tracemark can read.
_SNIFFED_FORMAT: Final = {"HEIC": "HEIF", "HEIF": "HEIF", "AVIF": "AVIF", "JPEG 2000": "JPEG2000",
                          "PSD": "PSD", "Netpbm": "PPM", "ICO": "ICO", "QOI": "QOI", "DDS": "DDS",
                          "SGI": "SGI", "FITS": "FITS"}
_EXIF_HEADER: Final = b"Exif\x00\x00"
_ORIENTATION_TAG: Final = 0x0112
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_TRANSPARENCY_MODES: Final = frozenset({"P", "L", "RGB"})

# Exceptions Pillow (and its C decoders) raise on bad data.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    ZeroDivisionError,
    OverflowError,
    zlib.error,
)

# Magic numbers of formats Pillow does not read, or tracemark does not accept:
# (offset, magic, name). Used only to word the error for unidentified data.
_FOREIGN_MAGIC: Final = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypmsf1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "PostScript"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"icns", "ICNS"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML/SVG"),
    (0, b"\x01\xda", "SGI"),
    (0, b"SIMPLE  =", "FITS"),
    *((0, f"P{n}{ws}".encode(), "Netpbm") for n in range(1, 8) for ws in " \t\r\n"),
)


# --- public API ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header of an image says, read without decoding pixels."""

    format: str | None
    """Pillow's format name (``"MPO"`` reported as ``"JPEG"``); ``None`` for arrays."""
    mode: str
    """Pillow's mode (for arrays: ``"L"``, ``"RGB"`` or ``"RGBA"`` by channel count)."""
    width: int
    height: int
    n_frames: int
    has_alpha: bool
    """An alpha channel or palette/colour-key transparency."""
    has_exif: bool
    """An EXIF block is present (in the header; a PNG ``eXIf`` chunk after the pixels is missed)."""
    orientation: int = 1
    """EXIF orientation (1..8; 1 when absent). ``width``/``height`` are as stored, before it."""


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    name: str | None = None,
    formats: ImageFormats = "default",
) -> np.ndarray:
    """Load ``source`` as a new RGB ``uint8`` array ``(H, W, 3)``; see the module docstring.

    ``max_pixels`` bounds ``width * height`` before decoding (``None``: no tracemark
    limit); ``background`` is the colour alpha is flattened over; ``name`` replaces the
    ``source`` label of errors. A file object is read from its current position to its end.
    ``formats`` is ``"default"`` (:data:`READ_FORMATS`), ``"all"`` (plus
    :data:`OPTIONAL_FORMATS`) or an allow-list of names from those two; a file of a format
    not allowed is :class:`~tracemark.errors.UnsupportedImageError`, never decoded.
    """
    allowed = _check_formats(formats)
    limit = _check_max_pixels(max_pixels)
    bg = _check_background(background)
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, label, limit, bg)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label, limit)
        with _pil_errors(label, "decoding"):
            source.load()
            return _to_rgb(_oriented(source), bg, label)
    with _opened(source, label, limit, allowed) as (im, reader), _pil_errors(label, "decoding"):
        return _decode_rgb(im, reader, bg, label)


def _decode_rgb(im: Image.Image, reader: _WatchedBytes | _WatchedFile,
                bg: tuple[int, int, int], label: str) -> np.ndarray:
    """An opened image decoded to RGB uint8 (the body of :func:`load_image`)."""
    fast = _webp_by_opencv(im, reader)
    if fast is not None:
        return fast
    im = _strict_load(im, reader, label)
    return _to_rgb(_oriented(im), bg, label)


def _webp_by_opencv(
    im: Image.Image, reader: _WatchedBytes | _WatchedFile
) -> np.ndarray | None:
    """A still, opaque, unrotated WebP decoded by OpenCV (libwebp) into RGB, or None.

    Pillow's WebP decoder peaks at about 15 bytes a pixel (1.27 GiB for 81 Mpx), OpenCV's
    at the 3-byte result plus libwebp's own buffer (0.54 GiB), with identical pixels
    (checked on corpus photos and art at WebP quality 50 and 90, and by a test). Animated,
    translucent or EXIF-rotated files, and anything OpenCV cannot decode (a truncated file
    among them), return None and take Pillow's path, which reports the typed error."""
    if im.format != "WEBP" or im.mode != "RGB" or getattr(im, "n_frames", 1) != 1:
        return None
    try:
        if im.getexif().get(0x0112, 1) != 1:
            return None
    except Exception:  # unreadable EXIF: let Pillow's path decide
        return None
    import cv2

    pos = reader.tell()
    try:
        reader.seek(0)
        data = np.frombuffer(reader.read(), np.uint8)
    finally:
        reader.seek(pos)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape[:2] != (im.height, im.width):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def open_image_info(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    formats: ImageFormats = "default",
) -> ImageInfo:
    """Read format, mode, size, frame count, alpha and EXIF presence from the header only.

    Raises the same errors as :func:`load_image` for the source and the pixel limit;
    corrupt pixel data past the header is not detected.
    """
    allowed = _check_formats(formats)
    limit = _check_max_pixels(max_pixels)
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        _check_array(source, label, limit)
        channels = 1 if source.ndim == 2 else source.shape[2]
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        h, w = source.shape[:2]
        return ImageInfo(None, mode, int(w), int(h), 1, channels == 4, False)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label, limit)
        with _pil_errors(label, "reading the header"):
            return _info(source)
    with _opened(source, label, limit, allowed) as (im, _), \
            _pil_errors(label, "reading the header"):
        return _info(im)


def read_metadata(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    formats: ImageFormats = "default",
) -> dict[str, Any]:
    """Return ``{"format", "exif", "icc_profile", "xmp"}`` of an image (bytes or ``None``).

    ``exif`` always starts with ``b"Exif\\x00\\x00"``. Only the EXIF block of JPEG, PNG and
    WebP is reported (not TIFF's own tags). A PNG with no EXIF in its header is decoded to
    look for an ``eXIf`` chunk after the pixels. Arrays have no metadata.
    """
    allowed = _check_formats(formats)
    limit = _check_max_pixels(max_pixels)
    label = _label(source, name)
    if isinstance(source, np.ndarray):
        _check_array(source, label, limit)
        return {"format": None, "exif": None, "icc_profile": None, "xmp": None}
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label, limit)
        return _metadata(source)
    with _opened(source, label, limit, allowed) as (im, _), \
            _pil_errors(label, "reading metadata"):
        if im.format == "PNG" and "exif" not in im.info:
            im.load()
        return _metadata(im)


def to_pil(image: np.ndarray) -> Image.Image:
    """Wrap an RGB ``uint8`` array ``(H, W, 3)`` as a new PIL ``RGB`` image."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(
            f"expected a numpy uint8 array of shape (H, W, 3); got {type(image).__name__} "
            "(use tracemark.imageio.load_image to convert)",
            source=f"<{type(image).__name__}>",
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UnsupportedImageError(
            f"expected a uint8 array of shape (H, W, 3); got dtype {image.dtype} shape {image.shape}",
            source="<array>",
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise EmptyImageError(f"array has no pixels: shape {image.shape}", source="<array>")
    return Image.fromarray(np.ascontiguousarray(image))


def encode_image(
    image: np.ndarray,
    format: str = "PNG",
    *,
    quality: int | None = None,
    metadata: Literal["strip", "keep"] = "strip",
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """Encode an RGB ``uint8`` array as ``format`` and return the file's bytes.

    ``format`` is one of :data:`WRITE_FORMATS` (any case; ``"JPG"``, ``"TIF"``, ``"HEIC"``
    are aliases). ``quality`` (1..100) applies to JPEG, WebP, AVIF and HEIF only; ``None``
    keeps Pillow's default for JPEG (75) and WebP (80) and :data:`HEIF_AVIF_QUALITY` for
    AVIF and HEIF (lossy, 4:2:0). PNG, TIFF and BMP are lossless; GIF is quantised to 256
    colours. ``metadata="strip"`` writes no EXIF, ICC or XMP (giving ``exif`` or
    ``icc_profile`` with it is a :class:`ConfigError`); ``"keep"`` writes the ``exif``
    (JPEG, PNG, WebP, AVIF, HEIF) and ``icc_profile`` (all but BMP and GIF) given.

    Raises :class:`~tracemark.errors.UnsupportedImageError` for a format not written (or
    AVIF with a Pillow without libavif, or an encoder failure),
    :class:`~tracemark.errors.MissingExtraError` for HEIF without the ``heif`` extra
    (``pip install 'tracemark[heif]'``), :class:`ConfigError` for bad options.
    """
    writer = _writer(format)
    options = _save_options(writer, quality, metadata, exif, icc_profile)
    pil = to_pil(image)
    return _encode_pil(pil, writer, options)


def _encode_pil(pil: Image.Image, writer: _Writer, options: dict[str, Any]) -> bytes:
    """``pil`` encoded by ``writer`` with ``options``; an encoder failure (or running out of
    memory) is :class:`~tracemark.errors.UnsupportedImageError`."""
    if writer.default_quality is not None and "quality" not in options:
        options = {**options, "quality": writer.default_quality}
    if writer.pil_format == "HEIF":
        return _encode_heif(pil, options)
    Image.init()
    if writer.pil_format not in Image.SAVE:
        raise UnsupportedImageError(
            f"this Pillow cannot write {writer.pil_format} (AVIF needs Pillow >= 11.2 built "
            "with libavif)", source="<array>")
    out = io.BytesIO()
    try:
        pil.save(out, format=writer.pil_format, **options)
    except (*_DECODE_ERRORS, MemoryError) as exc:
        raise UnsupportedImageError(
            f"could not encode as {writer.pil_format}: {exc}", source="<array>"
        ) from exc
    return out.getvalue()


def _encode_heif(pil: Image.Image, options: dict[str, Any]) -> bytes:
    """``pil`` as a HEIC file (HEVC, x265) by pillow-heif, which registers no plugin with
    Pillow here. Without pillow-heif: :class:`~tracemark.errors.MissingExtraError`."""
    from tracemark._optional import require

    pillow_heif = require("pillow_heif", "heif", purpose="HEIF/HEIC output")
    out = io.BytesIO()
    try:
        pillow_heif.from_pillow(pil).save(out, **options)
    except (*_DECODE_ERRORS, RuntimeError, MemoryError) as exc:
        raise UnsupportedImageError(f"could not encode as HEIF: {exc}", source="<array>") from exc
    return out.getvalue()


def save_image(
    image: np.ndarray,
    dest: str | os.PathLike[str] | IO[bytes],
    *,
    format: str | None = None,
    quality: int | None = None,
    metadata: Literal["strip", "keep"] = "strip",
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
) -> None:
    """Write an RGB ``uint8`` array to a path or a binary file object.

    ``format`` defaults to the one named by the path's suffix (required for file
    objects). The image is encoded before the destination is touched; other options are
    those of :func:`encode_image`. A path is written atomically: to a temporary file in the
    same folder, synced, then renamed over ``dest``. A reader never sees half a file, a
    failed write leaves ``dest`` as it was, and a ``dest`` that is a symbolic or hard link
    is replaced by the new file: the file it linked to is never written through.
    """
    if isinstance(dest, str | os.PathLike):
        path = os.fspath(dest)
        label = os.fsdecode(path)
        if format is None:
            format = _format_from_suffix(label)
        data = encode_image(
            image, format, quality=quality, metadata=metadata, exif=exif, icc_profile=icc_profile
        )
        if os.path.isdir(path):
            raise ImageSourceError("destination is a directory", source=label)
        _write_atomically(path, data, label)
        return
    if not hasattr(dest, "write"):
        raise ImageSourceError(
            f"cannot write an image to a {type(dest).__name__}; expected a path or a binary "
            "file object",
            source=f"<{type(dest).__name__}>",
        )
    if format is None:
        raise ConfigError(
            "format is required when writing to a file object", source="<file object>"
        )
    data = encode_image(
        image, format, quality=quality, metadata=metadata, exif=exif, icc_profile=icc_profile
    )
    try:
        dest.write(data)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageSourceError(f"cannot write: {exc}", source="<file object>") from exc


def write_file(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write an encoded file's bytes (e.g. :func:`encode_image`'s, made elsewhere) to the
    path ``dest`` atomically, as :func:`save_image` does. Raises
    :class:`~tracemark.errors.ImageSourceError` when ``dest`` is a folder or cannot be
    written."""
    path = os.fspath(dest)
    label = os.fsdecode(path)
    if os.path.isdir(path):
        raise ImageSourceError("destination is a directory", source=label)
    _write_atomically(path, data, label)


def _write_atomically(path: str, data: bytes, label: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tracemark-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ImageSourceError(f"cannot write: {reason}", source=label) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads);
    0o022 where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


# --- decoding: data that ends early is corrupt, whatever Pillow's global settings ----------

_JPEG_EOI: Final = b"\xff\xd9"
# libjpeg's JWRN_HIT_MARKER: the entropy decoder needed bits past the end of the scan data.
_JPEG_SHORT_SCAN: Final = "premature end of data segment"


class _Truncated(Exception):
    """Raised inside Pillow's decode loop when the decoder wants data and none is left."""


def _strict_load(
    im: Image.Image, reader: _WatchedBytes | _WatchedFile, label: str
) -> Image.Image:
    """Decode ``im`` fully; data that ends before the decoder is done is corrupt.

    Pillow decides "truncated" by the module flag ``ImageFile.LOAD_TRUNCATED_IMAGES``, which
    an application may have set; tracemark decides it here, for this image only:

    * the image's own ``load_read`` (Pillow's hook for reading pixel data) is wrapped so
      that an empty read while the decoder still asks for data raises at once, and the
      reader notes any end of file met while decoding (decoders that read the file
      themselves); trailing chunks read after the pixels (``load_end``) do not count;
    * JPEG: the end-of-image marker is optional (some cameras and encoders write a trailer
      in its place, or none), so at the end of the data the decoder is given one, as
      Pillow does under its flag. Where the JPEG stream ends before the data does (a
      trailer that is not a marker segment, such as an appended thumbnail JPEG, or a marker
      segment running past the end; :func:`_jpeg_stream_end`), the decoder is given the
      stream only, then the end-of-image marker. Whether the scan data itself was complete
      is decided before the full decode by :func:`_check_jpeg_scan`.
    """
    if im.format == "HEIF":
        return _load_heif(reader)
    jpeg = im.format in ("JPEG", "MPO")
    stream_end = _check_jpeg_scan(reader, label) if jpeg else None
    own_read = getattr(type(im), "load_read", None)
    eoi_sent = False

    def load_read(size: int) -> bytes:
        nonlocal eoi_sent
        if stream_end is not None and im.fp is reader:
            # Stop at the end of the JPEG stream: what follows (an appended thumbnail JPEG,
            # a marker segment cut short) is a trailer, not data for this image.
            size = max(0, min(size, stream_end - reader.tell()))
            if not size:
                if eoi_sent:
                    raise _Truncated
                eoi_sent = True
                return _JPEG_EOI
        try:  # im.fp at call time: some plugins (WebP) decode from a buffer of their own
            data: bytes = own_read(im, size) if own_read else im.fp.read(size)  # type: ignore[union-attr]
        except (IndexError, struct.error, _Truncated) as exc:
            raise _Truncated from exc
        if not data and size:
            if jpeg and not eoi_sent:
                eoi_sent = True
                return _JPEG_EOI
            raise _Truncated
        return data

    inner_end = im.load_end  # type: ignore[attr-defined]

    def load_end() -> None:
        reader.armed = False  # chunks after the pixels (PNG text, IEND) are optional
        inner_end()

    im.load_read = load_read  # type: ignore[attr-defined]
    im.load_end = load_end  # type: ignore[attr-defined]
    reader.hit_eof = False
    reader.armed = True
    try:
        im.load()
    except _Truncated:
        raise CorruptImageError("image data is truncated", source=label) from None
    finally:
        reader.armed = False
    if reader.hit_eof and im.format not in _READS_TO_EOF:
        raise CorruptImageError("image data is truncated", source=label)
    return im


def _whole(reader: _WatchedBytes | _WatchedFile) -> bytes:
    pos = reader.tell()
    try:
        reader.seek(0)
        return reader.read()
    finally:
        reader.seek(pos)


def _heif_plugin() -> Any:
    """pillow-heif's image class, used directly: no opener is registered with Pillow."""
    try:
        from pillow_heif import as_plugin
    except ImportError:
        return None
    return as_plugin.HeifImageFile


def _load_heif(reader: _WatchedBytes | _WatchedFile) -> Image.Image:
    """Decode a HEIF/HEIC file with libheif (pillow-heif), 8 bits per channel, its
    transformations (rotation, mirror) applied by libheif. pillow-heif's own ``load``
    hides decode errors under ``LOAD_TRUNCATED_IMAGES``; ``HeifFile.data`` does not."""
    import pillow_heif

    heif = pillow_heif.open_heif(_whole(reader), convert_hdr_to_8bit=True)
    data = heif.data
    return Image.frombytes(heif.mode, heif.size, data, "raw", heif.mode, heif.stride)


# A marker inside entropy-coded data: 0xFF followed by neither a stuffed 0x00, a restart
# marker RST0-7 (0xD0-0xD7) nor a fill byte 0xFF (ITU-T T.81 B.1.1.2, B.1.1.5).
_JPEG_MARKER_IN_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Markers without a length field (T.81 table B.1): TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
# Marker segments that may follow a scan of the same image (T.81 B.2.4, B.5, B.6):
# DHT, DAC, SOS, DQT, DNL, DRI, APPn, COM.
_JPEG_BETWEEN_SCANS: Final = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0),
                                        0xFE})


def _jpeg_stream_end(data: bytes) -> int | None:
    """The offset just past the JPEG stream at the start of ``data``.

    Walks the marker segments (ITU-T T.81 annex B) and skips each scan's entropy-coded data.
    After the first scan the stream ends at its end-of-image marker (included), or before
    anything that cannot continue this image: bytes that are not a marker, a second SOI
    (an appended JPEG, the common thumbnail trailer), a frame header, or a marker segment
    whose length runs past the end of the data. ``len(data)`` when the data ends inside the
    stream (no end marker: the decoder is then given one). ``None`` when no scan is found
    (the file is left to the decoder as it is).
    """
    n = len(data)
    pos = 2  # after SOI
    scanned = False
    while pos < n:
        if data[pos] != 0xFF:
            return pos if scanned else None
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= n:
            return n if scanned else None
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2 if scanned else None
        if scanned and marker not in _JPEG_BETWEEN_SCANS:
            return pos
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            return pos if scanned else None
        seg_end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if seg_end > n:
            return pos if scanned else None
        pos = seg_end
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            scanned = True
            found = _JPEG_MARKER_IN_SCAN.search(data, pos)
            if found is None:
                return n
            pos = found.start()
    return n if scanned else None


def _check_jpeg_scan(reader: _WatchedBytes | _WatchedFile, label: str) -> int | None:
    """Refuse a JPEG whose entropy-coded data ends before its last MCU; return where its
    stream ends (:func:`_jpeg_stream_end`, ``None``: unknown).

    libjpeg fills the missing MCUs of such a file with grey and only warns (a 2 KB file
    whose header says 9000x9000 decodes "fine"); Pillow drops that warning. The file is
    decoded once more by libjpeg-turbo through simplejpeg at 1/8 scale in strict mode
    (every scan is entropy-decoded in full; the inverse DCT works on 1/64 of the pixels),
    with an end-of-image marker appended when the data does not end with one, and refused
    when libjpeg reports ``JWRN_HIT_MARKER`` ("premature end of data segment"): the scan
    ran out of bits. Any other warning (bytes between the last MCU and the end marker, a
    trailer, a marker segment cut short after complete scans) does not mean missing
    pixels, and the file is left to Pillow.
    """
    import simplejpeg

    data = _whole(reader)
    end = _jpeg_stream_end(data)
    if end is not None and end < len(data):
        data = data[:end]
    if not data.endswith(_JPEG_EOI):
        data += _JPEG_EOI
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, strict=True)
    except ValueError as exc:
        if _JPEG_SHORT_SCAN in str(exc).lower():
            raise CorruptImageError(
                "image data is truncated (the JPEG scan data ends before its last block)",
                source=label,
            ) from None
    return end


# --- sources ------------------------------------------------------------------


class _Watch:
    """Mixin for a binary reader that notes an empty read while ``armed`` (a truncated file)."""

    armed: bool = False
    hit_eof: bool = False

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = super().read(size)  # type: ignore[misc]
        if self.armed and not data and size != 0:
            self.hit_eof = True
        return data


class _WatchedBytes(_Watch, io.BytesIO):
    pass


class _WatchedFile(_Watch, io.BufferedReader):
    pass


def _label(source: object, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | os.PathLike):
        try:
            return os.fsdecode(os.fspath(source))
        except TypeError:
            return f"<{type(source).__name__}>"
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if hasattr(source, "read"):
        return "<file object>"
    return f"<{type(source).__name__}>"


def _reader(source: object, label: str) -> _WatchedBytes | _WatchedFile:
    """A watched binary reader over a path, bytes or a file object (checked, non-empty)."""
    if isinstance(source, str | os.PathLike):
        return _open_path(source, label)
    if isinstance(source, bytes | bytearray | memoryview):
        data = source.tobytes() if isinstance(source, memoryview) else bytes(source)
    elif hasattr(source, "read"):
        try:
            data = source.read()
        except (OSError, ValueError) as exc:
            raise ImageSourceError(f"cannot read the file object: {exc}", source=label) from exc
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ImageSourceError(
                f"file object returned {type(data).__name__}, not bytes; open it in binary mode",
                source=label,
            )
        data = bytes(data)
    else:
        raise ImageSourceError(
            f"cannot read an image from a {type(source).__name__}; expected a path, bytes, "
            "a binary file object, a PIL image or a numpy array",
            source=label,
        )
    if not data:
        raise EmptyImageError("no bytes to decode", source=label)
    return _WatchedBytes(data)


def _open_path(source: str | os.PathLike[str], label: str) -> _WatchedFile:
    try:
        path = os.fspath(source)
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ImageSourceError("no such file", source=label) from exc
    except (OSError, ValueError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ImageSourceError(f"cannot access the path: {reason}", source=label) from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageSourceError("is a directory, not an image file", source=label)
    if not stat.S_ISREG(st.st_mode):
        raise ImageSourceError("not a regular file", source=label)
    if st.st_size == 0:
        raise EmptyImageError("file is empty (0 bytes)", source=label)
    try:
        return _WatchedFile(io.FileIO(path, "r"))
    except OSError as exc:
        raise ImageSourceError(f"cannot open: {exc.strerror or exc}", source=label) from exc


@contextmanager
def _opened(
    source: object, label: str, limit: int | None, allowed: tuple[str, ...] = READ_FORMATS
) -> Iterator[tuple[Image.Image, _WatchedBytes | _WatchedFile]]:
    """Open ``source`` lazily (header only) with the decoders of the ``allowed`` formats,
    check its size, and close it afterwards."""
    reader = _reader(source, label)
    try:
        with _pil_errors(label, "reading the header", reader, allowed), _no_bomb_warning():
            im = _open(reader, label, allowed)
        with im:
            _check_size(im.width, im.height, label, limit)
            yield im, reader
    finally:
        reader.close()


def _open(
    reader: _WatchedBytes | _WatchedFile, label: str, allowed: tuple[str, ...]
) -> Image.Image:
    head = reader.read(32)
    reader.seek(0)
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        plugin = _heif_plugin()
        if "HEIF" not in allowed or plugin is None:
            raise _unidentified(reader, label, allowed)
        return plugin(reader)  # type: ignore[no-any-return]
    return Image.open(reader, formats=_pil_formats(allowed))


def _pil_formats(allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The names among ``allowed`` that this Pillow has a decoder for (HEIF is pillow-heif's;
    AVIF needs Pillow >= 11.2)."""
    Image.init()
    return tuple(f for f in allowed if f in Image.OPEN)


@contextmanager
def _pil_errors(
    label: str,
    stage: str,
    reader: _WatchedBytes | _WatchedFile | None = None,
    allowed: tuple[str, ...] = READ_FORMATS,
) -> Iterator[None]:
    """Map what Pillow raises to typed errors."""
    try:
        yield
    except TracemarkError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"{exc} (over Pillow's hard limit of 2 * PIL.Image.MAX_IMAGE_PIXELS)", source=label
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(reader, label, allowed) from exc
    except MemoryError as exc:
        raise ImageTooLargeError(f"not enough memory while {stage}", source=label) from exc
    except _DECODE_ERRORS as exc:
        text = str(exc) or type(exc).__name__
        lowered = text.lower()
        if any(s in lowered for s in ("unsupported", "not supported", "not available")):
            raise UnsupportedImageError(f"{stage}: {text}", source=label) from exc
        raise CorruptImageError(f"{stage}: {text}", source=label) from exc


@contextmanager
def _no_bomb_warning() -> Iterator[None]:
    """Silence Pillow's DecompressionBombWarning here only: our own limit decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _unidentified(
    reader: _WatchedBytes | _WatchedFile | None, label: str, allowed: tuple[str, ...]
) -> TracemarkError:
    """The error for data no allowed decoder accepts: UnsupportedImageError when it is an
    image of a format not allowed (or not readable here), CorruptImageError otherwise."""
    head = b""
    if reader is not None and not reader.closed:
        reader.seek(0)
        head = reader.read(32)
    known = _readable_format(reader) if reader is not None and not reader.closed else None
    if known is not None and known not in allowed:
        hint = "formats='all'" if known in OPTIONAL_FORMATS else f"formats including {known!r}"
        return UnsupportedImageError(
            f"{known} images are read only with {hint}; allowed: {', '.join(allowed)}",
            source=label,
        )
    foreign = _sniff(head)
    readable = _SNIFFED_FORMAT.get(foreign or "")
    if readable is not None and readable in _pil_formats(allowed) + (
        ("HEIF",) if "HEIF" in allowed and _heif_plugin() is not None else ()
    ):
        return CorruptImageError(f"{readable} data that its decoder cannot read", source=label)
    if readable in OPTIONAL_FORMATS and readable not in allowed:
        return UnsupportedImageError(
            f"{readable} images are read only with formats='all'; allowed: {', '.join(allowed)}",
            source=label,
        )
    if foreign in ("HEIC", "HEIF") and _heif_plugin() is None:
        return UnsupportedImageError(
            f"{foreign} images need the heif extra: pip install 'tracemark[heif]'", source=label
        )
    if foreign == "AVIF" and "AVIF" not in Image.OPEN:
        return UnsupportedImageError(
            "AVIF images need Pillow >= 11.2 built with libavif", source=label
        )
    if foreign is not None:
        return UnsupportedImageError(
            f"{foreign} images are not supported; allowed: {', '.join(allowed)}",
            source=label,
        )
    return CorruptImageError("not a recognised image", source=label)


def _readable_format(reader: _WatchedBytes | _WatchedFile) -> str | None:
    """The format, among every one tracemark can read, whose decoder opens the header."""
    reader.seek(0)
    head = reader.read(32)
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    reader.seek(0)
    try:
        with _no_bomb_warning(), \
                Image.open(reader, formats=_pil_formats((*READ_FORMATS, *OPTIONAL_FORMATS))) as im:
            return _REPORTED_FORMAT.get(im.format or "", im.format)
    except Exception:  # any decoder's failure on the header means "not that format"
        return None


def resolve_formats(formats: ImageFormats = "default") -> tuple[str, ...]:
    """The format names (Pillow's, upper case) that ``formats`` allows: ``"default"`` is
    :data:`READ_FORMATS`, ``"all"`` adds :data:`OPTIONAL_FORMATS`, an iterable of names
    (any case; ``"jpg"``, ``"tif"``, ``"jp2"``, ``"heic"``, ``"netpbm"`` are aliases) is
    taken as it is. Raises :class:`~tracemark.errors.ConfigError` for anything else, an
    unknown name or an empty list. The value every ``formats`` argument goes through."""
    return _check_formats(formats)


def _check_formats(formats: object) -> tuple[str, ...]:
    """``formats`` of the public functions as a tuple of Pillow format names."""
    if formats == "default":
        return READ_FORMATS
    if formats == "all":
        return (*READ_FORMATS, *OPTIONAL_FORMATS)
    if isinstance(formats, str) or not isinstance(formats, Iterable):
        raise ConfigError(
            f"formats must be 'default', 'all' or a list of format names; got {formats!r}"
        )
    known = (*READ_FORMATS, *OPTIONAL_FORMATS)
    out: list[str] = []
    for item in formats:
        name = _FORMAT_ALIASES.get(str(item).upper(), str(item).upper())
        if not isinstance(item, str) or name not in known:
            raise ConfigError(f"unknown image format {item!r}; known: {', '.join(known)}")
        out.append(name)
    if not out:
        raise ConfigError("formats is empty")
    return tuple(dict.fromkeys(out))


def _sniff(head: bytes) -> str | None:
    for offset, magic, fmt in _FOREIGN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    return None


# --- checks -------------------------------------------------------------------


def _check_max_pixels(max_pixels: object) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
        raise ConfigError(f"max_pixels must be a positive int or None; got {max_pixels!r}")
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be >= 1; got {max_pixels}")
    return int(max_pixels)


def _check_background(background: object) -> tuple[int, int, int]:
    try:
        values = tuple(background)  # type: ignore[call-overload]
    except TypeError:
        values = ()
    if (
        len(values) != 3
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in values)
        or any(not 0 <= int(v) <= 255 for v in values)
    ):
        raise ConfigError(f"background must be three ints in 0..255; got {background!r}")
    return int(values[0]), int(values[1]), int(values[2])


def _check_size(width: int, height: int, label: str, limit: int | None) -> None:
    if width < 1 or height < 1:
        raise EmptyImageError(f"image has no pixels: {width}x{height}", source=label)
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels, over max_pixels="
            f"{limit:,}; refused before decoding",
            source=label,
        )


def _check_array(a: np.ndarray, label: str, limit: int | None) -> None:
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise UnsupportedImageError(
            f"array shape {a.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4)",
            source=label,
        )
    kind, size = a.dtype.kind, a.dtype.itemsize
    if not (kind == "b" or kind == "f" or (kind == "u" and size in (1, 2))):
        raise UnsupportedImageError(
            f"array dtype {a.dtype} is not supported; expected uint8, uint16, bool or float "
            "in [0, 1]",
            source=label,
        )
    _check_size(int(a.shape[1]), int(a.shape[0]), label, limit)


# --- conversion ---------------------------------------------------------------


def _array_to_rgb(
    a: np.ndarray, label: str, limit: int | None, bg: tuple[int, int, int]
) -> np.ndarray:
    _check_array(a, label, limit)
    if a.ndim == 2:
        a = a[:, :, None]
    u8 = _to_uint8(a)
    if u8.shape[2] == 4:
        return _flatten_alpha(u8, bg)
    if u8.shape[2] == 1:
        return _grey_to_rgb(u8[:, :, 0])
    return np.array(u8, dtype=np.uint8, order="C", copy=True)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Channel values of a uint8/uint16/bool/float array as uint8 (policy in the module doc)."""
    kind, size = a.dtype.kind, a.dtype.itemsize
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if kind == "u" and size == 2:
        return _scale16(a)
    if kind == "f":
        return _scale_unit_float(a)
    return a  # uint8


def _scale16(a: np.ndarray) -> np.ndarray:
    """0..65535 onto 0..255, rounding to nearest (``round(v / 257)``; no ties occur)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _scale_unit_float(a: np.ndarray) -> np.ndarray:
    work = a.astype(np.float64 if a.dtype.itemsize > 4 else np.float32)
    work = np.clip(np.nan_to_num(work, nan=0.0), 0.0, 1.0)
    return np.rint(work * 255.0).astype(np.uint8)


def _grey_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))


def _flatten_alpha(rgba: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    """Composite uint8 RGBA over an opaque background, rounding to nearest."""
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    rgb = rgba[:, :, :3].astype(np.uint16)
    back = np.asarray(bg, dtype=np.uint16)
    # At most 255 * 255 + 127 = 65152: fits uint16. 255 is odd, so no ties.
    out = (rgb * alpha + back * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a corrupt EXIF block leaves the image as it is."""
    try:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(im)
    except (*_DECODE_ERRORS, AttributeError):
        pass
    return im


def _convert_rgb(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _convert_alpha(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    if im.mode == "La":  # Pillow converts La only to LA
        im = im.convert("LA")
    return _flatten_alpha(np.asarray(im.convert("RGBA"), dtype=np.uint8), bg)


def _convert_int16(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    return _grey_to_rgb(_scale16(np.asarray(im)))


def _convert_int32(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    return _grey_to_rgb(_scale16(np.clip(np.asarray(im), 0, 65535)))


def _convert_float(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    return _grey_to_rgb(_scale_unit_float(np.asarray(im)))


_Converter: TypeAlias = Callable[[Image.Image, tuple[int, int, int]], np.ndarray]

_CONVERTERS: Final[dict[str, _Converter]] = {
    **dict.fromkeys(("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"), _convert_rgb),
    **dict.fromkeys(_ALPHA_MODES, _convert_alpha),
    **dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), _convert_int16),
    "I": _convert_int32,
    "F": _convert_float,
}


CONVERT_STRIP_PIXELS: Final[int] = 1 << 22
"""Images with more pixels than this (4 Mpx) are converted to RGB a strip of rows at a time
(each conversion is per pixel, so the result is the same): the conversion then needs the
decoded image, the ``(H, W, 3)`` result and one strip, never a full-size copy of the decoded
image in another mode or dtype."""


def _convert_by_strips(im: Image.Image, converter: _Converter,
                       bg: tuple[int, int, int]) -> np.ndarray:
    """``converter(im, bg)``, filled into the result ``CONVERT_STRIP_PIXELS`` at a time."""
    h, w = im.height, im.width
    if h * w <= CONVERT_STRIP_PIXELS:
        return converter(im, bg)
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, CONVERT_STRIP_PIXELS // (8 * w))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        out[r0:r1] = converter(im.crop((0, r0, w, r1)), bg)
    return out


def _to_rgb(im: Image.Image, bg: tuple[int, int, int], label: str) -> np.ndarray:
    converter = _CONVERTERS.get(im.mode)
    if converter is None:
        raise UnsupportedImageError(f"image mode {im.mode!r} is not supported", source=label)
    if im.mode in _TRANSPARENCY_MODES and "transparency" in im.info:
        converter = _convert_alpha
    out = _convert_by_strips(im, converter, bg)
    if out.shape != (im.height, im.width, 3) or out.dtype != np.uint8:  # pragma: no cover
        raise UnsupportedImageError(
            f"conversion of mode {im.mode!r} gave shape {out.shape}", source=label
        )
    return np.ascontiguousarray(out)


def _info(im: Image.Image) -> ImageInfo:
    fmt = _REPORTED_FORMAT.get(im.format or "", im.format)
    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    with _no_bomb_warning():  # counting frames may check each frame's size
        n_frames = int(getattr(im, "n_frames", 1))
    exif = im.info.get("exif")
    orientation = 1
    if isinstance(exif, bytes) and exif:
        parsed = Image.Exif()
        try:
            parsed.load(exif)
            value = parsed.get(_ORIENTATION_TAG, 1)
            orientation = value if isinstance(value, int) and 1 <= value <= 8 else 1
        except (*_DECODE_ERRORS, AttributeError):
            orientation = 1
    return ImageInfo(
        fmt, im.mode, im.width, im.height, n_frames, has_alpha, bool(exif), orientation
    )


def _metadata(im: Image.Image) -> dict[str, Any]:
    exif = im.info.get("exif")
    if isinstance(exif, bytes) and exif:
        exif = exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif
    else:
        exif = None
    icc = im.info.get("icc_profile") or None
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    fmt = _REPORTED_FORMAT.get(im.format or "", im.format)
    return {"format": fmt, "exif": exif, "icc_profile": icc, "xmp": xmp}


# --- writing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Writer:
    pil_format: str
    quality: bool
    exif: bool
    icc: bool
    default_quality: int | None = None
    """The quality used when none is given (None: the encoder's own default)."""


_WRITERS: Final[dict[str, _Writer]] = {
    "JPEG": _Writer("JPEG", quality=True, exif=True, icc=True),
    "PNG": _Writer("PNG", quality=False, exif=True, icc=True),
    "WEBP": _Writer("WEBP", quality=True, exif=True, icc=True),
    "TIFF": _Writer("TIFF", quality=False, exif=False, icc=True),
    "BMP": _Writer("BMP", quality=False, exif=False, icc=False),
    "GIF": _Writer("GIF", quality=False, exif=False, icc=False),
    "AVIF": _Writer("AVIF", quality=True, exif=True, icc=True, default_quality=HEIF_AVIF_QUALITY),
    "HEIF": _Writer("HEIF", quality=True, exif=True, icc=True, default_quality=HEIF_AVIF_QUALITY),
}
_FORMAT_ALIASES: Final = {"JPG": "JPEG", "TIF": "TIFF", "JP2": "JPEG2000", "HEIC": "HEIF",
                           "NETPBM": "PPM"}
def _writer(format: object) -> _Writer:
    if not isinstance(format, str):
        raise UnsupportedImageError(f"format must be a string; got {format!r}")
    key = _FORMAT_ALIASES.get(format.upper(), format.upper())
    if key not in _WRITERS:
        raise UnsupportedImageError(
            f"cannot write format {format!r}; supported: {', '.join(WRITE_FORMATS)}"
        )
    return _WRITERS[key]


def _format_from_suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    fmt = format_of_suffix(suffix)
    if fmt is None:
        raise UnsupportedImageError(
            f"cannot tell the format from suffix {suffix or '(none)'!r}; pass format= "
            f"(one of {', '.join(SUPPORTED_FORMATS)})",
            source=path,
        )
    return fmt


def _save_options(
    writer: _Writer,
    quality: object,
    metadata: object,
    exif: object,
    icc_profile: object,
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    fmt = writer.pil_format
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, int | np.integer):
            raise ConfigError(f"quality must be an int in 1..100; got {quality!r}")
        if not 1 <= quality <= 100:
            raise ConfigError(f"quality must be in 1..100; got {quality}")
        if not writer.quality:
            raise ConfigError(f"quality applies to JPEG, WEBP, AVIF and HEIF, not {fmt} "
                              "(lossless or palette)")
        options["quality"] = int(quality)
    if metadata not in ("strip", "keep"):
        raise ConfigError(f"metadata must be 'strip' or 'keep'; got {metadata!r}")
    for key, value, allowed in (
        ("exif", exif, writer.exif),
        ("icc_profile", icc_profile, writer.icc),
    ):
        if value is None:
            continue
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ConfigError(f"{key} must be bytes; got {type(value).__name__}")
        if metadata == "strip":
            raise ConfigError(
                f"{key} given with metadata='strip'; pass metadata='keep' to write it"
            )
        if not allowed:
            raise ConfigError(f"{fmt} files cannot carry {key} here")
        options[key] = bytes(value)
    if "exif" in options:
        options["exif"] = _checked_exif(options["exif"])
    return options


def _checked_exif(exif: bytes) -> bytes:
    """Prefix ``Exif\\0\\0`` if missing and check that the block parses."""
    if not exif.startswith(_EXIF_HEADER):
        exif = _EXIF_HEADER + exif
    try:
        Image.Exif().load(exif)
    except _DECODE_ERRORS as exc:
        raise ConfigError(f"exif bytes do not parse as an EXIF block: {exc}") from exc
    return exif


# --- the image vocabulary: suffixes, media types and magic numbers, derived from the decoders


@functools.cache
def _suffix_table(allowed: tuple[str, ...] = READ_FORMATS) -> dict[str, str]:
    """Suffix (lower case, with the dot) -> tracemark format name, from the extensions that
    Pillow registers for the plugins :func:`load_image` runs for the ``allowed`` formats
    (MPO files are JPEG), plus HEIF's when pillow-heif is installed."""
    Image.init()
    accepted = set(allowed) | {k for k, v in _REPORTED_FORMAT.items() if v in allowed}
    table = {ext.lower(): _REPORTED_FORMAT.get(fmt, fmt)
             for ext, fmt in Image.registered_extensions().items() if fmt in accepted}
    if "HEIF" in allowed and _heif_plugin() is not None:
        table.update(dict.fromkeys(_HEIF_SUFFIXES, "HEIF"))
    return table


def written_suffixes() -> dict[str, str]:
    """Suffix (lower case, with the dot) -> format of :data:`WRITE_FORMATS` (``".jpg":
    "JPEG"``, ``".avif": "AVIF"``, ``".heic": "HEIF"``...): what :func:`save_image` writes by
    suffix. HEIF's suffixes are listed whether or not the ``heif`` extra is installed (writing
    one without it raises :class:`~tracemark.errors.MissingExtraError` naming the extra);
    AVIF's only when this Pillow writes AVIF."""
    table = {k: v for k, v in _suffix_table().items() if v in _WRITERS}
    table.update(dict.fromkeys(_HEIF_SUFFIXES, "HEIF"))
    if "AVIF" not in Image.SAVE:
        table = {k: v for k, v in table.items() if v != "AVIF"}
    return table


def image_suffixes(formats: ImageFormats = "default") -> frozenset[str]:
    """Every file suffix (lower case, with the dot: ``".jpg"``, ``".jfif"``, ``".mpo"``...)
    of a format :func:`load_image` decodes with the same ``formats`` (default
    :data:`READ_FORMATS`; ``"all"`` adds ``".tga"``, ``".ico"``, ``".qoi"``...). Derived
    from Pillow's registered extensions of the accepted plugins, so it never disagrees
    with the loader. Raises :class:`~tracemark.errors.ConfigError` for a bad ``formats``."""
    return frozenset(_suffix_table(_check_formats(formats)))


def format_of_suffix(suffix: str, formats: ImageFormats = "default") -> str | None:
    """The format (one of those ``formats`` allows, default :data:`READ_FORMATS`) of a file
    suffix or path (any case, ``".JPG"`` or ``"photo.jpg"``); None when the loader does not
    read it with those ``formats``."""
    ext = os.path.splitext(suffix)[1] if suffix.count(".") != 1 or not suffix.startswith(".") \
        else suffix
    return _suffix_table(_check_formats(formats)).get(ext.lower())


def media_type(format: str) -> str:
    """The IANA media type of a format name of :data:`WRITE_FORMATS` (``"JPEG"``, ``"jpg"``,
    ``"TIF"``, ``"AVIF"``...) or a suffix (``".webp"``): ``"image/jpeg"``, ``"image/png"``...
    HEIF is ``"image/heif"``, except ``"HEIC"`` and ``".heic"``: ``"image/heic"`` (what
    :func:`encode_image` writes is HEVC-coded, brand ``heic``). Raises
    :class:`~tracemark.errors.UnsupportedImageError` for a format tracemark does not write."""
    if not isinstance(format, str):
        raise UnsupportedImageError(f"format must be a string; got {format!r}")
    if format.lower() in (".heic", "heic"):
        return "image/heic"
    fmt = written_suffixes().get(format.lower()) if format.startswith(".") else \
        _FORMAT_ALIASES.get(format.upper(), format.upper())
    if fmt not in WRITE_FORMATS:
        raise UnsupportedImageError(
            f"not a format tracemark writes: {format!r} (one of {', '.join(WRITE_FORMATS)})")
    if fmt in _FOREIGN_MEDIA_TYPES:
        return _FOREIGN_MEDIA_TYPES[fmt]
    Image.init()
    return Image.MIME[fmt]


def sniff_format(head: bytes, formats: ImageFormats = "default") -> str | None:
    """The format (one of those ``formats`` allows, default :data:`READ_FORMATS`) whose
    decoder accepts the first bytes ``head`` (16 or more bytes are enough), or None. Uses
    the accept test of each Pillow plugin that :func:`load_image` runs with the same
    ``formats``; it reads no further than ``head``. Formats without a magic number (TGA,
    IM) are never sniffed: only their suffix tells them."""
    allowed = _check_formats(formats)
    Image.init()
    head = bytes(head[:64])
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF" if "HEIF" in allowed and _heif_plugin() is not None else None
    opened = (*allowed, *(k for k, v in _REPORTED_FORMAT.items() if v in allowed))
    for fmt in opened:
        entry = Image.OPEN.get(fmt)
        if entry is None or entry[1] is None:
            continue
        try:
            ok = entry[1](head)
        except Exception:  # an accept test that trips on short input is a "no"
            ok = False
        if ok:
            return _REPORTED_FORMAT.get(fmt, fmt)
    return None


_FOREIGN_MEDIA_TYPES: Final = {
    "HEIC": "image/heic",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
    "JPEG 2000": "image/jp2",
    "JPEG2000": "image/jp2",
    "JPEG XL": "image/jxl",
    "PDF": "application/pdf",
    "SVG": "image/svg+xml",
}


def sniff_media_type(head: bytes) -> str | None:
    """The IANA media type the first bytes ``head`` announce: a format the loader reads
    (:func:`sniff_format`), or one it recognises but does not decode (HEIC, HEIF, AVIF,
    JPEG 2000, JPEG XL, PDF, SVG: containers other tools, such as c2pa, may still read).
    None when unknown."""
    fmt = sniff_format(head)
    if fmt in SUPPORTED_FORMATS:
        return media_type(fmt)
    if fmt is not None:  # read only: PSD, JPEG 2000, AVIF, HEIF, Netpbm
        return _FOREIGN_MEDIA_TYPES.get(fmt) or Image.MIME.get(fmt)
    foreign = _sniff(bytes(head[:64]))
    return _FOREIGN_MEDIA_TYPES.get(foreign) if foreign is not None else None


# --- arrays read without a copy, and the alpha plane kept beside the colour ---------------
#
# The watermark methods and the fingerprints work on RGB uint8 arrays; transparency is a
# file-level concern, handled here: :func:`load_image_with_alpha` returns the colour as
# stored and the alpha plane; a caller marks the composite over white (what
# :func:`load_image` gives, and so what every reader of the mark sees), then
# :func:`colour_under_alpha` turns the marked composite back into stored colour, and
# :func:`encode_image_with_alpha` / :func:`save_image_with_alpha` write colour and alpha.

ALPHA_FORMATS: Final[tuple[str, ...]] = ("PNG", "WEBP", "TIFF")
"""Formats written with an alpha channel (:func:`encode_image_with_alpha`). JPEG and BMP
have none (GIF only a one-bit colour key): there the composite over white is written."""


def rgb_view(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """``source`` as an RGB ``uint8`` array ``(H, W, 3)`` for code that only reads it: a
    C-contiguous RGB ``uint8`` array with pixels is returned as it is (no copy, no pixel
    limit: it is already in memory), anything else goes through :func:`load_image`.
    Saves a full-size copy per call on large images; never write into the result."""
    if (
        isinstance(source, np.ndarray)
        and source.dtype == np.uint8
        and source.ndim == 3
        and source.shape[2] == 3
        and source.shape[0] >= 1
        and source.shape[1] >= 1
        and source.flags.c_contiguous
    ):
        return source
    return load_image(
        source, max_pixels=None if isinstance(source, np.ndarray) else max_pixels, name=name
    )


def load_image_with_alpha(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    formats: ImageFormats = "default",
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(colour, alpha)`` of an image: ``colour`` ``(H, W, 3)`` uint8 as stored
    (premultiplied modes un-premultiplied; not flattened), ``alpha`` ``(H, W)`` uint8, or
    None when the image has no alpha channel and no transparency (then ``colour`` equals
    :func:`load_image`'s result). Palette and colour-key transparency (``P``, ``L``, ``RGB``
    with ``transparency``) become an alpha plane; ``LA``/``La``/``PA`` grey is replicated.
    Sources, limits, formats and errors as :func:`load_image` (an ``(H, W, 4)`` array is split).
    """
    if isinstance(source, np.ndarray):
        limit = _check_max_pixels(max_pixels)
        label = _label(source, name)
        _check_array(source, label, limit)
        if source.ndim == 3 and source.shape[2] == 4:
            u8 = _to_uint8(source)
            return np.ascontiguousarray(u8[:, :, :3]), np.ascontiguousarray(u8[:, :, 3])
        return load_image(source, max_pixels=max_pixels, name=name), None
    limit = _check_max_pixels(max_pixels)
    label = _label(source, name)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, label, limit)
        if not _info(source).has_alpha:
            return load_image(source, max_pixels=max_pixels, name=name), None
        with _pil_errors(label, "decoding"):
            source.load()
            return _split_alpha(_strips_of(_oriented(source), _rgba, 4))
    allowed = _check_formats(formats)
    # one open, one read of the source (a file object can be read only once)
    with _opened(source, label, limit, allowed) as (im, reader), _pil_errors(label, "decoding"):
        if not _info(im).has_alpha:
            return _decode_rgb(im, reader, (255, 255, 255), label), None
        im = _strict_load(im, reader, label)
        return _split_alpha(_strips_of(_oriented(im), _rgba, 4))


def _rgba(im: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    """The RGBA converter of :func:`load_image_with_alpha` (``bg`` unused: nothing is
    flattened)."""
    if im.mode == "La":  # Pillow converts La only to LA
        im = im.convert("LA")
    return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def _split_alpha(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.ascontiguousarray(rgba[:, :, 3])
    colour = np.ascontiguousarray(rgba[:, :, :3])
    return colour, alpha


def _strips_of(im: Image.Image, convert: _Converter, channels: int) -> np.ndarray:
    h, w = im.height, im.width
    out = np.empty((h, w, channels), np.uint8)
    step = max(1, CONVERT_STRIP_PIXELS // (8 * w))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        out[r0:r1] = convert(im.crop((0, r0, w, r1)), (255, 255, 255))
    return out


def composite(
    colour: np.ndarray, alpha: np.ndarray | None, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """``colour`` ``(H, W, 3)`` uint8 over an opaque ``background`` with ``alpha``
    ``(H, W)`` uint8, rounded as :func:`load_image` flattens (``colour`` itself when
    ``alpha`` is None): ``out = round((c * a + bg * (255 - a)) / 255)``."""
    if alpha is None:
        return colour
    bg = _check_background(background)
    out = np.empty_like(colour)
    step = max(1, CONVERT_STRIP_PIXELS // (8 * max(1, colour.shape[1])))
    for r0 in range(0, colour.shape[0], step):
        r1 = r0 + step
        out[r0:r1] = _flatten_alpha(
            np.concatenate([colour[r0:r1], alpha[r0:r1, :, None]], axis=2), bg)
    return out


def colour_under_alpha(
    marked: np.ndarray,
    colour: np.ndarray,
    alpha: np.ndarray,
    background: tuple[int, int, int] = (255, 255, 255),
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The stored colour ``(H, W, 3)`` uint8 whose composite over ``background`` is
    ``marked`` (a changed copy of ``composite(colour, alpha, background)``); written into
    ``out`` when given (which may be ``marked`` itself: a strip is read before it is written).

    Where ``alpha > 0``, ``c' = round(c + (marked - flat) * 255 / a)`` clipped to 0..255
    (``flat`` the unchanged composite): ``c' * a`` then differs from ``c * a`` by exactly
    the change, so the composite over *any* background carries the same change (clipped
    where a faint pixel cannot take it). Where ``alpha == 0`` (fully transparent) the stored
    colour is kept byte for byte: the change there is invisible and is not written.
    """
    bg = _check_background(background)
    out = np.empty_like(colour) if out is None else out
    step = max(1, CONVERT_STRIP_PIXELS // (8 * max(1, colour.shape[1])))
    for r0 in range(0, colour.shape[0], step):
        r1 = r0 + step
        c, a = colour[r0:r1], alpha[r0:r1, :, None]
        flat = _flatten_alpha(np.concatenate([c, a], axis=2), bg).astype(np.float32)
        change = marked[r0:r1].astype(np.float32) - flat
        a32 = a.astype(np.float32)
        new = c.astype(np.float32) + change * 255.0 / np.maximum(a32, 1.0)
        new = np.clip(np.rint(new), 0, 255).astype(np.uint8)
        out[r0:r1] = np.where(a == 0, c, new)
    return out


def _rgba_pil(colour: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """An RGBA PIL image over one ``(H, W, 4)`` array (Pillow maps RGBA arrays without a
    copy), filled a strip at a time."""
    to_pil(colour[:1, :1])  # the checks of an RGB array
    if (colour.dtype != np.uint8 or colour.ndim != 3 or alpha.shape != colour.shape[:2]
            or alpha.dtype != np.uint8):
        raise UnsupportedImageError(
            f"alpha must be uint8 of shape {colour.shape[:2]}; got {alpha.dtype} {alpha.shape}",
            source="<array>",
        )
    rgba = np.empty((*colour.shape[:2], 4), np.uint8)
    step = max(1, CONVERT_STRIP_PIXELS // (8 * colour.shape[1]))
    for r0 in range(0, colour.shape[0], step):
        rgba[r0 : r0 + step, :, :3] = colour[r0 : r0 + step]
        rgba[r0 : r0 + step, :, 3] = alpha[r0 : r0 + step]
    return Image.fromarray(rgba)


def encode_image_with_alpha(
    colour: np.ndarray,
    alpha: np.ndarray,
    format: str = "PNG",
    *,
    quality: int | None = None,
) -> bytes:
    """Encode colour ``(H, W, 3)`` uint8 and ``alpha`` ``(H, W)`` uint8 as an RGBA file of
    one of :data:`ALPHA_FORMATS` (no metadata). WebP keeps alpha losslessly at any
    ``quality`` (its colour is lossy below 100, and WebP may change the colour of fully
    transparent pixels). Another format is a :class:`~tracemark.errors.ConfigError`."""
    writer = _writer(format)
    if writer.pil_format not in ALPHA_FORMATS:
        raise ConfigError(f"{writer.pil_format} has no alpha channel; one of "
                          f"{', '.join(ALPHA_FORMATS)} has")
    options = _save_options(writer, quality, "strip", None, None)
    if writer.pil_format == "WEBP":
        options["alpha_quality"] = 100
    pil = _rgba_pil(colour, alpha)
    return _encode_pil(pil, writer, options)


def save_image_with_alpha(
    colour: np.ndarray,
    alpha: np.ndarray,
    dest: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int | None = None,
) -> None:
    """Write colour and alpha (:func:`encode_image_with_alpha`) to the path ``dest``,
    atomically as :func:`save_image` does; the format defaults to the path's suffix."""
    path = os.fspath(dest)
    label = os.fsdecode(path)
    data = encode_image_with_alpha(colour, alpha, format or _format_from_suffix(label),
                                   quality=quality)
    if os.path.isdir(path):
        raise ImageSourceError("destination is a directory", source=label)
    _write_atomically(path, data, label)


def has_alpha_channel(format: str) -> bool:
    """Whether :func:`encode_image_with_alpha` writes ``format`` (a name or suffix)."""
    fmt = format_of_suffix(format) if format.startswith(".") else \
        _FORMAT_ALIASES.get(format.upper(), format.upper())
    return fmt in ALPHA_FORMATS
