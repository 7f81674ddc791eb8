"""Overlay attacks: text, emoji and image overlays, insertion, screenshots and meme framing.

Conventions:

* Fonts: only Pillow's bundled font (``ImageFont.load_default(size=...)``, a scalable
  TrueType font since Pillow 10.1); nothing is read from the system or the network.
* Emoji: no emoji font ships with Pillow, so ``emoji_overlay`` draws one of
  :data:`EMOJI_NAMES` procedurally with ``ImageDraw`` (supersampled, with alpha).
* Positions: for ``text_overlay``, ``emoji_overlay`` and ``image_overlay``, ``x, y`` put the
  overlay's top-left corner at ``(x * width, y * height)`` (AugLy's convention); the part
  past the right or bottom edge is clipped. For ``insert``, ``x, y`` are fractions of the
  free range, so the inserted copy is always entirely inside the background.
* Backgrounds and overlaid images: a path (loaded as RGB), or null for a procedural texture
  (smooth random colour gradients plus random shapes) that depends only on ``seed``.
* Strengths that depend on the covered area assume a square image, because a strength is a
  function of the parameters alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from tracemark.attacks.base import Family, Image, Param, SampleContext, check_image, register_attack
from tracemark.attacks.degradation import jpeg
from tracemark.errors import AttackParameterError, CorruptImageError, ImageSourceError

__all__ = [
    "EMOJI_NAMES",
    "text_overlay",
    "emoji_overlay",
    "image_overlay",
    "insert",
    "screenshot",
    "SCREENS",
    "page_screenshot",
    "meme",
]

_SEED_MAX = 2**31 - 1

_WORDS = (
    "copy", "photo", "original", "share", "viral", "meme", "news", "today", "look", "this",
    "when", "the", "watermark", "image", "free", "best", "sale", "new", "wow", "real",
    "fake", "cat", "dog", "sun", "city", "night", "love", "life", "art", "daily", "post",
    "like", "follow", "trending", "breaking", "story", "moment", "summer", "winter", "friends",
)  # fmt: skip


# --- drawing helpers -------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font at ``px`` pixels (cached per size)."""
    return ImageFont.load_default(size=max(1, px))


@functools.lru_cache(maxsize=1)
def _measure() -> ImageDraw.ImageDraw:
    return ImageDraw.Draw(PILImage.new("L", (1, 1)))


