"""``lattice`` v2: every mark reads back or is refused, on the images that defeated v1.

The images are generated here: a dot screen and a woven texture (periodic content that
captured v1's synchronisation), strips (a 1000 x 150 banner, a 131 x 997 crop), saturated
flat art (white background, black and blue shapes) and a black frame. v2 marks must be
found as written and after a JPEG 75 round trip; v1 marks must still be read by v2.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tracemark import watermark
from tracemark.errors import WatermarkEmbedError
from tracemark.imageio import encode_image, load_image
from tracemark.watermark import ours

KEY = b"tracemark-v2-test-key-0123456789"


def _photo(h: int, w: int) -> np.ndarray:
    """A photo-like image: smooth gradients, edges and fine texture (seeded)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 110 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + 30 * np.tanh((xx - w / 2) / 40.0)
    img = np.dstack([base, base * 0.9 + 20, 200 - base * 0.5])
    img += cv2.GaussianBlur(rng.normal(0, 18, (h, w, 3)).astype(np.float32), (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _dot_screen(h: int = 512, w: int = 512, pitch: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    on = np.hypot(yy % pitch - pitch / 2, xx % pitch - pitch / 2) < pitch * 0.35
    v = (on * 180 + 40).astype(np.uint8)
    return np.dstack([v, (v * 0.8).astype(np.uint8), np.full_like(v, 30)])


def _fabric(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:h, 0:w]
    v = 128 + 60 * np.sin(xx * 2 * np.pi / 7.0) * np.sin(yy * 2 * np.pi / 7.0)
    v = v + rng.normal(0, 5, (h, w))
    return np.dstack([np.clip(v, 0, 255).astype(np.uint8)] * 3)


def _flat_art(h: int = 512, w: int = 512) -> np.ndarray:
    im = np.full((h, w, 3), 255, np.uint8)
    cv2.circle(im, (200, 250), 120, (0, 0, 0), -1)
    cv2.rectangle(im, (330, 60), (480, 200), (20, 90, 200), -1)
    return im


CASES = {
    "dot screen": _dot_screen,
    "woven texture": _fabric,
    "banner 1000x150": lambda: _photo(150, 1000),
    "strip 131x997": lambda: _photo(997, 131),
    "saturated flat art": _flat_art,
    "black frame": lambda: np.zeros((400, 400, 3), np.uint8),
}


@pytest.fixture(scope="module")
def v2() -> watermark.WatermarkMethod:
    return watermark.get_method("lattice")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_mark_reads_back_as_written_and_after_jpeg(v2, case: str) -> None:
    image = CASES[case]()
    payload = 0x5EED_0000_0000_0000 | len(case)
    marked = v2.embed(image, payload, KEY)
    assert marked.shape == image.shape and marked.dtype == np.uint8
    found = v2.detect(marked, KEY)
    assert found.present and found.payload_int == payload, found.details
    jpeg = load_image(encode_image(marked, "JPEG", quality=75))
    again = v2.detect(jpeg, KEY)
    assert again.present and again.payload_int == payload, again.details
    assert v2.detect(image, KEY).present is False  # the unmarked image is not


def test_periodic_content_no_longer_captures_the_synchronisation(v2) -> None:
    """v1 locks onto the dot screen's own lattice; v2 reads the same marked pixels."""
    v1 = watermark.get_method("lattice-v1")
    marked = v1.embed(_dot_screen(), 99, KEY)
    assert not v1.detect(marked, KEY).present
    found = v2.detect(marked, KEY)
    assert found.present and found.payload_int == 99
    assert found.details["periodic_content_suppressed"] is True


def test_v1_marks_are_read_by_v2_and_unchanged_when_no_adaptation_is_needed(v2) -> None:
    v1 = watermark.get_method("lattice-v1")
    image = _photo(480, 640)
    old = v1.embed(image, 1234, KEY)
    assert v2.detect(old, KEY).payload_int == 1234
    # the same mark: where the first attempt reads back, v2 writes v1's pixels
    assert np.array_equal(v2.embed(image, 1234, KEY), old)


def test_a_mark_that_cannot_read_back_is_refused_with_the_reason(monkeypatch) -> None:
    monkeypatch.setattr(ours, "ADAPTATIONS", ((0.0, False),))
    strict = ours.LatticeWatermark(size_prior=False)  # v1's detector, one attempt
    with pytest.raises(WatermarkEmbedError, match="does not read back") as info:
        strict.embed(_dot_screen(), 7, KEY)
    assert "40.5 dB" in info.value.message


def test_verification_can_be_turned_off(v2) -> None:
    fast = watermark.get_method("lattice", verify=False)
    image = _photo(300, 400)
    assert np.array_equal(fast.embed(image, 5, KEY), v2.embed(image, 5, KEY))


def test_a_strong_adaptation_stays_within_the_psnr_floor() -> None:
    from tracemark.metrics import psnr

    image = _flat_art()
    marked = watermark.get_method("lattice").embed(image, 11, KEY)
    assert psnr(image, marked) >= ours.MIN_ADAPTED_PSNR - 3.0  # mark + headroom shift


@pytest.mark.parametrize("angle", [1.0, 5.0, -7.0])
def test_the_size_prior_never_hides_a_small_rotation(v2, angle: float) -> None:
    """A rotation of a few degrees keeps the image's size: the lattice expected from the
    size must not stand in for the rotated one found by the search (a regression seen in
    the benchmark: rotation 5 degrees dropped to 0)."""
    from tracemark import attacks

    marked = v2.embed(_photo(512, 512), 31337, KEY)
    found = v2.detect(attacks.apply_attack(marked, "rotate", angle=angle), KEY)
    assert found.present and found.payload_int == 31337, found.details
