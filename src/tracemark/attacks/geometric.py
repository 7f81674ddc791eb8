"""Geometric attacks: resizing, crops, rotation, flips, a perspective warp and padding.

Each attack is a pure function on RGB ``uint8`` arrays ``(H, W, 3)``; anything random (a
crop position, the corners of a warp) is an ordinary parameter, drawn by
:meth:`~tracemark.attacks.base.AttackSpec.draw`. Pixel work is done with OpenCV
(bilinear unless stated), pixel centres at integer coordinates, so the image spans
``[-0.5, W - 0.5]``. The catalogue with parameters and strengths is ``docs/attacks.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from tracemark.attacks.base import Family, Image, Param, SampleContext, register_attack
from tracemark.errors import AttackParameterError

__all__ = [
    "resize",
    "thumbnail",
    "center_crop",
    "random_crop",
    "resized_crop",
    "rotate",
    "hflip",
    "vflip",
    "perspective",
    "pad",
]

MIN_AREA = 1e-4
"""Smallest accepted area fraction of the crops (the catalogue's open bound ``(0, 1]``)."""

_INTERPOLATION: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST_EXACT,  # PIL's nearest; cv2.INTER_NEAREST is off by half a pixel
    "bilinear": cv2.INTER_LINEAR,  # not antialiased: use "area" to shrink with antialiasing
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}

_LOG2_10 = math.log2(10.0)


# --- helpers shared with tracemark.attacks.degradation ---------------------------


def _parse_fill(fill: Sequence[Any], attack: str) -> tuple[int, int, int]:
    """An RGB fill colour as three ints in 0..255, or an :class:`AttackParameterError`."""
    values = tuple(fill)
    if len(values) != 3 or not all(
        isinstance(v, int | np.integer | float | np.floating)
        and not isinstance(v, bool)
        and float(v) == int(v)
        and 0 <= v <= 255
        for v in values
    ):
        raise AttackParameterError(
            f"{attack}.fill must be three integers in 0..255 (R, G, B); got {list(values)!r}"
        )
    r, g, b = (int(v) for v in values)
    return r, g, b


def _kept_size(height: int, width: int, area: float, *, minimum: int = 1) -> tuple[int, int]:
    """``(h, w)`` of a rectangle keeping ``area`` of the pixels with the aspect preserved.

    Each side is ``int(side * sqrt(area))`` (Stable Signature's centre crop), at least
    ``minimum`` pixels.
    """
    if area >= 1.0:
        return height, width
    s = math.sqrt(area)
    # the tiny epsilon keeps e.g. sqrt(0.49) * 100 from flooring to 69
    h = min(height, max(minimum, int(height * s + 1e-9)))
    w = min(width, max(minimum, int(width * s + 1e-9)))
    return h, w


def _place(height: int, width: int, h: int, w: int, x: float, y: float) -> tuple[int, int]:
    """Top-left ``(top, left)`` of an ``h`` x ``w`` box at fractions ``x, y`` of the free range."""
    return int(round(y * (height - h))), int(round(x * (width - w)))


# --- resize and crops ------------------------------------------------------------


@register_attack(
    "resize",
    Family.GEOMETRIC,
    params=[
        Param("scale", float, low=0.01, high=10.0, doc="side scale factor"),
        Param("back", bool, doc="resize back to the input size afterwards"),
        Param("interpolation", str, choices=tuple(_INTERPOLATION), doc="OpenCV interpolation"),
    ],
    strength=lambda p: min(1.0, abs(math.log2(p["scale"])) / _LOG2_10),
    identity={"scale": 1.0},
)
def resize(
    image: Image, *, scale: float = 0.5, back: bool = False, interpolation: str = "bilinear"
) -> Image:
    """Resize by ``scale`` to ``round(W * scale) x round(H * scale)`` (optionally back again).

    ``bilinear`` is OpenCV's ``INTER_LINEAR``, which does not antialias when shrinking
    (like torchvision on tensors with ``antialias=False``); ``area`` is the antialiased
    choice for shrinking. ``nearest`` is ``INTER_NEAREST_EXACT`` (PIL's nearest).
    """
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image.copy()
    flag = _INTERPOLATION[interpolation]
    out = cv2.resize(image, size, interpolation=flag)
    if back:
        out = cv2.resize(out, (width, height), interpolation=flag)
    return out