def _text_box(text: str, px: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of ``text`` drawn at the origin."""
    left, top, right, bottom = _measure().textbbox((0, 0), text, font=_font(px))
    return int(left), int(top), int(right), int(bottom)


@functools.lru_cache(maxsize=256)
def _text_extent(text: str) -> tuple[float, float]:
    """Width and height of ``text`` in units of the font size (measured at 100 px)."""
    left, top, right, bottom = _text_box(text, 100)
    return max(0, right - left) / 100.0, max(0, bottom - top) / 100.0


def _text_mask(text: str, px: int) -> np.ndarray:
    """Coverage mask (uint8, 255 = ink) of ``text`` cropped to its bounding box."""
    left, top, right, bottom = _text_box(text, px)
    if right <= left or bottom <= top:
        return np.zeros((0, 0), np.uint8)
    mask = PILImage.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=_font(px), fill=255)
    return np.asarray(mask)


def _paste(image: Image, src: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> Image:
    """Alpha-blend ``src`` (``(h, w, 3)`` or an RGB triple) onto a copy of ``image`` at ``(x0, y0)``.

    ``alpha`` is ``(h, w)`` in [0, 1]; pixels where it is 0 are left exactly unchanged and
    whatever falls outside the image is clipped.
    """
    out = image.copy()
    height, width = image.shape[:2]
    h, w = alpha.shape
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
    if xa >= xb or ya >= yb:
        return out
    a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
    s = src[ya - y0 : yb - y0, xa - x0 : xb - x0] if src.ndim == 3 else src
    dst = out[ya:yb, xa:xb].astype(np.float32)
    dst += (np.asarray(s, np.float32) - dst) * a
    out[ya:yb, xa:xb] = np.rint(dst).astype(np.uint8)
    return out


def _resize(image: Image, width: int, height: int) -> Image:
    """Resize to ``(height, width)``: area averaging when shrinking, bilinear otherwise."""
    if (height, width) == image.shape[:2]:
        return image.copy()
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def _fit_long(height: int, width: int, long_side: float) -> tuple[int, int]:
    """``(h, w)`` with the aspect of ``(height, width)`` and the given long side."""
    f = long_side / max(height, width)
    return max(1, round(height * f)), max(1, round(width * f))


def _cover(image: Image, height: int, width: int) -> Image:
    """Resize to cover ``(height, width)`` keeping the aspect, then crop the centre."""
    f = max(height / image.shape[0], width / image.shape[1])
    h, w = max(height, round(image.shape[0] * f)), max(width, round(image.shape[1] * f))
    big = _resize(image, w, h)
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(big[top : top + height, left : left + width])


def _check_color(color: Sequence[Any], where: str) -> tuple[int, int, int]:
    ok = len(color) == 3 and all(
        isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
    )
    if not ok:
        raise AttackParameterError(
            f"{where} must be a list of three integers 0..255; got {list(color)!r}"
        )
    return int(color[0]), int(color[1]), int(color[2])


def _load_rgb(path: str) -> Image:
    """An RGB uint8 image from ``path``: ``tracemark.imageio.load_image`` when present, else PIL."""
    try:
        from tracemark.imageio import load_image
    except ImportError:
        load_image = None
    if load_image is not None:
        return check_image(load_image(path), what=path)
    try:
        with PILImage.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise ImageSourceError("no such file", source=path) from exc
    except IsADirectoryError as exc:
        raise ImageSourceError("is a directory, not an image", source=path) from exc
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise CorruptImageError(f"cannot decode image: {exc}", source=path) from exc


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    """A deterministic procedural picture: smooth colour gradients plus a few random shapes."""
    rng = np.random.default_rng(seed)
    grid = rng.uniform(0.0, 255.0, size=(3, 3, 3)).astype(np.float32)
    smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    pil = PILImage.fromarray(np.clip(np.rint(smooth), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 9))):
        kind = int(rng.integers(3))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        rx, ry = rng.uniform(0.05, 0.3, size=2)
        box = (width * (cx - rx), height * (cy - ry), width * (cx + rx), height * (cy + ry))
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            pts = [
                (width * (cx + rx * math.cos(t)), height * (cy + ry * math.sin(t)))
                for t in rng.uniform(0, 2 * math.pi, 3)
            ]
            draw.polygon(pts, fill=fill)
    return np.array(pil)


# --- random parameter draws ---------------------------------------------------------------


def _words(rng: np.random.Generator, low: int, high: int) -> str:
    n = int(rng.integers(low, high + 1))
    return " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=n))


def _draw_text(rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]) -> str:
    return _words(rng, 1, 3)


def _draw_caption(rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]) -> str:
    return _words(rng, 2, 5).upper()


def _draw_color(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> list[int]:
    return [int(c) for c in rng.integers(0, 256, size=3)]


def _draw_background(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> str | None:
    if not ctx.backgrounds:
        return None
    return str(ctx.backgrounds[int(rng.integers(len(ctx.backgrounds)))])


def _xy(default_doc: str) -> list[Param]:
    return [
        Param("x", float, low=0.0, high=1.0, random=True, doc=default_doc),
        Param("y", float, low=0.0, high=1.0, random=True, doc=default_doc),
    ]


def _seed_param(doc: str) -> Param:
    return Param("seed", int, low=0, high=_SEED_MAX, random=True, doc=doc)


def _covered(size_w: float, size_h: float, x: float, y: float) -> float:
    """Visible area fraction of a box of relative size placed at (x, y) on a square image."""
    return max(0.0, min(size_w, 1.0 - x)) * max(0.0, min(size_h, 1.0 - y))


# --- text -----------------------------------------------------------------------------


def _text_strength(p: Mapping[str, Any]) -> float:
    w, h = _text_extent(p["text"])
    return min(
        1.0, 4.0 * p["opacity"] * _covered(p["font_size"] * w, p["font_size"] * h, p["x"], p["y"])
    )


@register_attack(
    "text_overlay",
    Family.OVERLAY,
    params=[
        Param("text", str, random=True, draw=_draw_text, doc="the text; drawn: 1-3 random words"),
        *_xy("top-left corner of the text as a fraction of the width / height"),
        Param(
            "font_size",
            float,
            low=0.01,
            high=1.0,
            doc="font size as a fraction of the image height",
        ),
        Param("color", list, random=True, draw=_draw_color, doc="RGB colour, three ints 0..255"),
        Param("opacity", float, low=0.0, high=1.0),
    ],
    strength=_text_strength,
    identity={"opacity": 0.0},
)
def text_overlay(
    image: Image,
    *,
    text: str = "tracemark",
    x: float = 0.1,
    y: float = 0.1,
    font_size: float = 0.1,
    color: Sequence[int] = (255, 255, 255),
    opacity: float = 1.0,
) -> Image:
    """Draw ``text`` in Pillow's bundled font, its top-left ink corner at ``(x*W, y*H)``."""
    rgb = np.array(_check_color(color, "text_overlay.color"), np.float32)
    height, width = image.shape[:2]
    mask = _text_mask(text, max(1, round(font_size * height)))
    if mask.size == 0 or opacity == 0.0:
        return image.copy()
    alpha = mask.astype(np.float32) * np.float32(opacity / 255.0)
    return _paste(image, rgb, alpha, round(x * width), round(y * height))


# --- emoji ----------------------------------------------------------------------------

_Draw = ImageDraw.ImageDraw
_YELLOW, _YELLOW_EDGE, _FEATURE = (255, 204, 51, 255), (226, 150, 0, 255), (92, 58, 20, 255)


def _box(
    s: float, cx: float, cy: float, rx: float, ry: float | None = None
) -> tuple[float, float, float, float]:
    ry = rx if ry is None else ry
    return (s * (cx - rx), s * (cy - ry), s * (cx + rx), s * (cy + ry))


def _face(d: _Draw, s: float) -> None:
    d.ellipse(
        _box(s, 0.5, 0.5, 0.47), fill=_YELLOW, outline=_YELLOW_EDGE, width=max(1, round(s * 0.03))
    )


def _eyes(d: _Draw, s: float) -> None:
    for cx in (0.35, 0.65):
        d.ellipse(_box(s, cx, 0.38, 0.06, 0.09), fill=_FEATURE)


def _smile(d: _Draw, s: float) -> None:
    d.arc(_box(s, 0.5, 0.5, 0.3), start=25, end=155, fill=_FEATURE, width=max(1, round(s * 0.05)))


def _heart_shape(d: _Draw, s: float, cx: float, cy: float, r: float, fill: tuple[int, ...]) -> None:
    d.ellipse(_box(s, cx - 0.5 * r, cy - 0.25 * r, 0.55 * r), fill=fill)
    d.ellipse(_box(s, cx + 0.5 * r, cy - 0.25 * r, 0.55 * r), fill=fill)
    pts = [
        (cx - 1.02 * r, cy - 0.05 * r),
        (cx, cy + 1.1 * r),
        (cx + 1.02 * r, cy - 0.05 * r),
        (cx, cy - 0.3 * r),
    ]
    d.polygon([(s * px, s * py) for px, py in pts], fill=fill)


def _e_smiley(d: _Draw, s: float) -> None:
    _face(d, s)
    _eyes(d, s)
    _smile(d, s)


def _e_heart(d: _Draw, s: float) -> None:
    _heart_shape(d, s, 0.5, 0.47, 0.42, (226, 32, 64, 255))
    d.ellipse(_box(s, 0.3, 0.3, 0.07, 0.05), fill=(255, 190, 200, 255))


def _star_points(
    s: float, cx: float, cy: float, r_out: float, r_in: float, n: int = 5
) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        t = -math.pi / 2 + k * math.pi / n
        pts.append((s * (cx + r * math.cos(t)), s * (cy + r * math.sin(t))))
    return pts


def _e_star(d: _Draw, s: float) -> None:
    d.polygon(
        _star_points(s, 0.5, 0.53, 0.48, 0.2),
        fill=(255, 200, 0, 255),
        outline=(222, 140, 0, 255),
        width=max(1, round(s * 0.02)),
    )


def _e_thumbs_up(d: _Draw, s: float) -> None:
    skin, edge = (255, 200, 64, 255), (200, 130, 20, 255)
    w = max(1, round(s * 0.025))
    d.rounded_rectangle(
        _box(s, 0.42, 0.3, 0.1, 0.24), radius=s * 0.09, fill=skin, outline=edge, width=w
    )
    d.rounded_rectangle(
        (s * 0.3, s * 0.45, s * 0.82, s * 0.92), radius=s * 0.08, fill=skin, outline=edge, width=w
    )
    for y in (0.57, 0.69, 0.8):
        d.line((s * 0.56, s * y, s * 0.82, s * y), fill=edge, width=w)
    d.rectangle((s * 0.1, s * 0.47, s * 0.3, s * 0.94), fill=(58, 110, 220, 255))


def _e_sun(d: _Draw, s: float) -> None:
    for k in range(12):
        t = k * math.pi / 6
        tip = (s * (0.5 + 0.48 * math.cos(t)), s * (0.5 + 0.48 * math.sin(t)))
        left = (s * (0.5 + 0.3 * math.cos(t - 0.22)), s * (0.5 + 0.3 * math.sin(t - 0.22)))
        right = (s * (0.5 + 0.3 * math.cos(t + 0.22)), s * (0.5 + 0.3 * math.sin(t + 0.22)))
        d.polygon([left, tip, right], fill=(255, 140, 0, 255))
    d.ellipse(_box(s, 0.5, 0.5, 0.29), fill=(255, 215, 0, 255))


def _e_wink(d: _Draw, s: float) -> None:
    _face(d, s)
    d.ellipse(_box(s, 0.35, 0.38, 0.06, 0.09), fill=_FEATURE)
    d.arc(
        _box(s, 0.65, 0.42, 0.08), start=200, end=340, fill=_FEATURE, width=max(1, round(s * 0.04))
    )
    _smile(d, s)
    d.chord(_box(s, 0.56, 0.72, 0.08), start=0, end=180, fill=(230, 80, 100, 255))


def _e_heart_eyes(d: _Draw, s: float) -> None:
    _face(d, s)
    for cx in (0.33, 0.67):
        _heart_shape(d, s, cx, 0.37, 0.12, (226, 32, 64, 255))
    d.chord(_box(s, 0.5, 0.58, 0.24), start=0, end=180, fill=(110, 30, 30, 255))


def _e_sad(d: _Draw, s: float) -> None:
    _face(d, s)
    _eyes(d, s)
    d.arc(
        _box(s, 0.5, 0.85, 0.25), start=215, end=325, fill=_FEATURE, width=max(1, round(s * 0.05))
    )
    d.ellipse(_box(s, 0.3, 0.56, 0.05, 0.08), fill=(80, 160, 255, 255))


def _e_flower(d: _Draw, s: float) -> None:
    for k in range(6):
        t = k * math.pi / 3
        d.ellipse(
            _box(s, 0.5 + 0.27 * math.cos(t), 0.5 + 0.27 * math.sin(t), 0.2),
            fill=(255, 105, 180, 255),
        )
    d.ellipse(_box(s, 0.5, 0.5, 0.16), fill=(255, 210, 40, 255))


def _e_moon(d: _Draw, s: float) -> None:
    d.ellipse(_box(s, 0.5, 0.5, 0.44), fill=(255, 220, 80, 255))
    d.ellipse(_box(s, 0.7, 0.36, 0.38), fill=(0, 0, 0, 0))


def _e_lightning(d: _Draw, s: float) -> None:
    pts = [
        (0.58, 0.02),
        (0.18, 0.56),
        (0.45, 0.56),
        (0.33, 0.98),
        (0.84, 0.38),
        (0.56, 0.38),
        (0.74, 0.02),
    ]
    d.polygon(
        [(s * x, s * y) for x, y in pts],
        fill=(255, 222, 0, 255),
        outline=(230, 120, 0, 255),
        width=max(1, round(s * 0.02)),
    )


def _e_cool(d: _Draw, s: float) -> None:
    _face(d, s)
    for cx in (0.33, 0.67):
        d.rounded_rectangle(_box(s, cx, 0.4, 0.15, 0.09), radius=s * 0.05, fill=(20, 20, 20, 255))
    d.line(
        (s * 0.45, s * 0.38, s * 0.55, s * 0.38),
        fill=(20, 20, 20, 255),
        width=max(1, round(s * 0.03)),
    )
    _smile(d, s)


_EMOJI: tuple[tuple[str, Callable[[_Draw, float], None]], ...] = (
    ("smiley", _e_smiley),
    ("heart", _e_heart),
    ("star", _e_star),
    ("thumbs_up", _e_thumbs_up),
    ("sun", _e_sun),
    ("wink", _e_wink),
    ("heart_eyes", _e_heart_eyes),
    ("sad", _e_sad),
    ("flower", _e_flower),
    ("moon", _e_moon),
    ("lightning", _e_lightning),
    ("cool", _e_cool),
)

EMOJI_NAMES: tuple[str, ...] = tuple(name for name, _ in _EMOJI)
"""Names of the procedural emoji, in the order of ``emoji_overlay``'s ``emoji`` index."""


def _render_emoji(index: int, px: int) -> np.ndarray:
    """The emoji ``index`` as an RGBA array ``(px, px, 4)``, drawn supersampled."""
    ss = 4 if px <= 128 else 2
    canvas = PILImage.new("RGBA", (px * ss, px * ss), (0, 0, 0, 0))
    _EMOJI[index][1](ImageDraw.Draw(canvas), float(px * ss))
    # box-average ss x ss blocks with premultiplied alpha (fast, no dark fringes)
    out = np.asarray(canvas.convert("RGBa").reduce(ss).convert("RGBA"))
    out.flags.writeable = False
    return out


_cached_emoji = functools.lru_cache(maxsize=64)(_render_emoji)


def _emoji_rgba(index: int, px: int) -> np.ndarray:
    """A read-only RGBA emoji; glyphs up to 512 px are cached (at most 64 MiB in all)."""
    return _cached_emoji(index, px) if px <= 512 else _render_emoji(index, px)


def _area_strength(p: Mapping[str, Any]) -> float:
    return min(1.0, 2.0 * p["opacity"] * _covered(p["size"], p["size"], p["x"], p["y"]))


@register_attack(
    "emoji_overlay",
    Family.OVERLAY,
    params=[
        Param(
            "emoji",
            int,
            low=0,
            high=len(_EMOJI) - 1,
            random=True,
            doc=f"which emoji: {', '.join(EMOJI_NAMES)}",
        ),
        Param(
            "size",
            float,
            low=0.01,
            high=1.0,
            doc="emoji side as a fraction of the image's short side",
        ),
        *_xy("top-left corner as a fraction of the width / height"),
        Param("opacity", float, low=0.0, high=1.0),
    ],
    strength=_area_strength,
    identity={"opacity": 0.0},
)
def emoji_overlay(
    image: Image,
    *,
    emoji: int = 0,
    size: float = 0.3,
    x: float = 0.4,
    y: float = 0.4,
    opacity: float = 1.0,
) -> Image:
    """Paste a procedural emoji (see :data:`EMOJI_NAMES`) with its alpha times ``opacity``."""
    height, width = image.shape[:2]
    px = max(1, round(size * min(height, width)))
    rgba = _emoji_rgba(emoji, px)
    alpha = rgba[..., 3].astype(np.float32) * np.float32(opacity / 255.0)
    return _paste(image, rgba[..., :3], alpha, round(x * width), round(y * height))


# --- image overlay and insertion ---------------------------------------------------------


@register_attack(
    "image_overlay",
    Family.OVERLAY,
    params=[
        Param(
            "source",
            str,
            random=True,
            nullable=True,
            draw=_draw_background,
            doc="path; null -> texture from seed",
        ),
        _seed_param("seed of the procedural texture used when source is null"),
        Param(
            "size",
            float,
            low=0.01,
            high=1.0,
            doc="overlay's long side as a fraction of the image's short side",
        ),
        *_xy("top-left corner as a fraction of the width / height"),
        Param("opacity", float, low=0.0, high=1.0),
    ],
    strength=_area_strength,
    identity={"opacity": 0.0},
)
def image_overlay(
    image: Image,
    *,
    source: str | None = None,
    seed: int = 0,
    size: float = 0.3,
    x: float = 0.4,
    y: float = 0.4,
    opacity: float = 1.0,
) -> Image:
    """Blend another picture (a file, or a procedural texture) over part of the image."""
    height, width = image.shape[:2]
    long_side = max(1, round(size * min(height, width)))
    if source is None:
        over = _texture(seed, long_side, long_side)
    else:
        src = _load_rgb(source)
        h, w = _fit_long(src.shape[0], src.shape[1], long_side)
        over = _resize(src, w, h)
    alpha = np.full(over.shape[:2], opacity, np.float32)
    return _paste(image, over, alpha, round(x * width), round(y * height))


@register_attack(
    "insert",
    Family.OVERLAY,
    params=[
        Param(
            "scale",
            float,
            low=0.05,
            high=1.0,
            doc="inserted image's long side relative to the background's",
        ),
        *_xy("position as a fraction of the free range (the copy stays inside)"),
        Param(
            "background",
            str,
            random=True,
            nullable=True,
            draw=_draw_background,
            doc="path; null -> texture from seed",
        ),
        _seed_param("seed of the procedural background used when background is null"),
        Param(
            "bg_size",
            int,
            low=64,
            high=4096,
            nullable=True,
            doc="background long side; null -> the input's size",
        ),
    ],
    strength=lambda p: 1.0 - p["scale"],
)
def insert(
    image: Image,
    *,
    scale: float = 0.5,
    x: float = 0.5,
    y: float = 0.5,
    background: str | None = None,
    seed: int = 0,
    bg_size: int | None = None,
) -> Image:
    """Paste a scaled copy of the image into a background (DISC21's insertion attack).

    The output has the background's size: with ``bg_size`` its long side is ``bg_size``
    (a procedural background takes the input's aspect); without, it is the input's size
    (a file background is resized to cover it and centre-cropped). The copy keeps its aspect
    and shrinks further if needed to fit inside the background.
    """
    height, width = image.shape[:2]
    if background is None:
        bh, bw = (height, width) if bg_size is None else _fit_long(height, width, bg_size)
        out = _texture(seed, bh, bw)
    else:
        bg = _load_rgb(background)
        if bg_size is None:
            out = _cover(bg, height, width)
        else:
            h, w = _fit_long(bg.shape[0], bg.shape[1], bg_size)
            out = _resize(bg, w, h)
    bh, bw = out.shape[:2]
    f = min(scale * max(bh, bw) / max(height, width), bh / height, bw / width)
    ih, iw = min(bh, max(1, round(height * f))), min(bw, max(1, round(width * f)))
    x0, y0 = round(x * (bw - iw)), round(y * (bh - ih))
    out[y0 : y0 + ih, x0 : x0 + iw] = _resize(image, iw, ih)
    return out


# --- screenshot -------------------------------------------------------------------------


class _Theme(NamedTuple):
    desktop: tuple[int, int, int]
    border: tuple[int, int, int]
    bar: tuple[int, int, int]
    title: tuple[int, int, int]
    buttons: str  # "mac", "win" or "classic"


_THEMES = (
    _Theme((58, 110, 165), (196, 196, 196), (236, 236, 236), (90, 90, 90), "mac"),
    _Theme((36, 40, 48), (24, 24, 24), (52, 52, 56), (200, 200, 200), "mac"),
    _Theme((0, 110, 200), (150, 150, 150), (250, 250, 250), (30, 30, 30), "win"),
    _Theme((0, 128, 128), (192, 192, 192), (0, 0, 128), (255, 255, 255), "classic"),
)


def _desktop(theme: _Theme, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A vertical gradient around the theme's desktop colour, jittered by ``rng``."""
    top = np.clip(np.array(theme.desktop, np.float32) + rng.uniform(-25, 25, 3), 0, 255)
    bottom = top * np.float32(rng.uniform(0.45, 0.85))
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    column = np.rint(top[None, :] * (1 - t) + bottom[None, :] * t).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(column[:, None, :], (height, width, 3)))


def _title_bar(d: _Draw, theme: _Theme, left: int, top: int, right: int, bar_h: int) -> None:
    if bar_h < 6:
        return
    cy = top + bar_h / 2
    r = bar_h * 0.2
    text_x = left + bar_h * 0.4
    if theme.buttons == "mac":
        for i, c in enumerate(((255, 95, 87), (254, 188, 46), (40, 200, 64))):
            cx = left + bar_h * (0.55 + 0.6 * i)
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=c)
        text_x = left + bar_h * 2.2
    else:
        w = bar_h * (1.1 if theme.buttons == "win" else 0.8)
        lw = max(1, round(bar_h * 0.06))
        for i in range(3):  # close, maximize, minimize from the right
            x1 = right - i * w
            x0 = x1 - w
            glyph = theme.title if theme.buttons == "win" else (0, 0, 0)
            if theme.buttons == "classic":
                d.rectangle(
                    (x0 + 2, top + 3, x1 - 2, top + bar_h - 3),
                    fill=(192, 192, 192),
                    outline=(255, 255, 255),
                )
            elif i == 0:
                d.rectangle((x0, top, x1, top + bar_h), fill=(232, 17, 35))
                glyph = (255, 255, 255)
            mx, g = (x0 + x1) / 2, bar_h * 0.16
            if i == 0:
                d.line((mx - g, cy - g, mx + g, cy + g), fill=glyph, width=lw)
                d.line((mx - g, cy + g, mx + g, cy - g), fill=glyph, width=lw)
            elif i == 1:
                d.rectangle((mx - g, cy - g, mx + g, cy + g), outline=glyph, width=lw)
            else:
                d.line((mx - g, cy + g, mx + g, cy + g), fill=glyph, width=lw)
    px = max(1, round(bar_h * 0.5))
    d.text((text_x, cy), "image.png", font=_font(px), fill=theme.title, anchor="lm")


