"""Behaviour of the degradation attacks (tracemark.attacks.degradation) against independent oracles."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFilter
from scipy import ndimage

from tracemark.attacks import SampleContext, apply_attack, get_attack
from tracemark.attacks import degradation as deg
from tracemark.errors import AttackParameterError


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB image with some texture, values kept within 1..254."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    base = np.stack(
        [
            127 + 90 * np.sin(xx / 9.0 + yy / 23.0),
            127 + 90 * np.cos(yy / 7.0),
            1 + 253 * xx / max(1, width - 1),
        ],
        axis=-1,
    )
    base += rng.normal(0, 4, base.shape)
    return np.clip(np.rint(base), 1, 254).astype(np.uint8)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _pil_codec(image: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format=fmt, quality=quality)
    return np.array(PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


IMG = _image(80, 100)  # H=80, W=100
GRAY = np.full((64, 64, 3), 128, np.uint8)


# --- compression ---------------------------------------------------------------------


@pytest.mark.parametrize("quality", [0, 10, 50, 75, 100])
def test_jpeg_equals_pil(quality: int) -> None:
    np.testing.assert_array_equal(
        apply_attack(IMG, "jpeg", quality=quality), _pil_codec(IMG, "JPEG", quality)
    )


@pytest.mark.parametrize("quality", [0, 50, 100])
def test_webp_equals_pil(quality: int) -> None:
    np.testing.assert_array_equal(
        apply_attack(IMG, "webp", quality=quality), _pil_codec(IMG, "WEBP", quality)
    )


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_lower_quality_loses_more(name: str) -> None:
    low = _mad(apply_attack(IMG, name, quality=10), IMG)
    high = _mad(apply_attack(IMG, name, quality=90), IMG)
    assert 0 < high < low


# --- filters ---------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [0.5, 1.0, 4.0, 9.0])
def test_gaussian_blur_equals_pil(radius: float) -> None:
    ref = np.array(PILImage.fromarray(IMG).filter(ImageFilter.GaussianBlur(radius)))
    np.testing.assert_array_equal(apply_attack(IMG, "gaussian_blur", radius=radius), ref)


def _torchvision_gaussian_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """torchvision's GaussianBlur: normalised sampled kernel, reflect padding, rounding."""
    half = (kernel_size - 1) * 0.5
    x = np.linspace(-half, half, kernel_size)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        out = ndimage.correlate1d(out, kernel, axis=axis, mode="mirror")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("kernel_size", "sigma"), [(5, 1.0), (3, 0.5), (9, 2.0), (15, 5.0)])
def test_gaussian_blur_kernel_matches_torchvision_semantics(kernel_size: int, sigma: float) -> None:
    ours = apply_attack(IMG, "gaussian_blur_kernel", kernel_size=kernel_size, sigma=sigma)
    ref = _torchvision_gaussian_blur(IMG, kernel_size, sigma)
    assert np.abs(ours.astype(np.int16) - ref).max() <= 1


@pytest.mark.parametrize("size", [3, 5, 7])
def test_median_filter_equals_scipy(size: int) -> None:
    ref = ndimage.median_filter(IMG, size=(size, size, 1), mode="nearest")
    np.testing.assert_array_equal(apply_attack(IMG, "median_filter", size=size), ref)


# --- noise -------------------------------------------------------------------------------


def test_gaussian_noise_statistics() -> None:
    out = apply_attack(GRAY, "gaussian_noise", std=0.05, seed=3)
    diff = (out.astype(np.float64) - 128) / 255
    assert abs(diff.mean()) < 2e-3
    assert diff.std() == pytest.approx(0.05, rel=0.03)


def test_gaussian_noise_clips_instead_of_wrapping() -> None:
    black = np.zeros((64, 64, 3), np.uint8)
    out = apply_attack(black, "gaussian_noise", std=0.1, seed=0)
    assert out.max() < 128  # a wrap-around would put negative noise near 255
    # about half of the noise is negative (plus what rounds down to 0)
    assert 0.45 < (out == 0).mean() < 0.56


