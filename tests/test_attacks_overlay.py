"""Overlay attacks: bounded changes, determinism, output geometry, draws and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tracemark import attacks
from tracemark.attacks.overlay import EMOJI_NAMES
from tracemark.errors import AttackParameterError, ImageError

OVERLAYS = ["text_overlay", "emoji_overlay", "image_overlay", "insert", "screenshot", "meme"]


def _flat(h: int = 120, w: int = 160, value: int = 90) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) exclusive box of the pixels that differ."""
    ys, xs = np.nonzero(np.any(a != b, axis=2))
    assert ys.size > 0, "nothing changed"
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def _save(tmp_path: Path, image: np.ndarray, name: str = "bg.png") -> str:
    path = tmp_path / name
    Image.fromarray(image).save(path)
    return str(path)


def test_text_overlay_changes_a_bounded_region_deterministically() -> None:
    img = _flat()
    params = {
        "text": "hello",
        "x": 0.25,
        "y": 0.4,
        "font_size": 0.25,
        "color": [250, 10, 10],
        "opacity": 1.0,
    }
    out = attacks.apply_attack(img, "text_overlay", **params)
    assert np.array_equal(out, attacks.apply_attack(img, "text_overlay", **params))
    top, left, bottom, right = _changed_box(img, out)
    px = 0.25 * 120
    assert top >= round(0.4 * 120) and left >= round(0.25 * 160)
    assert bottom - top <= 1.3 * px and right - left <= 5 * px
    ink = out[np.any(out != img, axis=2)]
    assert np.all(ink[:, 0] >= img[0, 0, 0]) and np.all(ink[:, 1] <= img[0, 0, 1]), (
        "pixels move towards the colour"
    )
    assert (ink[:, 0] == 250).sum() > 10, "solid strokes have the colour"


def test_text_overlay_opacity_scales_the_change() -> None:
    img = _flat()
    full = attacks.apply_attack(img, "text_overlay", text="abc", opacity=1.0).astype(int) - img
    half = attacks.apply_attack(img, "text_overlay", text="abc", opacity=0.5).astype(int) - img
    assert np.abs(half - full / 2).max() <= 1


def test_emoji_overlay_changes_only_its_square() -> None:
    img = _flat(100, 200)
    out = attacks.apply_attack(img, "emoji_overlay", emoji=0, size=0.4, x=0.5, y=0.3, opacity=1.0)
    top, left, bottom, right = _changed_box(img, out)
    x0, y0, px = 100, 30, 40
    assert (top, left) >= (y0, x0) and bottom <= y0 + px and right <= x0 + px
    assert bottom - top >= 0.8 * px and right - left >= 0.8 * px
    assert np.array_equal(out[y0, x0], img[y0, x0]), (
        "the emoji's transparent corner shows the image"
    )


def test_emoji_glyphs_are_distinct_and_colourful() -> None:
    assert len(EMOJI_NAMES) >= 8
    assert attacks.get_attack("emoji_overlay").param("emoji").high == len(EMOJI_NAMES) - 1
    img = _flat(64, 64, 255)
    outs = [
        attacks.apply_attack(img, "emoji_overlay", emoji=i, size=1.0, x=0.0, y=0.0)
        for i in range(len(EMOJI_NAMES))
    ]
    for i, a in enumerate(outs):
        assert np.ptp(a.astype(int), axis=2).max() > 100, f"{EMOJI_NAMES[i]} is not colourful"
        for b in outs[i + 1 :]:
            assert np.abs(a.astype(int) - b).mean() > 1


def test_emoji_is_clipped_at_the_border() -> None:
    img = _flat(50, 50)
    out = attacks.apply_attack(img, "emoji_overlay", emoji=0, size=0.8, x=0.7, y=0.7)
    assert out.shape == img.shape
    top, left, bottom, right = _changed_box(img, out)
    assert top >= 35 and left >= 35 and bottom == right == 50