@register_attack(
    "screenshot",
    Family.OVERLAY,
    params=[
        Param("scale", float, low=0.3, high=1.0, doc="content size relative to the output"),
        Param(
            "bar",
            float,
            low=0.0,
            high=0.3,
            doc="title bar height as a fraction of the output height",
        ),
        Param(
            "theme",
            int,
            low=0,
            high=len(_THEMES) - 1,
            random=True,
            doc="0 light, 1 dark, 2 flat, 3 classic",
        ),
        _seed_param("desktop colour and window position"),
    ],
    strength=lambda p: 1.0 - p["scale"],
)
def screenshot(
    image: Image,
    *,
    scale: float = 0.85,
    bar: float = 0.06,
    theme: int = 0,
    seed: int = 0,
) -> Image:
    """The image scaled by ``scale`` inside a window (title bar, buttons, border) on a desktop.

    The output has the input's size. When ``scale`` and ``bar`` do not both fit, the
    content shrinks (aspect kept) so that the window fits.
    """
    height, width = image.shape[:2]
    th = _THEMES[theme]
    rng = np.random.default_rng(seed)
    bar_h = round(bar * height)
    b = max(1, round(0.004 * min(height, width)))
    s = min(scale, (height - bar_h - 2 * b) / height, (width - 2 * b) / width)
    ch, cw = max(1, round(height * s)), max(1, round(width * s))
    win_h, win_w = ch + bar_h + 2 * b, cw + 2 * b
    ox = round(max(0, width - win_w) * rng.uniform(0.2, 0.8))
    oy = round(max(0, height - win_h) * rng.uniform(0.2, 0.8))
    canvas = PILImage.fromarray(_desktop(th, rng, height, width))
    d = ImageDraw.Draw(canvas)
    d.rectangle((ox, oy, ox + win_w - 1, oy + win_h - 1), fill=th.border)
    if bar_h > 0:
        d.rectangle((ox + b, oy + b, ox + win_w - 1 - b, oy + b + bar_h - 1), fill=th.bar)
        _title_bar(d, th, ox + b, oy + b, ox + win_w - b, bar_h)
    out = np.array(canvas)
    top, left = oy + b + bar_h, ox + b
    out[top : top + ch, left : left + cw] = _resize(image, cw, ch)[: height - top, : width - left]
    return out


