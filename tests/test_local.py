"""Local features and geometric verification (tracemark.fingerprint.local).

Oracles: the known geometry of each edit (crop box, flip, rotation matrix, paste box),
against which the fitted transform and regions are compared.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from tests.conftest import corpus_images
from tracemark.attacks.degradation import jpeg
from tracemark.attacks.geometric import rotate
from tracemark.errors import ConfigError, CorruptImageError, TracemarkError
from tracemark.fingerprint.local import (
    GRID,
    LocalFeatureError,
    LocalFeatures,
    extract,
    mirrored,
    verify,
)
from tracemark.imageio import load_image

# Decision threshold this suite guards: unrelated corpus pairs stay below it.
UNRELATED_MAX = 6
MIN_TRUE_INLIERS = 15


def _synthetic(seed: int = 0, size: tuple[int, int] = (300, 400)) -> np.ndarray:
    """Random rectangles and circles: plenty of corners and blobs."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(
                img,
                (x, y),
                (x + int(rng.integers(8, 60)), y + int(rng.integers(8, 60))),
                colour,
                -1,
            )
        else:
            cv2.circle(img, (x, y), int(rng.integers(4, 30)), colour, -1)
    return img


@pytest.fixture(scope="module")
def photos(corpus_dir: object) -> list[np.ndarray]:
    """Eight textured corpus photos (every 15th photo file)."""
    return [load_image(p) for p in corpus_images("photo")[::15][:8]]


@pytest.fixture(scope="module")
def photo_features(photos: list[np.ndarray]) -> list[LocalFeatures]:
    return [extract(p) for p in photos]


def _box(x0: float, y0: float, w: float, h: float) -> np.ndarray:
    return np.array(
        [
            [x0 - 0.5, y0 - 0.5],
            [x0 + w - 0.5, y0 - 0.5],
            [x0 + w - 0.5, y0 + h - 0.5],
            [x0 - 0.5, y0 + h - 0.5],
        ]
    )


def _map(t: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.c_[xy, np.ones(len(xy))] @ t.T
    return p[:, :2] / p[:, 2:]


# --- extraction ---------------------------------------------------------------------


@pytest.mark.parametrize("kind, dim", [("sift", 128), ("orb", 32)])
def test_extract_shapes_and_bounds(kind: str, dim: int) -> None:
    img = _synthetic()
    f = extract(img, kind=kind, max_features=300)  # type: ignore[arg-type]
    assert 50 <= len(f) <= 300
    assert f.xy.dtype == np.float32 and f.xy.shape == (len(f), 2)
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (len(f), dim)
    assert (f.width, f.height) == (400, 300)
    assert f.xy[:, 0].min() >= -0.5 and f.xy[:, 0].max() <= 399.5
    assert f.xy[:, 1].min() >= -0.5 and f.xy[:, 1].max() <= 299.5
    if kind == "sift":
        assert f.descriptors.max() <= 15


def test_coordinates_are_in_original_pixels() -> None:
    """Extracting a 2x upscaled image (shrunk back internally) gives ~2x the positions."""
    img = _synthetic(1, (240, 320))
    big = cv2.resize(img, (640 * 2, 480 * 2), interpolation=cv2.INTER_CUBIC)
    small = extract(cv2.resize(img, (640, 480), interpolation=cv2.INTER_CUBIC))
    large = extract(big, max_side=640)
    assert (large.width, large.height) == (1280, 960)
    v = verify(large, small, flips=False)
    assert v.inliers >= MIN_TRUE_INLIERS
    assert np.allclose(v.transform[:2, :2], np.eye(2) * 0.5, atol=0.01)


def test_prefix_equals_smaller_extraction_and_is_spread() -> None:
    img = _synthetic(2)
    full = extract(img, max_features=400)
    small = extract(img, max_features=60)
    head = full.head(60)
    assert np.array_equal(head.xy, small.xy) and np.array_equal(head.descriptors, small.descriptors)

    def cells(f: LocalFeatures) -> set[tuple[int, int]]:
        return {(int(x * GRID / 400), int(y * GRID / 300)) for x, y in f.xy}

    # Round robin over the cells: 60 >= 36 features reach every cell that has any.
    assert cells(head) == cells(full)


def test_flat_image_has_no_features() -> None:
    f = extract(np.full((64, 64, 3), 90, np.uint8))
    assert len(f) == 0
    v = verify(f, extract(_synthetic()))
    assert v.inliers == 0 and v.transform is None and v.kind == "none"


# --- serialisation ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_serialisation_round_trip(kind: str) -> None:
    f = extract(_synthetic(3), kind=kind)  # type: ignore[arg-type]
    g = LocalFeatures.from_bytes(f.to_bytes())
    assert g.kind == f.kind and (g.width, g.height) == (f.width, f.height)
    for name in ("xy", "descriptors", "scale", "angle"):
        a, b = getattr(f, name), getattr(g, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_serialised_size_of_500_sift_features(photo_features: list[LocalFeatures]) -> None:
    sizes = [len(f.to_bytes()) for f in photo_features if len(f) == 500]
    assert sizes and max(sizes) <= 34_000  # 4-bit RootSIFT carries ~3.5 bits of entropy per bin


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"TMLF",
        b"XXXX" + bytes(20),
        b"TMLF\x09" + bytes(20),
        b"TMLF\x01\x00\x00\x00" + bytes(12) + b"garbage",
    ],
)
def test_from_bytes_rejects_bad_bytes(data: bytes) -> None:
    with pytest.raises(LocalFeatureError):
        LocalFeatures.from_bytes(data)