def test_image_overlay_texture_depends_on_seed_only(tmp_path: Path) -> None:
    img = _flat()
    a = attacks.apply_attack(img, "image_overlay", seed=1, size=0.5, x=0.1, y=0.1)
    assert np.array_equal(
        a, attacks.apply_attack(img, "image_overlay", seed=1, size=0.5, x=0.1, y=0.1)
    )
    b = attacks.apply_attack(img, "image_overlay", seed=2, size=0.5, x=0.1, y=0.1)
    assert not np.array_equal(a, b)
    top, left, bottom, right = _changed_box(img, a)
    assert (top, left) >= (12, 16) and bottom <= 12 + 60 and right <= 16 + 60


def test_image_overlay_from_a_file(tmp_path: Path) -> None:
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 0] = 255
    src = _save(tmp_path, red)
    out = attacks.apply_attack(
        _flat(), "image_overlay", source=src, size=0.5, x=0.0, y=0.0, opacity=0.5
    )
    # long side 0.5 * 120 = 60, aspect 2:1 -> 30 x 60, blended half way
    assert np.array_equal(out[0, 0], [172, 45, 45]) and np.array_equal(out[29, 59], [172, 45, 45])
    assert np.array_equal(out[30, 0], [90, 90, 90]) and np.array_equal(out[0, 60], [90, 90, 90])


def test_missing_overlay_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        attacks.apply_attack(_flat(), "image_overlay", source=str(tmp_path / "missing.png"))
    with pytest.raises(ImageError):
        attacks.apply_attack(_flat(), "insert", background=str(tmp_path))


def test_insert_places_the_copy_inside_a_procedural_background() -> None:
    magenta = np.zeros((60, 120, 3), np.uint8)
    magenta[..., [0, 2]] = 255
    out = attacks.apply_attack(magenta, "insert", scale=0.5, x=1.0, y=0.0, seed=4)
    assert out.shape == magenta.shape
    box = np.all(out == [255, 0, 255], axis=2)
    assert box[:30, 60:].all(), "copy of 30x60 at the top right"
    assert not np.array_equal(out[30:, :60], np.broadcast_to([255, 0, 255], (30, 60, 3)))
    bigger = attacks.apply_attack(magenta, "insert", scale=0.25, seed=4, bg_size=300)
    assert bigger.shape == (150, 300, 3)
    assert np.all(bigger == [255, 0, 255], axis=2).sum() >= 37 * 75


def test_insert_into_a_file_background(tmp_path: Path) -> None:
    bg = np.zeros((200, 100, 3), np.uint8)
    bg[..., 1] = 200
    path = _save(tmp_path, bg)
    img = _flat(80, 80, 30)
    same = attacks.apply_attack(img, "insert", background=path, scale=0.5)
    assert same.shape == img.shape and np.array_equal(same[0, 0], [0, 200, 0])
    assert np.all(same == 30, axis=2).sum() == 40 * 40
    own = attacks.apply_attack(img, "insert", background=path, scale=0.5, bg_size=100)
    assert own.shape == (100, 50, 3)
    assert np.all(own == 30, axis=2).sum() == 50 * 50, "copy shrinks to fit the narrow background"


def test_insert_draws_backgrounds_from_the_context() -> None:
    spec = attacks.get_attack("insert")
    ctx = attacks.SampleContext(100, 100, backgrounds=("a.jpg", "b.jpg"))
    drawn = {spec.draw(np.random.default_rng(s), {}, ctx)["background"] for s in range(20)}
    assert drawn == {"a.jpg", "b.jpg"}
    assert (
        spec.draw(np.random.default_rng(0), {}, attacks.SampleContext(100, 100))["background"]
        is None
    )


@pytest.mark.parametrize("theme", range(4))
def test_screenshot_keeps_the_size_and_shows_the_content(theme: int) -> None:
    img = _image_with_marker()
    out = attacks.apply_attack(img, "screenshot", scale=0.8, bar=0.08, theme=theme, seed=theme)
    assert out.shape == img.shape
    assert np.array_equal(
        out, attacks.apply_attack(img, "screenshot", scale=0.8, bar=0.08, theme=theme, seed=theme)
    )
    marker = np.all(out == [0, 255, 0], axis=2)
    assert marker.sum() >= 0.8 * (0.8 * 40) ** 2, "the scaled content is in the frame"


