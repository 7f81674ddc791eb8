"""The watermark interface: one conformance check over every registered method, and
tracemark's own method (round trip, wrong key, bad input, calibration on a reduced set)."""

from __future__ import annotations

import numpy as np
import pytest

from tracemark import watermark
from tracemark.errors import (
    ConfigError,
    ImageTooSmallError,
    MissingExtraError,
    PayloadError,
    TracemarkError,
    UnknownMethodError,
    WatermarkKeyError,
)
from tracemark.imageio import load_image

from .conftest import corpus_images

KEY = b"tracemark-test-key-0001"


def _method_or_skip(name: str) -> watermark.WatermarkMethod:
    wm = watermark.get_method(name)
    if wm.extra:
        try:
            wm.detect(np.zeros((300, 300, 3), np.uint8), KEY if wm.keyed else None)
        except MissingExtraError as exc:
            pytest.skip(f"the '{wm.extra}' extra is not installed: {exc}")
    return wm


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(p) for p in corpus_images("photo", 3)]


@pytest.mark.parametrize("name", watermark.list_methods())
def test_conformance(name: str, photos: list[np.ndarray], corpus_dir) -> None:
    """Every method: embed returns RGB uint8 of the same size, close to the input; detect
    of the marked image returns its payload bits; detect never raises on a clean image."""
    wm = _method_or_skip(name)
    key = KEY if wm.keyed else None
    img = photos[0]
    payload = (1 << (wm.payload_bits - 1)) | 0x5A5A5 % (1 << wm.payload_bits)
    marked = wm.embed(img, payload, key)
    assert marked.dtype == np.uint8 and marked.shape == img.shape
    assert not np.array_equal(marked, img)
    assert float(np.mean((marked.astype(float) - img) ** 2)) < 255**2 / 10**3.0  # PSNR > 30 dB
    found = wm.detect(marked, key)
    assert found.method == name
    expected = watermark.payload_to_bits(payload, wm.payload_bits)
    assert found.bits is not None and found.bits.shape == (wm.payload_bits,)
    assert np.mean(found.bits == expected) >= 0.9
    clean = wm.detect(img, key)
    assert isinstance(clean, watermark.Detection)
    if wm.calibrated:
        assert found.present and found.payload_int == payload
        assert 0.0 <= clean.p_value <= 1.0 and not clean.present
    # payload too long and key of the wrong type are typed errors for every method
    with pytest.raises(PayloadError):
        wm.embed(img, 1 << wm.payload_bits, key)
    with pytest.raises(WatermarkKeyError):
        wm.embed(img, 1, 12345)


def test_unknown_method() -> None:
    with pytest.raises(UnknownMethodError, match="known"):
        watermark.get_method("nope")


@pytest.fixture(scope="module")
def lattice() -> watermark.WatermarkMethod:
    return watermark.get_method("lattice")


def test_lattice_round_trip_quality_and_wrong_key(lattice, photos) -> None:
    from tracemark.metrics import psnr, ssim

    for i, img in enumerate(photos):
        payload = 0x0123456789ABCDEF ^ i
        marked = lattice.embed(img, payload, KEY)
        assert psnr(img, marked) > 40.0
        assert ssim(img, marked) > 0.95
        found = lattice.detect(marked, KEY)
        assert found.present and found.payload_int == payload and found.p_value < 1e-4
        other = lattice.detect(marked, b"another-key-entirely-0001")
        assert not other.present and other.payload is None


def test_lattice_survives_common_edits(lattice, photos) -> None:
    from tracemark import attacks

    img = photos[0]
    marked = lattice.embed(img, 42, KEY)
    for name, params in [("jpeg", {"quality": 70}), ("rotate", {"angle": 10.0}), ("hflip", {}),
                         ("center_crop", {"area": 0.5}), ("resize", {"scale": 0.6})]:
        found = lattice.detect(attacks.apply_attack(marked, name, **params), KEY)
        assert found.present and found.payload_int == 42, name


def test_lattice_payload_forms(lattice, photos) -> None:
    img = photos[1]
    for payload, expect in [(b"\x00\x01", 1), (b"abcdefgh", int.from_bytes(b"abcdefgh", "big")),
                            ([1, 0, 1], 5), (0, 0)]:
        found = lattice.detect(lattice.embed(img, payload, KEY), KEY)
        assert found.payload_int == expect
    for bad in (b"123456789", -1, 2**64, "text", 1.5, True, [2, 0], None):
        with pytest.raises(PayloadError):
            lattice.embed(img, bad, KEY)


def test_lattice_keys(lattice, photos) -> None:
    img = photos[1]
    for bad in (None, 123, b"short", "", ["k"], np.zeros(16, np.uint8)):
        with pytest.raises(WatermarkKeyError):
            lattice.embed(img, 1, bad)
    marked = lattice.embed(img, 7, "a passphrase")
    assert lattice.detect(marked, "a passphrase").payload_int == 7
    assert lattice.detect(marked, "a passphrasf").payload is None


def test_lattice_input_modes(lattice, photos) -> None:
    """Grayscale and RGBA inputs are documented conversions (RGB out); tiny images are refused
    by embed and reported not-found by detect; bad configuration is a ConfigError."""
    from PIL import Image

    gray = Image.fromarray(photos[0][..., 1]).convert("L")
    marked = lattice.embed(gray, 3, KEY)
    assert marked.shape == (gray.height, gray.width, 3)
    assert lattice.detect(marked, KEY).payload_int == 3
    rgba = Image.fromarray(photos[2]).convert("RGBA")
    assert lattice.detect(lattice.embed(rgba, 9, KEY), KEY).payload_int == 9
    with pytest.raises(ImageTooSmallError):
        lattice.embed(np.zeros((100, 400, 3), np.uint8), 1, KEY)
    small = lattice.detect(np.zeros((10, 10, 3), np.uint8), KEY)
    assert not small.present and small.p_value == 1.0
    flat = lattice.detect(np.full((300, 300, 3), 128, np.uint8), KEY)
    assert not flat.present
    with pytest.raises(ConfigError):
        watermark.get_method("lattice", psnr=5)
    with pytest.raises(ConfigError):
        lattice.detect(photos[0], KEY, alpha=0)
    with pytest.raises(TracemarkError):
        lattice.detect(b"not an image", KEY)


def test_lattice_calibration_reduced(lattice) -> None:
    """On clean images (attacked and not) and images marked with another key, the share of
    p-values below alpha stays below alpha (reduced size; the full check is
    benchmarks/bench_watermark_calibration.py)."""
    from tracemark import attacks

    paths = corpus_images("art", 40)[::2] + corpus_images("photo", 40)[::2]
    ps = []
    other = b"some-other-key-000000001"
    for i, p in enumerate(paths):
        img = load_image(p)
        ps.append(lattice.detect(img, KEY).p_value)
        ps.append(lattice.detect(attacks.apply_attack(img, "jpeg", quality=50), KEY).p_value)
        ps.append(lattice.detect(lattice.embed(img, i, other), KEY).p_value)
    ps = np.array(ps)
    assert ps.size == 120
    for alpha in (0.1, 0.05):
        assert np.mean(ps < alpha) <= alpha
