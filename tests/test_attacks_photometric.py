"""Photometric attacks against independent oracles (PIL, colorsys, the formulas)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tracemark import attacks
from tracemark.errors import AttackParameterError

PHOTOMETRIC = [
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "hue",
    "gamma",
    "grayscale",
    "vignette",
    "color_jitter",
]


def _image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [xx * 255 / (w - 1), yy * 255 / (h - 1), 255 - (xx + yy) * 255 / (h + w - 2)], -1
    )
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "enhancer"),
    [
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("saturation", ImageEnhance.Color),
        ("sharpness", ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.5, 2.0, 6.0])
def test_enhance_attacks_equal_pil(name: str, enhancer: type, factor: float) -> None:
    img = _image()
    expected = np.asarray(enhancer(Image.fromarray(img)).enhance(factor))
    assert np.array_equal(attacks.apply_attack(img, name, factor=factor), expected)


@pytest.mark.parametrize("name", [n for n in PHOTOMETRIC if n != "grayscale"])
def test_identity_parameters_return_the_image(name: str) -> None:
    spec = attacks.get_attack(name)
    assert spec.identity is not None
    img = _image(seed=1)
    params = {**spec.identity, **({"order": [3, 1, 0, 2]} if name == "color_jitter" else {})}
    assert np.array_equal(attacks.apply_attack(img, name, **params), img)
    assert spec.strength(params) == 0.0


def test_hue_matches_colorsys() -> None:
    img = _image(12, 16, seed=2)
    shift = 0.23
    out = attacks.apply_attack(img, "hue", shift=shift)
    expected = np.empty_like(img)
    for (i, j), _ in np.ndenumerate(img[..., 0]):
        h, s, v = colorsys.rgb_to_hsv(*(img[i, j] / 255.0))
        expected[i, j] = np.rint(np.array(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_hue_half_turn_twice_is_nearly_identity() -> None:
    img = _image(seed=3)
    twice = attacks.apply_attack(attacks.apply_attack(img, "hue", shift=0.5), "hue", shift=0.5)
    assert np.abs(twice.astype(int) - img).max() <= 1


def test_hue_keeps_greys() -> None:
    grey = np.full((4, 4, 3), 128, np.uint8)
    assert np.array_equal(attacks.apply_attack(grey, "hue", shift=0.37), grey)


def test_gamma_follows_the_formula() -> None:
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    for g in (0.4, 2.2):
        expected = np.rint(255 * (np.arange(256) / 255) ** g)
        assert np.array_equal(attacks.apply_attack(ramp, "gamma", gamma=g)[0, :, 0], expected)


def test_grayscale_is_rec601_luma_in_equal_channels() -> None:
    img = _image(seed=4)
    out = attacks.apply_attack(img, "grayscale")
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    luma = img.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - luma).max() <= 1.0


def test_vignette_darkens_corners_to_one_minus_strength() -> None:
    flat = np.full((101, 151, 3), 200, np.uint8)
    out = attacks.apply_attack(flat, "vignette", strength=0.6)
    assert out[50, 75, 0] == 200  # the centre is untouched
    assert abs(int(out[0, 0, 0]) - 200 * 0.4) <= 3
    assert abs(int(out[-1, -1, 0]) - 200 * 0.4) <= 3
    row = out[50, :76, 0].astype(int)
    assert np.all(np.diff(row) >= 0), "darkening must decrease towards the centre"


def test_color_jitter_applies_members_in_order() -> None:
    img = _image(seed=5)
    values = {"brightness": 1.7, "contrast": 0.4, "saturation": 1.6, "hue": 0.15}
    members = [
        ("brightness", "factor"),
        ("contrast", "factor"),
        ("saturation", "factor"),
        ("hue", "shift"),
    ]
    results = {}
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        expected = img
        for i in order:
            name, key = members[i]
            expected = attacks.apply_attack(expected, name, **{key: values[name]})
        out = attacks.apply_attack(img, "color_jitter", order=order, **values)
        assert np.array_equal(out, expected)
        results[tuple(order)] = out
    assert not np.array_equal(results[(0, 1, 2, 3)], results[(3, 2, 1, 0)]), "order must matter"


def test_color_jitter_draws_a_permutation_reproducibly() -> None:
    spec = attacks.get_attack("color_jitter")
    config = {"brightness": {"uniform": [0, 7]}}  # Tree-Ring's ColorJitter(brightness=6)
    a = spec.draw(np.random.default_rng(7), config)
    assert a == spec.draw(np.random.default_rng(7), config)
    assert sorted(a["order"]) == [0, 1, 2, 3] and 0.0 <= a["brightness"] <= 7.0
    orders = {tuple(spec.draw(np.random.default_rng(s))["order"]) for s in range(40)}
    assert len(orders) > 5


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("brightness", {"factor": -0.1}),
        ("contrast", {"factor": 101}),
        ("hue", {"shift": 0.6}),
        ("gamma", {"gamma": 0.0}),
        ("vignette", {"strength": 1.5}),
        ("color_jitter", {"order": [0, 1, 2, 2]}),
        ("color_jitter", {"order": [0, 1, 2]}),
        ("color_jitter", {"order": "0123"}),
        ("saturation", {"factor": "2"}),
    ],
)
def test_bad_parameters_are_typed_errors(name: str, params: dict) -> None:
    with pytest.raises(AttackParameterError):
        attacks.apply_attack(_image(8, 8), name, **params)


@pytest.mark.parametrize(
    ("name", "params", "strength"),
    [
        ("brightness", {"factor": 2.0}, 1.0),
        ("brightness", {"factor": 0.0}, 1.0),
        ("contrast", {"factor": 2**0.5}, 0.5),
        ("hue", {"shift": -0.25}, 0.5),
        ("gamma", {"gamma": 0.5}, 1.0),
        ("vignette", {"strength": 0.3}, 0.3),
        ("grayscale", {}, 1.0),
        ("color_jitter", {"brightness": 1.0, "contrast": 2**0.25, "hue": 0.1}, 0.25),
    ],
)
def test_strength(name: str, params: dict, strength: float) -> None:
    assert attacks.get_attack(name).strength(params) == pytest.approx(strength)