def test_screenshot_themes_and_seeds_differ() -> None:
    img = _image_with_marker()
    outs = [attacks.apply_attack(img, "screenshot", theme=t, seed=0) for t in range(4)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(outs) for b in outs[i + 1 :])
    assert not np.array_equal(outs[0], attacks.apply_attack(img, "screenshot", theme=0, seed=1))


def test_screenshot_fits_when_scale_and_bar_are_large() -> None:
    img = _image_with_marker()
    out = attacks.apply_attack(img, "screenshot", scale=1.0, bar=0.3)
    assert out.shape == img.shape


def _image_with_marker() -> np.ndarray:
    img = _flat(100, 120, 128)
    img[30:70, 40:80] = [0, 255, 0]
    return img


@pytest.mark.parametrize("above", [True, False])
def test_meme_adds_a_caption_bar(above: bool) -> None:
    img = _flat(100, 160)
    out = attacks.apply_attack(img, "meme", text="SOME CAPTION", caption=0.2, above=above)
    assert out.shape == (120, 160, 3)
    body, bar = (out[20:], out[:20]) if above else (out[:100], out[100:])
    assert np.array_equal(body, img)
    assert (bar == 255).all(axis=2).mean() > 0.5 and (bar < 60).all(axis=2).sum() > 20


def test_meme_long_caption_fits_the_width() -> None:
    out = attacks.apply_attack(_flat(100, 60), "meme", text="A VERY LONG CAPTION " * 4, caption=0.3)
    bar = out[:30]
    assert (bar[:, 0] == 255).all() and (bar[:, -1] == 255).all()
    assert (bar < 250).any(), "the caption is drawn"


def test_text_draws_are_words_and_colours() -> None:
    spec = attacks.get_attack("text_overlay")
    a = spec.draw(np.random.default_rng(3))
    assert a == spec.draw(np.random.default_rng(3))
    assert 1 <= len(a["text"].split()) <= 3 and a["text"].islower()
    assert len(a["color"]) == 3 and all(0 <= c <= 255 for c in a["color"])
    caption = attacks.get_attack("meme").draw(np.random.default_rng(3))["text"]
    assert caption.isupper() and 2 <= len(caption.split()) <= 5


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("text_overlay", {"color": [300, 0, 0]}),
        ("text_overlay", {"color": [1, 2]}),
        ("text_overlay", {"font_size": 0.0}),
        ("emoji_overlay", {"emoji": len(EMOJI_NAMES)}),
        ("emoji_overlay", {"opacity": 1.5}),
        ("insert", {"bg_size": 10}),
        ("screenshot", {"theme": 9}),
        ("meme", {"above": "yes"}),
        ("image_overlay", {"source": 3}),
    ],
)
def test_bad_parameters_are_typed_errors(name: str, params: dict) -> None:
    with pytest.raises(AttackParameterError):
        attacks.apply_attack(_flat(20, 20), name, **params)


@pytest.mark.parametrize(
    ("name", "params", "strength"),
    [
        ("emoji_overlay", {"size": 0.5, "x": 0.0, "y": 0.0, "opacity": 1.0}, 0.5),
        ("emoji_overlay", {"size": 0.5, "x": 0.75, "y": 0.0, "opacity": 1.0}, 0.25),
        ("image_overlay", {"size": 0.2, "x": 0.0, "y": 0.0, "opacity": 0.5}, 0.04),
        ("insert", {"scale": 0.3}, 0.7),
        ("screenshot", {"scale": 0.9}, 0.1),
        ("meme", {"caption": 0.2}, 0.2),
        ("text_overlay", {"opacity": 0.0}, 0.0),
    ],
)
def test_strength(name: str, params: dict, strength: float) -> None:
    assert attacks.get_attack(name).strength(params) == pytest.approx(strength)


def test_text_strength_grows_with_text_and_size() -> None:
    spec = attacks.get_attack("text_overlay")
    small = spec.strength({"text": "ab", "font_size": 0.05})
    assert (
        0
        < small
        < spec.strength({"text": "abcdef", "font_size": 0.05})
        < spec.strength({"text": "abcdef", "font_size": 0.1})
    )
