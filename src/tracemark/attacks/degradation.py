"""Degradation attacks: lossy compression, blurs, noise, pixelization, quantization, erasing.

Each attack is a pure function on RGB ``uint8`` arrays ``(H, W, 3)``. Randomness comes
only from a ``seed`` parameter (``np.random.default_rng(seed)``) or from position
parameters ``x, y``, all drawn by :meth:`~tracemark.attacks.base.AttackSpec.draw`.
Where published benchmarks use PIL (JPEG, WebP, W-Bench/WAVES's Gaussian blur, colour
quantization) PIL is used; everything else is OpenCV or numpy. The catalogue with
parameters and strengths is ``docs/attacks.md``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter

from tracemark.attacks.base import Family, Image, Param, SampleContext, register_attack
from tracemark.attacks.geometric import _kept_size, _parse_fill, _place

__all__ = [
    "jpeg",
    "webp",
    "gaussian_blur",
    "gaussian_blur_kernel",
    "median_filter",
    "gaussian_noise",
    "salt_and_pepper",
    "pixelize",
    "color_quantize",
    "random_erasing",
    "random_drop",
]


def _draw_seed(rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _seed_param() -> Param:
    return Param("seed", int, low=0, high=2**63 - 1, random=True, draw=_draw_seed, doc="noise seed")


def _position_params() -> list[Param]:
    return [
        Param(
            "x", float, low=0.0, high=1.0, random=True, doc="left, as a fraction of the free range"
        ),
        Param(
            "y", float, low=0.0, high=1.0, random=True, doc="top, as a fraction of the free range"
        ),
    ]


def _pil_roundtrip(image: Image, fmt: str, **options: Any) -> Image:
    """Encode ``image`` with PIL in memory and decode it again as RGB."""
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format=fmt, **options)
    buffer.seek(0)
    with PILImage.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))


def _ratio_size(height: int, width: int, area: float, ratio: float) -> tuple[int, int]:
    """``(h, w)`` of a rectangle of ``area`` of the pixels with ``w / h = ratio``, clamped."""
    target = area * height * width
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    return min(h, height), min(w, width)


# --- compression -------------------------------------------------------------------


@register_attack(
    "jpeg",
    Family.DEGRADATION,
    params=[Param("quality", int, low=0, high=100, doc="PIL JPEG quality")],
    strength=lambda p: (100 - p["quality"]) / 100,
)
def jpeg(image: Image, *, quality: int = 75) -> Image:
    """JPEG-compress at ``quality`` with PIL (libjpeg, 4:2:0 chroma subsampling) and decode."""
    return _pil_roundtrip(image, "JPEG", quality=quality)


@register_attack(
    "webp",
    Family.DEGRADATION,
    params=[Param("quality", int, low=0, high=100, doc="PIL WebP quality (lossy)")],
    strength=lambda p: (100 - p["quality"]) / 100,
    slow=True,
)
def webp(image: Image, *, quality: int = 75) -> Image:
    """Lossy WebP-compress at ``quality`` with PIL (libwebp defaults, method 4) and decode.

    libwebp's default effort (method 4) takes 13-19 ms on 512x512 on one core, hence
    ``slow``; a faster method would change the output for the same quality.
    """
    return _pil_roundtrip(image, "WEBP", quality=quality)


# --- filters -------------------------------------------------------------------------


@register_attack(
    "gaussian_blur",
    Family.DEGRADATION,
    params=[Param("radius", float, low=0.0, high=100.0, doc="PIL GaussianBlur radius (sigma)")],
    strength=lambda p: min(1.0, p["radius"] / 20),
    identity={"radius": 0.0},
)
def gaussian_blur(image: Image, *, radius: float = 2.0) -> Image:
    """Gaussian blur with PIL ``ImageFilter.GaussianBlur(radius)``, as W-Bench and WAVES use it.

    PIL approximates the Gaussian of standard deviation ``radius`` with extended box blurs.
    """
    if radius == 0.0:
        return image.copy()
    return np.array(PILImage.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


@register_attack(
    "gaussian_blur_kernel",
    Family.DEGRADATION,
    params=[
        Param("kernel_size", int, low=1, high=99, choices=tuple(range(1, 100, 2)), doc="odd"),
        Param("sigma", float, low=0.01, high=50.0, doc="standard deviation in pixels"),
    ],
    strength=lambda p: min(1.0, p["sigma"] / 20),
)
def gaussian_blur_kernel(image: Image, *, kernel_size: int = 5, sigma: float = 1.0) -> Image:
    """Gaussian blur with a ``kernel_size`` kernel of ``sigma`` (torchvision ``GaussianBlur``).

    ``cv2.GaussianBlur`` with reflect-101 borders, as torchvision's reflect padding;
    OpenCV's fixed-point arithmetic can differ from torchvision by one grey level.
    """
    return cv2.GaussianBlur(
        image,
        (kernel_size, kernel_size),
        sigmaX=sigma,
        sigmaY=sigma,
        borderType=cv2.BORDER_REFLECT_101,
    )


@register_attack(
    "median_filter",
    Family.DEGRADATION,
    params=[
        Param("size", int, low=1, high=31, choices=tuple(range(1, 32, 2)), doc="odd window side")
    ],
    strength=lambda p: (p["size"] - 1) / 30,
    identity={"size": 1},
    slow=True,
)
def median_filter(image: Image, *, size: int = 3) -> Image:
    """Median filter over a ``size`` x ``size`` window per channel (``cv2.medianBlur``).

    Borders replicate the edge pixels. Sizes up to 5 take well under a millisecond on
    512x512; from 7 on OpenCV switches to a histogram method taking 11-19 ms (one core),
    hence ``slow``.
    """
    if size == 1:
        return image.copy()
    return cv2.medianBlur(image, size)


# --- noise ---------------------------------------------------------------------------


@register_attack(
    "gaussian_noise",
    Family.DEGRADATION,
    params=[
        Param("std", float, low=0.0, high=1.0, doc="standard deviation in [0, 1] pixel units"),
        _seed_param(),
    ],
    strength=lambda p: min(1.0, p["std"] / 0.2),
    identity={"std": 0.0},
)
def gaussian_noise(image: Image, *, std: float = 0.05, seed: int = 0) -> Image:
    """Add Gaussian noise of ``std`` on the [0, 1] scale, clipped to [0, 1], rounded to uint8.

    ``clip(image / 255 + std * N(0, 1), 0, 1)``, computed in float32 on the 0..255 scale,
    the normal draws from ``np.random.default_rng(seed)``. Tree-Ring's original casts to
    uint8 before clipping, which wraps negative values around; we clip instead.
    """
    if std == 0.0:
        return image.copy()
    noise = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
    out = noise * np.float32(std * 255.0)  # on the 0..255 scale: the same sum, fewer passes
    out += image
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)


@register_attack(
    "salt_and_pepper",
    Family.DEGRADATION,
    params=[
        Param("amount", float, low=0.0, high=1.0, doc="fraction of pixels replaced"),
        _seed_param(),
    ],
    strength=lambda p: p["amount"],
    identity={"amount": 0.0},
)
def salt_and_pepper(image: Image, *, amount: float = 0.05, seed: int = 0) -> Image:
    """Replace ``amount`` of the pixels, half with white (salt), half with black (pepper).

    Exactly ``round(amount * H * W)`` distinct pixel positions are chosen with
    ``np.random.default_rng(seed)``; all three channels of a chosen pixel change; the
    first ``n // 2`` become 255, the rest 0.
    """
    height, width = image.shape[:2]
    count = int(round(amount * height * width))
    out = image.copy()
    if count == 0:
        return out
    flat = out.reshape(-1, 3)
    chosen = np.random.default_rng(seed).choice(height * width, size=count, replace=False)
    flat[chosen[: count // 2]] = 255
    flat[chosen[count // 2 :]] = 0
    return out


# --- resampling and quantization ------------------------------------------------------


@register_attack(
    "pixelize",
    Family.DEGRADATION,
    params=[Param("ratio", float, low=0.01, high=1.0, doc="downscale factor")],
    strength=lambda p: 1.0 - p["ratio"],
    identity={"ratio": 1.0},
)
def pixelize(image: Image, *, ratio: float = 0.25) -> Image:
    """Pixelize: shrink by ``ratio`` (area averaging), then enlarge back with nearest neighbour.

    The small image is ``max(1, round(W * ratio)) x max(1, round(H * ratio))``.
    """
    height, width = image.shape[:2]
    small = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    if small == (width, height):
        return image.copy()
    down = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(down, (width, height), interpolation=cv2.INTER_NEAREST)


@register_attack(
    "color_quantize",
    Family.DEGRADATION,
    params=[Param("colors", int, low=2, high=256, doc="palette size")],
    strength=lambda p: 1.0 - math.log2(p["colors"]) / 8,
)
def color_quantize(image: Image, *, colors: int = 16) -> Image:
    """Reduce to a palette of at most ``colors`` colours (PIL fast octree), without dithering."""
    quantized = PILImage.fromarray(image).quantize(colors, method=PILImage.Quantize.FASTOCTREE)
    return np.array(quantized.convert("RGB"))


# --- erasing ----------------------------------------------------------------------------


@register_attack(
    "random_erasing",
    Family.DEGRADATION,
    params=[
        Param("area", float, low=0.0, high=1.0, doc="fraction of the area erased"),
        Param("ratio", float, low=0.1, high=10.0, doc="width / height of the erased rectangle"),
        *_position_params(),
        Param("fill", tuple, doc="RGB colour of the erased rectangle"),
    ],
    strength=lambda p: p["area"],
    identity={"area": 0.0},
)
def random_erasing(
    image: Image,
    *,
    area: float = 0.1,
    ratio: float = 1.0,
    x: float = 0.5,
    y: float = 0.5,
    fill: Sequence[int] = (0, 0, 0),
) -> Image:
    """Fill a rectangle of ``area`` of the pixels with width/height ``ratio`` at ``x, y``.

    torchvision ``RandomErasing`` geometry (``round(sqrt(area * W * H * ratio))`` wide,
    ``round(sqrt(area * W * H / ratio))`` high, clamped to the image), except that
    ``ratio`` is width/height here (torchvision's is height/width; its default range is
    symmetric, so the distributions agree). The top-left corner is
    ``(round(x * (W - w)), round(y * (H - h)))``.
    """
    color = _parse_fill(fill, "random_erasing")
    out = image.copy()
    if area == 0.0:
        return out
    height, width = image.shape[:2]
    h, w = _ratio_size(height, width, area, ratio)
    top, left = _place(height, width, h, w, x, y)
    out[top : top + h, left : left + w] = color
    return out


@register_attack(
    "random_drop",
    Family.DEGRADATION,
    params=[
        Param("ratio", float, low=0.0, high=1.0, doc="fraction of the area kept"),
        *_position_params(),
        Param("fill", tuple, doc="RGB colour of the dropped area"),
    ],
    strength=lambda p: 1.0 - p["ratio"],
    identity={"ratio": 1.0},
)
def random_drop(
    image: Image,
    *,
    ratio: float = 0.6,
    x: float = 0.5,
    y: float = 0.5,
    fill: Sequence[int] = (0, 0, 0),
) -> Image:
    """Keep a rectangle of ``ratio`` of the area at ``x, y`` and fill everything else; size unchanged.

    Our reading of CopyrightMeter's "random drop", whose source leaves open what is dropped:
    the kept rectangle has the aspect ratio of the image and the size of
    ``random_crop(area=ratio)`` (``int(side * sqrt(ratio))``, possibly 0), its top-left at
    ``(round(x * (W - w)), round(y * (H - h)))``; unlike a crop, the image keeps its size.
    """
    color = _parse_fill(fill, "random_drop")
    height, width = image.shape[:2]
    h, w = _kept_size(height, width, ratio, minimum=0)
    if (h, w) == (height, width):
        return image.copy()
    top, left = _place(height, width, h, w, x, y)
    out = np.empty_like(image)
    out[...] = color
    out[top : top + h, left : left + w] = image[top : top + h, left : left + w]
    return out