def test_gaussian_noise_seeds() -> None:
    a = apply_attack(IMG, "gaussian_noise", std=0.05, seed=1)
    np.testing.assert_array_equal(a, apply_attack(IMG, "gaussian_noise", std=0.05, seed=1))
    assert not np.array_equal(a, apply_attack(IMG, "gaussian_noise", std=0.05, seed=2))


@pytest.mark.parametrize(("amount", "count"), [(0.1, 410), (0.0105, 43), (1.0, 4096)])
def test_salt_and_pepper_replaces_exact_fraction(amount: float, count: int) -> None:
    out = apply_attack(GRAY, "salt_and_pepper", amount=amount, seed=5)
    salt = (out == 255).all(axis=-1)
    pepper = (out == 0).all(axis=-1)
    untouched = (out == 128).all(axis=-1)
    assert salt.sum() == count // 2
    assert pepper.sum() == count - count // 2
    assert (salt | pepper | untouched).all()  # whole pixels change, all three channels


def test_salt_and_pepper_seeds() -> None:
    a = apply_attack(IMG, "salt_and_pepper", amount=0.05, seed=1)
    np.testing.assert_array_equal(a, apply_attack(IMG, "salt_and_pepper", amount=0.05, seed=1))
    assert not np.array_equal(a, apply_attack(IMG, "salt_and_pepper", amount=0.05, seed=2))


# --- resampling and quantization ---------------------------------------------------------------


def test_pixelize_blocks_are_block_means() -> None:
    img = _image(64, 64, seed=4)
    out = apply_attack(img, "pixelize", ratio=0.25)
    assert out.shape == img.shape
    means = img.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(out[::4, ::4], 4, 0), 4, 1))
    assert np.abs(out[::4, ::4] - means).max() <= 0.5 + 1e-9


def test_pixelize_non_integer_ratio_keeps_size() -> None:
    out = apply_attack(IMG, "pixelize", ratio=0.13)
    assert out.shape == IMG.shape
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 13 * 10


@pytest.mark.parametrize("colors", [2, 5, 16, 256])
def test_color_quantize_palette_size(colors: int) -> None:
    out = apply_attack(IMG, "color_quantize", colors=colors)
    assert out.shape == IMG.shape
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= colors


def test_color_quantize_keeps_an_image_with_few_colours() -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    img = palette[rng.integers(0, 4, (32, 48))]
    np.testing.assert_array_equal(apply_attack(img, "color_quantize", colors=4), img)
    assert not np.array_equal(apply_attack(IMG, "color_quantize", colors=8), IMG)


# --- erasing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("area", "ratio", "x", "y", "box"),
    [
        # torchvision geometry with ratio = w / h: w = round(sqrt(a*W*H*r)), h = round(sqrt(a*W*H/r))
        (0.25, 1.0, 0.0, 0.0, (0, 0, 45, 45)),  # (top, left, h, w)
        (0.25, 4.0, 1.0, 1.0, (80 - 22, 100 - 89, 22, 89)),
        (0.25, 1.0, 0.5, 0.5, (18, 28, 45, 45)),  # round(17.5) = 18, round(27.5) = 28
        (1.0, 1.0, 0.5, 0.5, (0, 6, 80, 89)),  # clamped to the image height
    ],
)
def test_random_erasing_geometry(
    area: float, ratio: float, x: float, y: float, box: tuple[int, int, int, int]
) -> None:
    out = apply_attack(IMG, "random_erasing", area=area, ratio=ratio, x=x, y=y, fill=[0, 255, 0])
    top, left, h, w = box
    expected = IMG.copy()
    expected[top : top + h, left : left + w] = (0, 255, 0)
    np.testing.assert_array_equal(out, expected)


def test_random_drop_keeps_one_rectangle() -> None:
    out = apply_attack(IMG, "random_drop", ratio=0.25, x=1.0, y=0.0, fill=(7, 7, 7))
    assert out.shape == IMG.shape
    expected = np.full_like(IMG, 7)
    expected[0:40, 50:100] = IMG[0:40, 50:100]
    np.testing.assert_array_equal(out, expected)
    assert (apply_attack(IMG, "random_drop", ratio=0.0) == 0).all()


# --- identities, strengths, validation, drawing -----------------------------------------------