# --- the image inside a web page ------------------------------------------------------------

SCREENS: tuple[tuple[int, int], ...] = (
    (1920, 1080),
    (1366, 768),
    (1536, 864),
    (1440, 900),
    (1280, 720),
    (390, 844),
    (412, 915),
)
"""Screen sizes ``(width, height)`` in CSS pixels that ``page_screenshot`` draws from: the
most common desktop resolutions and two common phone viewports (iPhone 12-14, large
Android) in StatCounter GlobalStats' screen-resolution tables, 2023-2024."""


def _draw_screen(
    rng: np.random.Generator, ctx: SampleContext, resolved: Mapping[str, Any]
) -> list[int]:
    return list(SCREENS[int(rng.integers(len(SCREENS)))])


def _check_screen(screen: Sequence[Any]) -> tuple[int, int]:
    ok = len(screen) == 2 and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and 64 <= v <= 8192
        for v in screen
    )
    if not ok:
        raise AttackParameterError(
            f"page_screenshot.screen must be [width, height], two integers 64..8192; "
            f"got {list(screen)!r}"
        )
    return int(screen[0]), int(screen[1])


def _line_text(rng: np.random.Generator, width: float, px: int) -> str:
    """Random words whose drawn width at ``px`` is at most ``width`` (at least one word)."""
    space = _text_extent("a b")[0] - _text_extent("ab")[0]
    words: list[str] = []
    used = 0.0
    while True:
        w = _WORDS[int(rng.integers(len(_WORDS)))]
        add = _text_extent(w)[0] * px + (space * px if words else 0.0)
        if words and used + add > width:
            return " ".join(words)
        words.append(w)
        used += add


