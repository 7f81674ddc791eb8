"""The attacks added for the copy-detection hard kinds: page_screenshot, thumbnail,
unsharp_mask (geometry, oracles, determinism, bad parameters)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter

from tracemark import attacks
from tracemark.attacks.overlay import SCREENS
from tracemark.errors import AttackParameterError

MAGENTA = (250, 0, 250)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _component(out: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of the largest blob of pixels near ``colour``."""
    near = np.all(np.abs(out.astype(int) - np.array(colour)) < 40, axis=2).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(near)
    assert n > 1, "the image is not in the page"
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, _ = stats[best]
    return int(x), int(y), int(w), int(h)


# --- page_screenshot --------------------------------------------------------------------


@pytest.mark.parametrize("screen", [(1366, 768), (1920, 1080), (390, 844)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_page_screenshot_shows_the_image_at_the_area(screen: tuple[int, int], seed: int) -> None:
    img = np.full((90, 120, 3), MAGENTA, np.uint8)
    area = 0.25
    out = attacks.apply_attack(img, "page_screenshot", area=area, screen=list(screen),
                               quality=95, seed=seed)
    width, height = screen
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    x, y, w, h = _component(out, MAGENTA)
    assert w * h / (width * height) == pytest.approx(area, rel=0.03)
    assert w / h == pytest.approx(120 / 90, rel=0.03)
    assert y >= 0.06 * height  # below the header bar
    # the page around it is not empty: text and furniture
    rest = out.copy()
    rest[y : y + h, x : x + w] = 0
    assert np.std(rest[: y].astype(float)) > 5 or np.std(rest[y + h :].astype(float)) > 5


def test_page_screenshot_shrinks_an_image_that_does_not_fit() -> None:
    img = np.full((50, 400, 3), MAGENTA, np.uint8)  # 8:1, on a phone
    out = attacks.apply_attack(img, "page_screenshot", area=0.9, screen=[390, 844], seed=3)
    x, y, w, h = _component(out, MAGENTA)
    assert w <= 390 and w * h < 0.2 * 390 * 844
    assert w / h == pytest.approx(8.0, rel=0.08)


def test_page_screenshot_is_deterministic_and_depends_on_its_parameters() -> None:
    img = _noise(100, 140)
    params = {"area": 0.3, "screen": [1280, 720], "quality": 80, "seed": 7}
    a = attacks.apply_attack(img, "page_screenshot", **params)
    assert np.array_equal(a, attacks.apply_attack(img, "page_screenshot", **params))
    for change in ({"seed": 8}, {"quality": 30}, {"area": 0.4}):
        b = attacks.apply_attack(img, "page_screenshot", **{**params, **change})
        assert not np.array_equal(a, b), change


def test_page_screenshot_draws_a_known_screen() -> None:
    spec = attacks.get_attack("page_screenshot")
    ctx = attacks.SampleContext(300, 400)
    screens = {tuple(spec.draw(np.random.default_rng(s), {}, ctx)["screen"]) for s in range(40)}
    assert screens <= set(SCREENS) and len(screens) >= 4
    assert spec.draw(np.random.default_rng(5), {}, ctx) == spec.draw(np.random.default_rng(5), {}, ctx)


@pytest.mark.parametrize(
    "params",
    [
        {"screen": [10, 10]},
        {"screen": [1366]},
        {"screen": [1366.5, 768]},
        {"screen": [True, 768]},
        {"screen": "1366x768"},
        {"quality": 0},
        {"area": 0.95},
        {"area": 0.0},
    ],
)
def test_page_screenshot_bad_parameters_are_typed_errors(params: dict) -> None:
    with pytest.raises(AttackParameterError):
        attacks.apply_attack(_noise(40, 40), "page_screenshot", **params)


# --- thumbnail ----------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "side"), [(480, 640, 96), (640, 427, 200), (300, 300, 128)])
def test_thumbnail_long_side_and_aspect(h: int, w: int, side: int) -> None:
    img = _noise(h, w)
    out = attacks.apply_attack(img, "thumbnail", long_side=side)
    assert max(out.shape[:2]) == side and out.dtype == np.uint8
    assert out.shape[0] == max(1, round(h * side / max(h, w)))
    assert out.shape[1] == max(1, round(w * side / max(h, w)))
    # area averaging agrees with PIL's box filter (an independent resampler)
    box = np.array(Image.fromarray(img).resize((out.shape[1], out.shape[0]), Image.Resampling.BOX))
    assert np.mean(np.abs(box.astype(int) - out.astype(int))) < 2.0


def test_thumbnail_never_enlarges() -> None:
    img = _noise(60, 90)
    out = attacks.apply_attack(img, "thumbnail", long_side=128)
    assert np.array_equal(out, img) and out is not img


def test_thumbnail_bilinear_aliases_more_than_area() -> None:
    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: area averages them to grey
    area = attacks.apply_attack(stripes, "thumbnail", long_side=90, interpolation="area")
    naive = attacks.apply_attack(stripes, "thumbnail", long_side=90, interpolation="bilinear")
    assert area.std() < 15 and naive.std() > 40


@pytest.mark.parametrize(
    "params", [{"long_side": 4}, {"long_side": 5000}, {"interpolation": "box"}, {"long_side": 1.5}]
)
def test_thumbnail_bad_parameters_are_typed_errors(params: dict) -> None:
    with pytest.raises(AttackParameterError):
        attacks.apply_attack(_noise(40, 40), "thumbnail", **params)


# --- unsharp_mask ---------------------------------------------------------------------------


@pytest.mark.parametrize(("radius", "amount"), [(1.0, 1.5), (2.0, 2.0), (4.0, 4.0)])
def test_unsharp_mask_is_in_plus_amount_times_detail(radius: float, amount: float) -> None:
    img = _noise(64, 80, seed=1)
    out = attacks.apply_attack(img, "unsharp_mask", radius=radius, amount=amount, threshold=0)
    blur = np.array(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius))).astype(float)
    expected = np.clip(np.rint(img + amount * (img - blur)), 0, 255)
    assert np.abs(expected - out).max() <= 1


def test_unsharp_mask_sharpens_more_with_amount_and_threshold_spares_flat_areas() -> None:
    img = _noise(64, 80, seed=2)
    lap = [
        cv2.Laplacian(attacks.apply_attack(img, "unsharp_mask", radius=2.0, amount=a), cv2.CV_64F).var()
        for a in (0.0, 1.0, 3.0)
    ]
    assert lap[0] < lap[1] < lap[2]
    assert np.array_equal(attacks.apply_attack(img, "unsharp_mask", amount=0.0), img)
    # differences below the threshold are left alone: a smooth ramp is unchanged
    ramp = np.repeat(np.linspace(0, 60, 80).astype(np.uint8)[None, :, None], 3, axis=2)
    ramp = np.ascontiguousarray(np.broadcast_to(ramp, (64, 80, 3)))
    assert np.array_equal(attacks.apply_attack(ramp, "unsharp_mask", amount=3.0, threshold=10), ramp)


@pytest.mark.parametrize(
    "params", [{"amount": -1.0}, {"radius": 60.0}, {"threshold": 300}, {"amount": "x"}]
)
def test_unsharp_mask_bad_parameters_are_typed_errors(params: dict) -> None:
    with pytest.raises(AttackParameterError):
        attacks.apply_attack(_noise(40, 40), "unsharp_mask", **params)