def test_from_bytes_rejects_truncated_payload() -> None:
    blob = extract(_synthetic(4)).to_bytes()
    with pytest.raises(LocalFeatureError):
        LocalFeatures.from_bytes(blob[:-10])
    with pytest.raises(LocalFeatureError):
        LocalFeatures.from_bytes("not bytes")  # type: ignore[arg-type]


# --- bad input ----------------------------------------------------------------------


def test_bad_arguments_are_typed() -> None:
    img = _synthetic()
    with pytest.raises(ConfigError):
        extract(img, kind="surf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        extract(img, max_features=0)
    with pytest.raises(ConfigError):
        extract(img, max_side=8)
    with pytest.raises(CorruptImageError):
        extract(b"definitely not an image")
    sift, orb = extract(img), extract(img, kind="orb")
    with pytest.raises(LocalFeatureError):
        verify(sift, orb)
    with pytest.raises(LocalFeatureError):
        verify(sift, "features")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        verify(sift, sift, ratio=1.5)
    with pytest.raises(LocalFeatureError):
        mirrored(orb)
    with pytest.raises(LocalFeatureError):
        LocalFeatures(np.zeros((3, 2), np.float64), np.zeros((3, 128), np.uint8), "sift", 10, 10)
    with pytest.raises(LocalFeatureError):
        LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((2, 128), np.uint8), "sift", 10, 10)
    assert issubclass(LocalFeatureError, TracemarkError)


# --- verification against known geometry ----------------------------------------------


def test_crop_to_30_percent_maps_onto_its_box(
    photos: list[np.ndarray], photo_features: list[LocalFeatures]
) -> None:
    rng = np.random.default_rng(5)
    for img, ref in zip(photos, photo_features, strict=True):
        h, w = img.shape[:2]
        ch, cw = int(h * math.sqrt(0.3)), int(w * math.sqrt(0.3))
        x0, y0 = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        v = verify(extract(img[y0 : y0 + ch, x0 : x0 + cw]), ref)
        assert v.inliers >= MIN_TRUE_INLIERS and not v.flipped
        assert np.abs(v.region - _box(x0, y0, cw, ch)).max() < 3.0
        assert v.inlier_ratio > 0.2


def test_flip_is_found_through_the_mirror(
    photos: list[np.ndarray], photo_features: list[LocalFeatures]
) -> None:
    img, ref = photos[0], photo_features[0]
    h, w = img.shape[:2]
    query = extract(img[:, ::-1])
    plain = verify(query, ref, flips=False)
    v = verify(query, ref)
    assert plain.inliers <= UNRELATED_MAX
    assert v.flipped and v.inliers >= 100
    assert np.linalg.det(v.transform[:2, :2]) < 0
    pts = np.array([[0.0, 0.0], [w - 1.0, h - 1.0], [100.0, 50.0]])
    expected = np.c_[w - 1 - pts[:, 0], pts[:, 1]]
    assert np.abs(_map(v.transform, pts) - expected).max() < 2.0


def test_orb_flip_needs_mirror_extraction(photos: list[np.ndarray]) -> None:
    img = photos[1]
    ref = extract(img, kind="orb")
    v = verify(extract(img[:, ::-1], kind="orb", mirror=True), ref)
    assert v.flipped and v.inliers >= 50


def test_rotation_matches_the_rotation_matrix(
    photos: list[np.ndarray], photo_features: list[LocalFeatures]
) -> None:
    img, ref = photos[2], photo_features[2]
    h, w = img.shape[:2]
    v = verify(extract(jpeg(rotate(img, angle=15.0), quality=50)), ref)
    assert v.inliers >= 50
    # rotate() maps source -> output with M = [[c, s, .], [-s, c, .]] about the centre.
    c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    fwd = np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0, 0, 1]])
    pts = np.array([[cx, cy], [cx + 100, cy + 40], [cx - 80, cy - 60]])
    assert np.abs(_map(v.transform, _map(fwd, pts)) - pts).max() < 2.5


def test_inset_is_located_in_the_query(
    photos: list[np.ndarray], photo_features: list[LocalFeatures]
) -> None:
    img, ref = photos[3], photo_features[3]
    canvas = photos[4].copy()
    ih, iw = int(img.shape[0] * 0.5), int(img.shape[1] * 0.5)
    x0, y0 = 30, 20
    canvas[y0 : y0 + ih, x0 : x0 + iw] = cv2.resize(img, (iw, ih), interpolation=cv2.INTER_AREA)
    v = verify(extract(canvas), ref)
    assert v.inliers >= MIN_TRUE_INLIERS
    assert np.abs(v.query_region - _box(x0, y0, iw, ih)).max() < 4.0


def test_unrelated_pairs_stay_below_the_threshold(
    photos: list[np.ndarray], photo_features: list[LocalFeatures]
) -> None:
    queries = [extract(jpeg(p, quality=80)) for p in photos]
    inliers = [
        verify(q, r).inliers
        for i, q in enumerate(queries)
        for j, r in enumerate(photo_features)
        if i != j
    ]
    assert len(inliers) == 56
    assert max(inliers) <= UNRELATED_MAX
    true = [verify(q, r).inliers for q, r in zip(queries, photo_features, strict=True)]
    assert min(true) >= 100