def _thumbnail_strength(params: Mapping[str, Any]) -> float:
    """``log2(1024 / long_side) / 7`` clipped to [0, 1]: 0 at 1024 px, 1 at 8 px (a strength
    depends on the parameters alone, so it is taken relative to a 1024 px image)."""
    return min(1.0, max(0.0, math.log2(1024 / params["long_side"]) / 7))


@register_attack(
    "thumbnail",
    Family.GEOMETRIC,
    params=[
        Param("long_side", int, low=8, high=4096, doc="long side of the output, px"),
        Param("interpolation", str, choices=tuple(_INTERPOLATION), doc="OpenCV interpolation"),
    ],
    strength=_thumbnail_strength,
)
def thumbnail(image: Image, *, long_side: int = 128, interpolation: str = "area") -> Image:
    """Shrink so that the long side is ``long_side`` px, aspect kept (a platform's thumbnail).

    The output is ``(max(1, round(H * f)), max(1, round(W * f)), 3)`` with
    ``f = long_side / max(H, W)``; it is never enlarged (like PIL's ``Image.thumbnail``):
    an image whose long side is at most ``long_side`` is returned unchanged. ``area``
    (default) antialiases; ``bilinear`` is the naive resizer that aliases.
    """
    height, width = image.shape[:2]
    if max(height, width) <= long_side:
        return image.copy()
    f = long_side / max(height, width)
    size = (max(1, round(width * f)), max(1, round(height * f)))
    return cv2.resize(image, size, interpolation=_INTERPOLATION[interpolation])


@register_attack(
    "center_crop",
    Family.GEOMETRIC,
    params=[Param("area", float, low=MIN_AREA, high=1.0, doc="fraction of the area kept")],
    strength=lambda p: 1.0 - p["area"],
    identity={"area": 1.0},
)
def center_crop(image: Image, *, area: float = 0.5) -> Image:
    """Crop the centre, keeping ``area`` of the pixels with the aspect ratio preserved.

    Sides are ``int(side * sqrt(area))`` as in Stable Signature's ``center_crop``; the
    offset is ``round((side - kept) / 2)`` as in torchvision.
    """
    return random_crop(image, area=area, x=0.5, y=0.5)


@register_attack(
    "random_crop",
    Family.GEOMETRIC,
    params=[
        Param("area", float, low=MIN_AREA, high=1.0, doc="fraction of the area kept"),
        Param(
            "x", float, low=0.0, high=1.0, random=True, doc="left, as a fraction of the free range"
        ),
        Param(
            "y", float, low=0.0, high=1.0, random=True, doc="top, as a fraction of the free range"
        ),
    ],
    strength=lambda p: 1.0 - p["area"],
    identity={"area": 1.0},
)
def random_crop(image: Image, *, area: float = 0.5, x: float = 0.5, y: float = 0.5) -> Image:
    """Crop a box of ``area`` of the pixels (aspect preserved) at position ``x, y``.

    The box has the size of :func:`center_crop`; its top-left corner is
    ``(round(x * (W - w)), round(y * (H - h)))``, so ``x = y = 0.5`` is the centre crop.
    """
    height, width = image.shape[:2]
    h, w = _kept_size(height, width, area)
    top, left = _place(height, width, h, w, x, y)
    return image[top : top + h, left : left + w].copy()


