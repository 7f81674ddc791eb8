"""Photometric attacks: brightness, contrast, colour, sharpness, hue, gamma, grey, vignette.

``brightness``, ``contrast``, ``saturation`` and ``sharpness`` are exactly PIL's
``ImageEnhance.Brightness/Contrast/Color/Sharpness`` (as W-Bench and Stable Signature use
them), so numbers compare with the papers. ``unsharp_mask`` is PIL's
``ImageFilter.UnsharpMask`` (the strong sharpening of photo editors and of platforms'
resizers). ``hue`` follows torchvision's ``adjust_hue`` on
float tensors: RGB -> HSV in float, hue shifted by ``shift`` of the circle (mod 1), back to
RGB and rounded to uint8 (torchvision truncates when converting back; rounding differs by
at most one level; torchvision's PIL path shifts a uint8 hue instead). ``color_jitter``
chains those four in a given order, as torchvision's ``ColorJitter`` on PIL images does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageEnhance, ImageFilter

from tracemark.attacks.base import Family, Image, Param, SampleContext, register_attack
from tracemark.errors import AttackParameterError

__all__ = [
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "unsharp_mask",
    "hue",
    "gamma",
    "grayscale",
    "vignette",
    "color_jitter",
]


def _factor_strength(factor: float) -> float:
    """``min(1, |log2 factor|)``; a factor of 0 (a flat image) is full strength."""
    return 1.0 if factor <= 0 else min(1.0, abs(math.log2(factor)))


def _enhance(image: Image, enhancer: Callable[[PILImage.Image], Any], factor: float) -> Image:
    return np.array(enhancer(PILImage.fromarray(image)).enhance(factor))


def _factor_param(doc: str) -> Param:
    return Param("factor", float, low=0.0, high=100.0, doc=doc)


@register_attack(
    "brightness",
    Family.PHOTOMETRIC,
    params=[_factor_param("PIL ImageEnhance.Brightness factor; 1 is the identity")],
    strength=lambda p: _factor_strength(p["factor"]),
    identity={"factor": 1.0},
)
def brightness(image: Image, *, factor: float = 1.5) -> Image:
    """Scale brightness: PIL ``ImageEnhance.Brightness`` (blend with black)."""
    return _enhance(image, ImageEnhance.Brightness, factor)


@register_attack(
    "contrast",
    Family.PHOTOMETRIC,
    params=[_factor_param("PIL ImageEnhance.Contrast factor; 1 is the identity")],
    strength=lambda p: _factor_strength(p["factor"]),
    identity={"factor": 1.0},
)
def contrast(image: Image, *, factor: float = 1.5) -> Image:
    """Scale contrast: PIL ``ImageEnhance.Contrast`` (blend with the mean grey)."""
    return _enhance(image, ImageEnhance.Contrast, factor)


@register_attack(
    "saturation",
    Family.PHOTOMETRIC,
    params=[_factor_param("PIL ImageEnhance.Color factor; 1 is the identity")],
    strength=lambda p: _factor_strength(p["factor"]),
    identity={"factor": 1.0},
)
def saturation(image: Image, *, factor: float = 1.5) -> Image:
    """Scale saturation: PIL ``ImageEnhance.Color`` (blend with the greyscale image)."""
    return _enhance(image, ImageEnhance.Color, factor)


@register_attack(
    "sharpness",
    Family.PHOTOMETRIC,
    params=[_factor_param("PIL ImageEnhance.Sharpness factor; 1 is the identity")],
    strength=lambda p: _factor_strength(p["factor"]),
    identity={"factor": 1.0},
)
def sharpness(image: Image, *, factor: float = 1.5) -> Image:
    """Sharpen (factor > 1) or soften (< 1): PIL ``ImageEnhance.Sharpness``."""
    return _enhance(image, ImageEnhance.Sharpness, factor)


@register_attack(
    "unsharp_mask",
    Family.PHOTOMETRIC,
    params=[
        Param("radius", float, low=0.0, high=50.0, doc="blur radius (PIL GaussianBlur sigma), px"),
        Param("amount", float, low=0.0, high=10.0, doc="gain on the detail (1 = 100 %)"),
        Param("threshold", int, low=0, high=255, doc="smallest difference that is sharpened"),
    ],
    strength=lambda p: 0.0 if p["radius"] == 0.0 else min(1.0, p["amount"] / 5.0),
    identity={"amount": 0.0},
)
def unsharp_mask(
    image: Image, *, radius: float = 2.0, amount: float = 1.5, threshold: int = 3
) -> Image:
    """Unsharp masking: PIL ``ImageFilter.UnsharpMask(radius, percent=round(100 * amount),
    threshold)``, i.e. ``out = in + amount * (in - blur(in, radius))`` where the difference
    is at least ``threshold`` levels, clipped to 0..255. ``amount = 0`` or ``radius = 0``
    returns the input unchanged."""
    if amount == 0.0 or radius == 0.0:
        return image.copy()
    f = ImageFilter.UnsharpMask(radius=radius, percent=round(100 * amount), threshold=threshold)
    return np.array(PILImage.fromarray(image).filter(f))


@register_attack(
    "hue",
    Family.PHOTOMETRIC,
    params=[Param("shift", float, low=-0.5, high=0.5, doc="hue shift as a fraction of the circle")],
    strength=lambda p: abs(p["shift"]) * 2.0,
    identity={"shift": 0.0},
)
def hue(image: Image, *, shift: float = 0.1) -> Image:
    """Rotate the hue by ``shift`` of the circle in float HSV (torchvision ``adjust_hue``)."""
    if shift == 0.0:
        return image.copy()
    hsv = cv2.cvtColor(image.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2HSV)
    h = hsv[..., 0]  # degrees in [0, 360)
    h += np.float32(shift * 360.0)
    np.mod(h, np.float32(360.0), out=h)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb *= np.float32(255.0)
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _gamma_lut(gamma_value: float) -> np.ndarray:
    lut = np.rint(255.0 * (np.arange(256) / 255.0) ** gamma_value)
    out = np.clip(lut, 0, 255).astype(np.uint8)
    out.flags.writeable = False
    return out


@register_attack(
    "gamma",
    Family.PHOTOMETRIC,
    params=[Param("gamma", float, low=0.05, high=20.0, doc="exponent on [0, 1] intensities")],
    strength=lambda p: min(1.0, abs(math.log2(p["gamma"]))),
    identity={"gamma": 1.0},
)
def gamma(image: Image, *, gamma: float = 2.0) -> Image:
    """Gamma curve ``out = 255 * (in / 255) ** gamma``, rounded, through a lookup table."""
    return cv2.LUT(image, _gamma_lut(float(gamma)))


@register_attack(
    "grayscale",
    Family.PHOTOMETRIC,
    params=[],
    strength=lambda p: 1.0,
)
def grayscale(image: Image) -> Image:
    """PIL ``convert("L")`` (ITU-R 601-2 luma), replicated to three channels."""
    luma = np.asarray(PILImage.fromarray(image).convert("L"))
    return cv2.cvtColor(luma, cv2.COLOR_GRAY2RGB)


def _radius2(height: int, width: int) -> np.ndarray:
    """Squared normalized distance from the centre: 0 at the centre, 1 at the corners."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / np.float32(height / 2.0) - 1.0
    xs = (np.arange(width, dtype=np.float32) + 0.5) / np.float32(width / 2.0) - 1.0
    return (ys[:, None] ** 2 + xs[None, :] ** 2) * np.float32(0.5)


