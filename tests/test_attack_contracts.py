"""One conformance check run on every registered attack (discovered from the registry)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracemark import attacks
from tracemark.errors import AttackError, AttackParameterError, UnsupportedImageError

NAMES = attacks.attack_names()
EXPECTED = {
    # the minimum list, by catalogue name
    "jpeg", "webp", "resize", "center_crop", "random_crop", "resized_crop", "rotate", "hflip",
    "vflip", "perspective", "pad", "gaussian_blur", "median_filter", "gaussian_noise",
    "salt_and_pepper", "brightness", "contrast", "saturation", "hue", "gamma", "sharpness",
    "grayscale", "random_erasing", "text_overlay", "emoji_overlay", "image_overlay", "insert",
    "pixelize", "screenshot", "vignette", "color_quantize", "compose",
}


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


def test_registry_has_the_required_attacks() -> None:
    missing = EXPECTED - set(NAMES)
    assert not missing, f"missing attacks: {sorted(missing)}"


def test_every_family_is_used() -> None:
    assert {str(s.family) for s in attacks.list_attacks()} == {f.value for f in attacks.Family}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(16, 120), w=st.integers(16, 120))
def test_attack_contract(name: str, seed: int, h: int, w: int) -> None:
    spec = attacks.get_attack(name)
    image = _image(seed, h, w)
    before = image.copy()
    ctx = attacks.SampleContext.for_image(image)
    params = spec.draw(np.random.default_rng(seed), {}, ctx)
    # drawing is reproducible under a seed
    assert params == spec.draw(np.random.default_rng(seed), {}, ctx)
    out = spec.apply(image, params)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 1 and out.shape[1] >= 1
    assert np.array_equal(image, before), "attack modified its input in place"
    # deterministic given the parameters (the replay guarantee)
    assert np.array_equal(out, attacks.apply_attack(image, name, **params))
    s = spec.strength(params)
    assert 0.0 <= s <= 1.0
    if spec.identity is not None:
        ident = spec.apply(image, spec.identity)
        assert np.array_equal(ident, image), f"{name} at {spec.identity} is not the identity"
        assert spec.strength(spec.identity) == 0.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 1)])
def test_tiny_images_give_an_image_or_a_typed_error(name: str, shape: tuple[int, int]) -> None:
    spec = attacks.get_attack(name)
    image = _image(0, *shape)
    params = spec.draw(np.random.default_rng(0), {}, attacks.SampleContext.for_image(image))
    try:
        out = spec.apply(image, params)
    except AttackError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_rejected(name: str) -> None:
    with pytest.raises(AttackParameterError, match="unknown parameter"):
        attacks.apply_attack(_image(0, 16, 16), name, no_such_param=1)


@pytest.mark.parametrize("bad", [None, [[1, 2]], np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((0, 8, 3), np.uint8), "img.png"])
def test_bad_image_is_a_typed_error(bad: object) -> None:
    with pytest.raises(UnsupportedImageError):
        attacks.apply_attack(bad, "jpeg", quality=50)  # type: ignore[arg-type]


def test_unknown_attack_names_the_known_ones() -> None:
    with pytest.raises(attacks.get_attack.__globals__["UnknownAttackError"], match="known attacks"):
        attacks.get_attack("nope")


def test_random_specifications_resolve_reproducibly() -> None:
    rng = np.random.default_rng
    assert attacks.resolve_random({"uniform": [2, 2]}, rng(0)) == 2.0
    assert attacks.resolve_random(5, rng(0)) == 5
    v = attacks.resolve_random({"randint": [1, 3]}, rng(1))
    assert v in (1, 2, 3) and v == attacks.resolve_random({"randint": [1, 3]}, rng(1))
    assert attacks.resolve_random({"choice": ["a"]}, rng(0)) == "a"
    assert 1 <= attacks.resolve_random({"loguniform": [1, 10]}, rng(0)) <= 10
    for bad in ({"uniform": [3, 1]}, {"choice": []}, {"loguniform": [0, 1]}, {"uniform": "x"}):
        with pytest.raises(AttackParameterError):
            attacks.resolve_random(bad, rng(0))


def test_validation_rejects_random_spec_and_wrong_types() -> None:
    spec = attacks.get_attack("jpeg")
    with pytest.raises(AttackParameterError, match="draw parameters first"):
        spec.validate({"quality": {"uniform": [10, 20]}})
    for bad in ("50", 50.5, True, None, 101, -1, float("nan")):
        with pytest.raises(AttackParameterError):
            spec.validate({"quality": bad})
    assert spec.validate({"quality": 50.0}) == {"quality": 50}