@register_attack(
    "resized_crop",
    Family.GEOMETRIC,
    params=[
        Param("area", float, low=MIN_AREA, high=1.0, doc="fraction of the area cropped"),
        Param("ratio", float, low=0.1, high=10.0, doc="aspect of the crop relative to the image's"),
        Param(
            "x", float, low=0.0, high=1.0, random=True, doc="left, as a fraction of the free range"
        ),
        Param(
            "y", float, low=0.0, high=1.0, random=True, doc="top, as a fraction of the free range"
        ),
    ],
    strength=lambda p: 1.0 - p["area"],
    identity={"area": 1.0, "ratio": 1.0},
)
def resized_crop(
    image: Image, *, area: float = 0.75, ratio: float = 1.0, x: float = 0.5, y: float = 0.5
) -> Image:
    """Crop ``area`` of the pixels with aspect ``ratio`` and resize back to the input size.

    ``w = round(W * sqrt(area * ratio))``, ``h = round(H * sqrt(area / ratio))``, clamped to
    the image (where torchvision would retry), placed at fractions ``x, y`` of the free
    range and resized back bilinearly. ``ratio`` is the crop's width/height *relative to
    the image's*, so ``ratio = 1`` keeps the aspect and ``area = ratio = 1`` is the
    identity; on square images (where the published benchmarks run) this is exactly
    torchvision's ``RandomResizedCrop`` with ``scale = area`` and ``ratio = ratio``.
    """
    height, width = image.shape[:2]
    w = min(width, max(1, int(round(width * math.sqrt(area * ratio)))))
    h = min(height, max(1, int(round(height * math.sqrt(area / ratio)))))
    top, left = _place(height, width, h, w, x, y)
    crop = image[top : top + h, left : left + w]
    if (h, w) == (height, width):
        return crop.copy()
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)


# --- rotation and flips ------------------------------------------------------------


def _rotation_strength(params: Mapping[str, Any]) -> float:
    wrapped = (params["angle"] + 180.0) % 360.0 - 180.0
    return min(1.0, abs(wrapped) / 90.0)


def _expanded_side(extent: float) -> int:
    """Canvas side holding ``[-extent, extent]`` the way torchvision computes it (1e-4 tolerance)."""
    snapped = math.trunc(extent / 1e-4) * 1e-4
    return math.ceil(snapped) - math.floor(-snapped)


@register_attack(
    "rotate",
    Family.GEOMETRIC,
    params=[
        Param("angle", float, low=-360.0, high=360.0, doc="counter-clockwise, in degrees"),
        Param("expand", bool, doc="enlarge the canvas to hold the whole rotated image"),
        Param("fill", tuple, doc="RGB colour of the uncovered area"),
    ],
    strength=_rotation_strength,
    identity={"angle": 0.0},
)
def rotate(
    image: Image, *, angle: float = 15.0, expand: bool = False, fill: Sequence[int] = (0, 0, 0)
) -> Image:
    """Rotate counter-clockwise by ``angle`` degrees about the centre (PIL/torchvision sense).

    Multiples of 90 degrees are exact (``np.rot90``) when the canvas allows it (``expand``,
    a square image, or 180 degrees); otherwise the rotation is bilinear
    (``cv2.warpAffine``) about the centre ``((W-1)/2, (H-1)/2)``, in the same canvas unless
    ``expand``, whose size follows torchvision. Uncovered pixels get ``fill``.
    """
    color = _parse_fill(fill, "rotate")
    height, width = image.shape[:2]
    quarters = angle / 90.0
    if quarters == int(quarters):
        k = int(quarters) % 4
        if k % 2 == 0 or expand or height == width:
            return np.ascontiguousarray(np.rot90(image, k))
        cos, sin = 0.0, (1.0 if k == 1 else -1.0)
    else:
        rad = math.radians(angle)
        cos, sin = math.cos(rad), math.sin(rad)
    if expand:
        out_w = _expanded_side(abs(cos) * width / 2 + abs(sin) * height / 2)
        out_h = _expanded_side(abs(sin) * width / 2 + abs(cos) * height / 2)
    else:
        out_h, out_w = height, width
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox, oy = (out_w - 1) / 2, (out_h - 1) / 2
    matrix = np.array(
        [[cos, sin, ox - cos * cx - sin * cy], [-sin, cos, oy + sin * cx - cos * cy]],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        image,
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=color,
    )