@register_attack(
    "vignette",
    Family.PHOTOMETRIC,
    params=[Param("strength", float, low=0.0, high=1.0, doc="darkening at the corners")],
    strength=lambda p: p["strength"],
    identity={"strength": 0.0},
)
def vignette(image: Image, *, strength: float = 0.5) -> Image:
    """Radial darkening: pixels scale by ``1 - strength * r**2`` (r = 1 at the corners).

    ``r`` is the elliptical distance from the centre normalized per axis, so the
    fall-off follows the image's aspect and the corners reach ``1 - strength``.
    """
    if strength == 0.0:
        return image.copy()
    gain = np.float32(1.0) - np.float32(strength) * _radius2(image.shape[0], image.shape[1])
    out = image.astype(np.float32) * gain[..., None]
    np.rint(out, out=out)
    return out.astype(np.uint8)


def _draw_order(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> list[int]:
    return [int(i) for i in rng.permutation(4)]


_JITTER_STEPS: tuple[tuple[str, Callable[[Image, float], Image], float], ...] = (
    ("brightness", lambda im, v: brightness(im, factor=v), 1.0),
    ("contrast", lambda im, v: contrast(im, factor=v), 1.0),
    ("saturation", lambda im, v: saturation(im, factor=v), 1.0),
    ("hue", lambda im, v: hue(im, shift=v), 0.0),
)


def _check_order(order: Sequence[Any]) -> list[int]:
    if sorted(order) != [0, 1, 2, 3] or any(isinstance(i, bool) for i in order):
        raise AttackParameterError(
            f"color_jitter.order must be a permutation of [0, 1, 2, 3]; got {list(order)!r}"
        )
    return [int(i) for i in order]


def _jitter_strength(p: Mapping[str, Any]) -> float:
    return max(
        _factor_strength(p["brightness"]),
        _factor_strength(p["contrast"]),
        _factor_strength(p["saturation"]),
        abs(p["hue"]) * 2.0,
    )


@register_attack(
    "color_jitter",
    Family.PHOTOMETRIC,
    params=[
        Param("brightness", float, low=0.0, high=100.0, doc="ImageEnhance.Brightness factor"),
        Param("contrast", float, low=0.0, high=100.0, doc="ImageEnhance.Contrast factor"),
        Param("saturation", float, low=0.0, high=100.0, doc="ImageEnhance.Color factor"),
        Param("hue", float, low=-0.5, high=0.5, doc="hue shift, fraction of the circle"),
        Param(
            "order",
            list,
            random=True,
            draw=_draw_order,
            doc="permutation of [0,1,2,3]: brightness, contrast, saturation, hue",
        ),
    ],
    strength=_jitter_strength,
    identity={"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0},
)
def color_jitter(
    image: Image,
    *,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    order: Sequence[int] = (0, 1, 2, 3),
) -> Image:
    """torchvision ``ColorJitter`` with drawn factors: the four adjustments in ``order``.

    A suite gives torchvision-like ranges as random specifications, e.g. ColorJitter
    ``brightness=0.8`` is ``brightness: {uniform: [0.2, 1.8]}``. Neutral members are skipped.
    """
    values = (brightness, contrast, saturation, hue)
    out = image
    for i in _check_order(order):
        _, fn, neutral = _JITTER_STEPS[i]
        if values[i] != neutral:
            out = fn(out, values[i])
    return out.copy() if out is image else out
