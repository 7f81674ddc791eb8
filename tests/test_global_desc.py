"""The VLAD global descriptor (tracemark.fingerprint.global_desc).

Retrieval is checked on corpus photos outside the model's training half: an edited copy
must be more similar to its source than to every other reference.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from tests.conftest import corpus_images
from tracemark.attacks.degradation import jpeg
from tracemark.attacks.geometric import rotate
from tracemark.errors import ConfigError, ImageTooSmallError
from tracemark.fingerprint import get_fingerprinter, list_fingerprinters
from tracemark.fingerprint.global_desc import (
    DIM,
    REGIONS,
    GlobalDescriptorError,
    VladModel,
    default_model,
    describe,
    describe_features,
    describe_regions,
    fit_model,
    in_training_half,
)
from tracemark.fingerprint.local import extract
from tracemark.imageio import load_image


def _synthetic(seed: int = 0, size: tuple[int, int] = (300, 400)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(80):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.circle(img, (x, y), int(rng.integers(3, 25)), colour, -1)
    return img


@pytest.fixture(scope="module")
def held_out(corpus_dir: object) -> list[np.ndarray]:
    """24 photos the model was not trained on."""
    paths = [p for p in corpus_images("photo") if not in_training_half(p)]
    return [load_image(p) for p in paths[::2][:24]]


@pytest.fixture(scope="module")
def reference_rows(held_out: list[np.ndarray]) -> np.ndarray:
    return np.stack([describe_regions(img) for img in held_out])  # (n, R, D)


def test_shape_norm_dtype_and_determinism() -> None:
    img = _synthetic()
    v = describe(img)
    assert v.shape == (DIM,) and v.dtype == np.float32
    assert math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-5)
    rows = describe_regions(img)
    assert rows.shape == (len(REGIONS), DIM) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert np.allclose(rows[0], v, atol=1e-5)  # BLAS blocking may differ by row count
    assert np.array_equal(describe_regions(img), rows)
    both = describe_regions(img, mirror=True)
    assert both.shape == (2 * len(REGIONS), DIM)
    # The mirrored rows describe the flipped image: close to describing it directly.
    flipped = describe(np.ascontiguousarray(img[:, ::-1]))
    # (not equal: the 1000 features kept may differ slightly between the two images)
    assert float(both[len(REGIONS)] @ flipped) > 0.7
    assert float(both[len(REGIONS)] @ flipped) > float(rows[0] @ flipped) + 0.3


def test_featureless_regions_are_zero_rows() -> None:
    rows = describe_regions(np.full((100, 100, 3), 40, np.uint8))
    assert not rows.any()


def test_fingerprinter_is_registered() -> None:
    assert "vlad" in list_fingerprinters()
    fp = get_fingerprinter("vlad")
    assert (fp.kind, fp.dim, fp.metric) == ("float", DIM, "ip")
    a = fp.compute(_synthetic(1))
    assert a.name == "vlad" and a.vector.shape == (DIM,) and 0 < a.quality <= 1
    assert fp.distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = fp.compute(_synthetic(2))
    assert 0.3 < fp.distance(a, b) <= 2.0
    with pytest.raises(GlobalDescriptorError):
        fp.compute(np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(ImageTooSmallError):
        fp.compute(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("regions", [(), ((0.5, 0.0, 0.4, 1.0),), ((0.0, 0.0, 1.2, 1.0),), "whole"])
def test_bad_regions(regions: object) -> None:
    with pytest.raises(ConfigError):
        describe_regions(_synthetic(), regions=regions)  # type: ignore[arg-type]


def test_describe_features_needs_sift() -> None:
    with pytest.raises(GlobalDescriptorError):
        describe_features(extract(_synthetic(), kind="orb"))


def test_model_round_trip_and_corrupt_bytes() -> None:
    m = default_model()
    assert m.dim == DIM and m.centroids.shape == (32, 64)
    again = VladModel.from_bytes(m.to_bytes())
    assert np.array_equal(again.vlad_proj, m.vlad_proj) and again.info == m.info
    with pytest.raises(GlobalDescriptorError):
        VladModel.from_bytes(b"not an npz")
    with pytest.raises(GlobalDescriptorError):
        VladModel(m.desc_mean[:5], m.desc_proj, m.centroids, m.vlad_mean, m.vlad_proj)


def test_fit_model_small() -> None:
    feats = [extract(_synthetic(s), max_features=300) for s in range(3)]
    desc = np.vstack([f.descriptors for f in feats])
    m = fit_model(desc, feats, k=4, d=8, dim=8)
    assert m.centroids.shape == (4, 8) and m.vlad_proj.shape == (32, 8)
    v = describe(_synthetic(0), model=m)
    assert v.shape == (8,) and math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-5)
    with pytest.raises(ConfigError):
        fit_model(desc[:2], feats, k=4, d=8, dim=8)


def _crop(img: np.ndarray, area: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(h * math.sqrt(area)), int(w * math.sqrt(area))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img[y0 : y0 + ch, x0 : x0 + cw]


@pytest.mark.parametrize("edit", ["crop30", "rot15", "jpeg30", "hflip", "hue"])
def test_edited_copy_is_nearest(
    edit: str, held_out: list[np.ndarray], reference_rows: np.ndarray
) -> None:
    """Most edited copies rank their source first, by a clear margin on median."""
    rng = np.random.default_rng(7)
    margins = []
    for i in range(0, len(held_out), 3):
        img = held_out[i]
        if edit == "crop30":
            q = _crop(img, 0.3, rng)
        elif edit == "rot15":
            q = rotate(img, angle=15.0)
        elif edit == "jpeg30":
            q = jpeg(img, quality=30)
        elif edit == "hflip":
            q = np.ascontiguousarray(img[:, ::-1])
        else:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + 60) % 180
            q = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        rows = describe_regions(q, mirror=True)
        sims = np.einsum("qd,nrd->nqr", rows, reference_rows).max(axis=(1, 2))
        margins.append(sims[i] - np.delete(sims, i).max())
    margins_a = np.array(margins)
    assert np.mean(margins_a > 0) >= 0.75
    assert np.median(margins_a) > 0.1