@register_attack("hflip", Family.GEOMETRIC, strength=lambda p: 1.0)
def hflip(image: Image) -> Image:
    """Mirror left to right."""
    return np.ascontiguousarray(image[:, ::-1])


@register_attack("vflip", Family.GEOMETRIC, strength=lambda p: 1.0)
def vflip(image: Image) -> Image:
    """Mirror top to bottom."""
    return np.ascontiguousarray(image[::-1])


# --- perspective and padding ---------------------------------------------------------


def _draw_corners(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> tuple[float, ...]:
    return tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=8))


def _parse_corners(corners: Sequence[Any]) -> np.ndarray:
    values = tuple(corners)
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.array([])
    if (
        arr.shape != (8,)
        or any(isinstance(v, bool) for v in values)
        or not np.all(np.isfinite(arr))
        or np.abs(arr).max() > 1.0
    ):
        raise AttackParameterError(
            f"perspective.corners must be 8 numbers in [-1, 1] (dx, dy of the top-left, "
            f"top-right, bottom-right and bottom-left corners); got {list(values)!r}"
        )
    return arr


@register_attack(
    "perspective",
    Family.GEOMETRIC,
    params=[
        Param(
            "distortion", float, low=0.0, high=0.5, doc="largest corner move, fraction of the side"
        ),
        Param("corners", tuple, random=True, draw=_draw_corners, doc="8 corner moves in [-1, 1]"),
    ],
    strength=lambda p: p["distortion"] / 0.5,
    identity={"distortion": 0.0},
)
def perspective(
    image: Image, *, distortion: float = 0.05, corners: Sequence[float] = (0.0,) * 8
) -> Image:
    """Warp the image so that its corners move by ``corners * distortion * side``, black fill.

    ``corners`` holds ``(dx, dy)`` for the top-left, top-right, bottom-right and
    bottom-left corners in units of ``distortion * W`` (x) and ``distortion * H`` (y);
    the result keeps the input size. A degenerate target quadrilateral gives a black image.
    """
    moves = _parse_corners(corners).reshape(4, 2)
    if distortion == 0.0 or not moves.any():
        return image.copy()
    height, width = image.shape[:2]
    src = np.array(
        [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]]
    )
    dst = src + moves * distortion * np.array([width, height])
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
        return np.zeros_like(image)
    return cv2.warpPerspective(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _pad_strength(params: Mapping[str, Any]) -> float:
    added = (1 + params["left"] + params["right"]) * (1 + params["top"] + params["bottom"]) - 1
    return min(1.0, added)


@register_attack(
    "pad",
    Family.GEOMETRIC,
    params=[
        Param("left", float, low=0.0, high=2.0, doc="fraction of the width"),
        Param("top", float, low=0.0, high=2.0, doc="fraction of the height"),
        Param("right", float, low=0.0, high=2.0, doc="fraction of the width"),
        Param("bottom", float, low=0.0, high=2.0, doc="fraction of the height"),
        Param("fill", tuple, doc="RGB colour of the border"),
    ],
    strength=_pad_strength,
    identity={"left": 0.0, "top": 0.0, "right": 0.0, "bottom": 0.0},
)
def pad(
    image: Image,
    *,
    left: float = 0.0,
    top: float = 0.0,
    right: float = 0.0,
    bottom: float = 0.0,
    fill: Sequence[int] = (0, 0, 0),
) -> Image:
    """Add borders of ``fill``: ``left``/``right`` as fractions of W, ``top``/``bottom`` of H.

    Each border is ``round(fraction * side)`` pixels.
    """
    color = _parse_fill(fill, "pad")
    height, width = image.shape[:2]
    l, r = round(left * width), round(right * width)  # noqa: E741
    t, b = round(top * height), round(bottom * height)
    if l == r == t == b == 0:
        return image.copy()
    return cv2.copyMakeBorder(image, t, b, l, r, cv2.BORDER_CONSTANT, value=color)