def _paragraphs(
    d: _Draw, rng: np.random.Generator, box: tuple[int, int, int, int], px: int, ink: tuple[int, ...]
) -> None:
    """Lines of random words filling ``box = (left, top, right, bottom)``; ragged right ends,
    a blank line between paragraphs of 3-6 lines. Lines past the bottom are not drawn."""
    left, top, right, bottom = box
    if px < 4 or right - left < 2 * px:
        return
    y, lead = float(top), 1.5 * px
    in_par, par_len = 0, int(rng.integers(3, 7))
    while y + px <= bottom:
        frac = rng.uniform(0.35, 0.7) if in_par == par_len - 1 else rng.uniform(0.85, 1.0)
        d.text((left, y), _line_text(rng, (right - left) * frac, px), font=_font(px), fill=ink)
        y += lead
        in_par += 1
        if in_par == par_len:
            y += lead * 0.6
            in_par, par_len = 0, int(rng.integers(3, 7))


@register_attack(
    "page_screenshot",
    Family.OVERLAY,
    params=[
        Param(
            "area",
            float,
            low=0.01,
            high=0.9,
            doc="image area as a fraction of the screen's (less where it does not fit)",
        ),
        Param(
            "screen",
            tuple,
            random=True,
            draw=_draw_screen,
            doc="output [width, height] in px; drawn from SCREENS",
        ),
        Param("quality", int, low=1, high=100, doc="JPEG quality of the capture (PIL)"),
        _seed_param("page layout: theme, header, sidebar, text, where the image sits"),
    ],
    strength=lambda p: 1.0 - p["area"],
    slow=True,
)
def page_screenshot(
    image: Image,
    *,
    area: float = 0.35,
    screen: Sequence[int] = (1366, 768),
    quality: int = 85,
    seed: int = 0,
) -> Image:
    """The image shown inside a web page, captured as a JPEG screenshot of the screen.

    The output is ``(screen[1], screen[0], 3)``: a page drawn from ``seed`` (light or dark
    theme; a coloured header bar 6-10 % of the height with a logo, a site name and, on
    landscape screens, menu words; on landscape screens a sidebar 18-26 % of the width, left
    or right, with thumbnails and short lines with probability 0.6; a title, and paragraphs
    of words in Pillow's bundled font above and below the image in the content column).
    The image, aspect kept, covers ``area`` of the screen, or less where that does not fit
    the content column or the height under the header; it is resized once (area averaging
    when shrinking, bilinear when enlarging), left-aligned or centred, sometimes with a thin
    border. The whole screen is then JPEG-encoded at ``quality`` (PIL, 4:2:0) and decoded.
    """
    width, height = _check_screen(screen)
    rng = np.random.default_rng(seed)
    dark = bool(rng.random() < 0.25)
    base = int(rng.integers(16, 40)) if dark else int(rng.integers(238, 256))
    bg = (base, base, base)
    ink_v = int(rng.integers(200, 236)) if dark else int(rng.integers(20, 70))
    ink, muted = (ink_v, ink_v, ink_v), ((ink_v + base) // 2,) * 3
    hue_rgb = cv2.cvtColor(
        np.array([[[int(rng.integers(180)), int(rng.integers(120, 256)), int(rng.integers(90, 230))]]],
                 np.uint8),
        cv2.COLOR_HSV2RGB,
    )[0, 0]
    accent = tuple(int(c) for c in hue_rgb)
    canvas = PILImage.new("RGB", (width, height), bg)
    d = ImageDraw.Draw(canvas)
    unit = min(width, height)
    landscape = width > height

    header = max(8, round(height * rng.uniform(0.06, 0.1)))
    d.rectangle((0, 0, width - 1, header - 1), fill=accent)
    pad = header * 0.2
    d.ellipse((pad, pad, header - pad, header - pad), fill=(255, 255, 255))
    brand_px = max(4, round(header * 0.42))
    d.text((header * 1.1, header / 2), _words(rng, 1, 2), font=_font(brand_px),
           fill=(255, 255, 255), anchor="lm")
    if landscape:
        x = width - header * 0.5
        for _ in range(int(rng.integers(3, 6))):
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            x -= _text_extent(word)[0] * brand_px * 0.8 + header * 0.5
            d.text((x, header / 2), word, font=_font(round(brand_px * 0.8)),
                   fill=(255, 255, 255), anchor="lm")

    margin = max(2, round(width * rng.uniform(0.02, 0.06)))
    left, right = margin, width - margin
    if landscape and rng.random() < 0.6:
        side_w = round(width * rng.uniform(0.18, 0.26))
        on_left = bool(rng.random() < 0.5)
        sx0 = 0 if on_left else width - side_w
        shade = max(0, min(255, base + (12 if dark else -10)))
        d.rectangle((sx0, header, sx0 + side_w - 1, height - 1), fill=(shade, shade, shade))
        px = max(4, round(unit * 0.022))
        y, x0 = header + margin, sx0 + margin // 2
        inner = side_w - margin
        while y < height and inner > 8:
            th = round(inner * rng.uniform(0.45, 0.7))
            thumb = _texture(int(rng.integers(_SEED_MAX)), th, inner)
            canvas.paste(PILImage.fromarray(thumb), (x0, y))
            y += th + px // 2
            _paragraphs(d, rng, (x0, y, x0 + inner, min(height, y + round(3 * 1.5 * px))), px, muted)
            y += round(3 * 1.5 * px) + margin // 2
        if on_left:
            left = side_w + margin
        else:
            right = width - side_w - margin
    col_w = max(1, right - left)

    body_px = max(4, round(unit * rng.uniform(0.022, 0.032)))
    title_px = round(body_px * rng.uniform(1.5, 2.2))
    top = header + margin
    avail_h = max(1, height - top - margin)
    h, w = image.shape[:2]
    iw = math.sqrt(area * width * height * w / h)
    f = min(1.0, col_w / iw, avail_h / (iw * h / w))
    iw_px = max(1, min(col_w, math.floor(iw * f)))
    ih_px = max(1, min(avail_h, math.floor(iw * f * h / w)))

    free = avail_h - ih_px
    y_img = top + round(free * rng.uniform(0.15, 0.85))
    y = float(top)
    if y + title_px * 1.3 <= y_img - body_px:
        d.text((left, y), _line_text(rng, col_w * rng.uniform(0.5, 0.95), title_px),
               font=_font(title_px), fill=ink)
        y += title_px * 1.6
    _paragraphs(d, rng, (left, round(y), right, y_img - body_px), body_px, ink)
    x_img = left if rng.random() < 0.5 else left + (col_w - iw_px) // 2
    if rng.random() < 0.3:
        d.rectangle((x_img - 1, y_img - 1, x_img + iw_px, y_img + ih_px), outline=muted)
    y = y_img + ih_px + body_px // 2
    cap_px = max(4, round(body_px * 0.8))
    d.text((x_img, y), _line_text(rng, iw_px, cap_px), font=_font(cap_px), fill=muted)
    _paragraphs(d, rng, (left, round(y + 2 * cap_px), right, height), body_px, ink)

    out = np.array(canvas)
    out[y_img : y_img + ih_px, x_img : x_img + iw_px] = _resize(image, iw_px, ih_px)
    return jpeg(out, quality=quality)


# --- meme -------------------------------------------------------------------------------


@register_attack(
    "meme",
    Family.OVERLAY,
    params=[
        Param(
            "text",
            str,
            random=True,
            draw=_draw_caption,
            doc="caption; drawn: 2-5 random words, upper case",
        ),
        Param(
            "caption",
            float,
            low=0.05,
            high=0.5,
            doc="caption bar height as a fraction of the image height",
        ),
        Param("above", bool, doc="caption bar above (True) or below the image"),
    ],
    strength=lambda p: p["caption"],
)
def meme(
    image: Image,
    *,
    text: str = "WHEN THE WATERMARK",
    caption: float = 0.15,
    above: bool = True,
) -> Image:
    """Add a white caption bar with centred black text; the output is taller than the input."""
    height, width = image.shape[:2]
    cap_h = max(1, round(caption * height))
    strip = np.full((cap_h, width, 3), 255, np.uint8)
    w_units, h_units = _text_extent(text)
    if w_units > 0 and h_units > 0:
        px = min(0.8 * cap_h / max(h_units, 0.7), 0.94 * width / w_units)
        mask = _text_mask(text, max(1, math.floor(px)))
        fit = min(1.0, 0.94 * width / mask.shape[1], 0.8 * cap_h / mask.shape[0])
        if fit < 1.0:  # tiny fonts do not scale linearly: shrink the rendered text to fit
            size = (
                max(1, math.floor(mask.shape[1] * fit)),
                max(1, math.floor(mask.shape[0] * fit)),
            )
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        x0, y0 = (width - mask.shape[1]) // 2, (cap_h - mask.shape[0]) // 2
        strip = _paste(strip, np.zeros(3, np.float32), mask.astype(np.float32) / 255.0, x0, y0)
    parts = (strip, image) if above else (image, strip)
    return np.concatenate(parts, axis=0)