@pytest.mark.parametrize("name", [n for n in deg.__all__ if get_attack(n).identity is not None])
def test_identity_parameters_give_the_same_image(name: str) -> None:
    spec = get_attack(name)
    params = spec.draw(np.random.default_rng(0), spec.identity)
    np.testing.assert_array_equal(spec.apply(IMG, params), IMG)


@pytest.mark.parametrize(
    ("name", "params", "strength"),
    [
        ("jpeg", {"quality": 25}, 0.75),
        ("webp", {"quality": 100}, 0.0),
        ("gaussian_blur", {"radius": 4.0}, 0.2),
        ("gaussian_blur", {"radius": 40.0}, 1.0),
        ("gaussian_blur_kernel", {"sigma": 1.0}, 0.05),
        ("median_filter", {"size": 31}, 1.0),
        ("median_filter", {"size": 7}, 0.2),
        ("gaussian_noise", {"std": 0.1}, 0.5),
        ("salt_and_pepper", {"amount": 0.05}, 0.05),
        ("pixelize", {"ratio": 0.25}, 0.75),
        ("color_quantize", {"colors": 256}, 0.0),
        ("color_quantize", {"colors": 2}, 0.875),
        ("random_erasing", {"area": 0.25}, 0.25),
        ("random_drop", {"ratio": 0.6}, 0.4),
    ],
)
def test_strength(name: str, params: dict, strength: float) -> None:
    assert get_attack(name).strength(params) == pytest.approx(strength)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("jpeg", {"qualty": 50}),  # unknown
        ("jpeg", {"quality": 101}),  # out of range
        ("jpeg", {"quality": -1}),
        ("jpeg", {"quality": 50.5}),  # wrong type
        ("jpeg", {"quality": "high"}),
        ("webp", {"quality": True}),
        ("gaussian_blur", {"radius": -1.0}),
        ("gaussian_blur_kernel", {"kernel_size": 4}),  # even
        ("gaussian_blur_kernel", {"kernel_size": 101}),
        ("gaussian_blur_kernel", {"sigma": 0.0}),
        ("median_filter", {"size": 6}),
        ("gaussian_noise", {"std": 1.5}),
        ("gaussian_noise", {"seed": -1}),
        ("gaussian_noise", {"seed": 1.5}),
        ("salt_and_pepper", {"amount": 2.0}),
        ("pixelize", {"ratio": 0.0}),
        ("color_quantize", {"colors": 1}),
        ("color_quantize", {"colors": 257}),
        ("random_erasing", {"fill": [0, 0]}),
        ("random_erasing", {"ratio": 20.0}),
        ("random_drop", {"fill": [0, 0, -1]}),
        ("random_drop", {"x": 2.0}),
    ],
)
def test_bad_parameters_raise(name: str, params: dict) -> None:
    with pytest.raises(AttackParameterError):
        apply_attack(IMG, name, **params)


@pytest.mark.parametrize(
    ("name", "config", "random_names"),
    [
        ("gaussian_noise", {"std": {"uniform": [0.02, 0.1]}}, ("seed",)),
        ("salt_and_pepper", {}, ("seed",)),
        ("random_erasing", {"area": 0.2}, ("x", "y")),
        ("random_drop", {}, ("x", "y")),
    ],
)
def test_draw_is_reproducible_and_fills_random_params(
    name: str, config: dict, random_names: tuple[str, ...]
) -> None:
    spec = get_attack(name)
    ctx = SampleContext(height=80, width=100)
    first = spec.draw(np.random.default_rng(11), config, ctx)
    assert first == spec.draw(np.random.default_rng(11), config, ctx)
    assert first != spec.draw(np.random.default_rng(12), config, ctx)
    for pname in random_names:
        assert first[pname] != spec.defaults[pname]
    if "seed" in first:
        assert isinstance(first["seed"], int)
        assert 0 <= first["seed"] < 2**31
    np.testing.assert_array_equal(spec.apply(IMG, first), spec.apply(IMG, first))


def test_registered_functions_are_the_module_functions() -> None:
    for name in deg.__all__:
        spec = get_attack(name)
        assert spec.func is getattr(deg, name)
        assert spec.family == "degradation"
        assert spec.description
