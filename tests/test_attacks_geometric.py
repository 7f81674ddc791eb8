"""Behaviour of the geometric attacks (tracemark.attacks.geometric) against independent oracles."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from skimage.transform import ProjectiveTransform

from tracemark.attacks import SampleContext, apply_attack, get_attack
from tracemark.attacks import geometric as geo
from tracemark.errors import AttackParameterError


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic RGB image with some texture, so that interpolation is testable."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    base = np.stack(
        [
            127 + 100 * np.sin(xx / 9.0 + yy / 23.0),
            127 + 100 * np.cos(yy / 7.0),
            255 * xx / max(1, width - 1),
        ],
        axis=-1,
    )
    base += rng.normal(0, 4, base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


IMG = _image(60, 100)  # H=60, W=100: non-square on purpose
SQUARE = _image(64, 64, seed=1)


# --- resize ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "size"), [(0.5, (30, 50)), (0.333, (20, 33)), (2.0, (120, 200)), (0.01, (1, 1))]
)
def test_resize_output_size(scale: float, size: tuple[int, int]) -> None:
    assert apply_attack(IMG, "resize", scale=scale).shape == (*size, 3)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "area"])
def test_resize_back_keeps_size_and_changes_pixels(interpolation: str) -> None:
    out = apply_attack(IMG, "resize", scale=0.25, back=True, interpolation=interpolation)
    assert out.shape == IMG.shape
    assert not np.array_equal(out, IMG)
    assert _mad(out, IMG) < 25  # a blurred copy, not garbage


def test_resize_nearest_matches_pil() -> None:
    ours = apply_attack(IMG, "resize", scale=0.5, interpolation="nearest")
    ref = np.array(PILImage.fromarray(IMG).resize((50, 30), PILImage.Resampling.NEAREST))
    np.testing.assert_array_equal(ours, ref)


def test_resize_bilinear_upscale_matches_pil() -> None:
    ours = apply_attack(IMG, "resize", scale=2.0, interpolation="bilinear")
    ref = np.array(PILImage.fromarray(IMG).resize((200, 120), PILImage.Resampling.BILINEAR))
    assert _mad(ours, ref) < 1.0


def test_resize_area_shrink_is_block_mean() -> None:
    ours = apply_attack(SQUARE, "resize", scale=0.25, interpolation="area").astype(np.float64)
    ref = SQUARE.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    assert np.abs(ours - ref).max() <= 0.5 + 1e-9


# --- crops --------------------------------------------------------------------------


@pytest.mark.parametrize(("area", "side"), [(0.5, 362), (0.1, 161), (0.25, 256), (1.0, 512)])
def test_center_crop_sizes_follow_stable_signature(area: float, side: int) -> None:
    img = np.zeros((512, 512, 3), np.uint8)
    # Stable Signature: int(side * sqrt(area)) per side
    assert side == int(512 * math.sqrt(area))
    assert apply_attack(img, "center_crop", area=area).shape == (side, side, 3)


def test_center_crop_content_is_the_centre() -> None:
    out = apply_attack(IMG, "center_crop", area=0.25)
    assert out.shape == (30, 50, 3)
    # torchvision offsets: round((side - kept) / 2)
    np.testing.assert_array_equal(out, IMG[15:45, 25:75])


def test_random_crop_positions() -> None:
    h, w = 30, 50
    np.testing.assert_array_equal(
        apply_attack(IMG, "random_crop", area=0.25, x=0.0, y=0.0), IMG[:h, :w]
    )
    np.testing.assert_array_equal(
        apply_attack(IMG, "random_crop", area=0.25, x=1.0, y=1.0), IMG[-h:, -w:]
    )
    np.testing.assert_array_equal(
        apply_attack(IMG, "random_crop", area=0.25, x=0.2, y=0.8), IMG[24 : 24 + h, 10 : 10 + w]
    )
    np.testing.assert_array_equal(
        apply_attack(IMG, "random_crop", area=0.3), apply_attack(IMG, "center_crop", area=0.3)
    )


def test_resized_crop_torchvision_geometry_on_square_image() -> None:
    # Tree-Ring: RandomResizedCrop(scale=0.75, ratio=0.75) on 512x512 -> a 384 x 512 (w x h) crop
    img = _image(512, 512, seed=2)
    out = apply_attack(img, "resized_crop", area=0.75, ratio=0.75, x=1.0, y=0.0)
    assert out.shape == img.shape
    ref = np.array(
        PILImage.fromarray(img)
        .crop((128, 0, 512, 512))
        .resize((512, 512), PILImage.Resampling.BILINEAR)
    )
    assert _mad(out, ref) < 1.0


def test_resized_crop_keeps_aspect_with_ratio_one() -> None:
    out = apply_attack(IMG, "resized_crop", area=0.25, ratio=1.0, x=0.0, y=0.0)
    ref = np.array(
        PILImage.fromarray(IMG[:30, :50]).resize((100, 60), PILImage.Resampling.BILINEAR)
    )
    assert out.shape == IMG.shape
    assert _mad(out, ref) < 1.0


def test_resized_crop_extreme_ratio_is_clamped() -> None:
    # w = round(100 * sqrt(5)) = 224 -> clamped to 100; h = round(60 * sqrt(0.05)) = 13;
    # top = round(0.5 * (60 - 13)) = 24
    out = apply_attack(IMG, "resized_crop", area=0.5, ratio=10.0)
    ref = np.array(PILImage.fromarray(IMG[24:37]).resize((100, 60), PILImage.Resampling.BILINEAR))
    assert out.shape == IMG.shape
    assert _mad(out, ref) < 1.0


# --- rotation and flips ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("angle", "k"), [(90.0, 1), (180.0, 2), (270.0, 3), (-90.0, 3), (360.0, 0)]
)
def test_rotate_quarter_turns_are_exact(angle: float, k: int) -> None:
    np.testing.assert_array_equal(apply_attack(SQUARE, "rotate", angle=angle), np.rot90(SQUARE, k))
    np.testing.assert_array_equal(
        apply_attack(IMG, "rotate", angle=angle, expand=True), np.rot90(IMG, k)
    )


def test_rotate_180_non_square_without_expand_is_exact() -> None:
    np.testing.assert_array_equal(apply_attack(IMG, "rotate", angle=180.0), IMG[::-1, ::-1])


def test_rotate_90_non_square_keeps_canvas_like_torchvision() -> None:
    out = apply_attack(IMG, "rotate", angle=90.0, fill=[9, 8, 7])
    assert out.shape == IMG.shape
    # the 100x60 rotated content, centred in the 60x100 canvas (offsets are whole pixels)
    expected = np.empty_like(IMG)
    expected[...] = (9, 8, 7)
    expected[:, 20:80] = np.rot90(IMG)[20:80, :]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("angle", [25.0, -33.3, 75.0, 4.0])
@pytest.mark.parametrize("expand", [False, True])
def test_rotate_matches_pil(angle: float, expand: bool) -> None:
    ours = apply_attack(IMG, "rotate", angle=angle, expand=expand)
    ref = np.array(
        PILImage.fromarray(IMG).rotate(angle, resample=PILImage.Resampling.BILINEAR, expand=expand)
    )
    assert ours.shape == ref.shape
    # away from the edges (which PIL and OpenCV antialias differently) at most rounding apart
    covered = apply_attack(np.full_like(IMG, 255), "rotate", angle=angle, expand=expand)[..., 0]
    interior = cv2.erode((covered == 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert interior.sum() > 0.5 * IMG.shape[0] * IMG.shape[1]
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))[interior]
    assert diff.max() <= 1


def test_rotate_fill_and_identity() -> None:
    out = apply_attack(SQUARE, "rotate", angle=45.0, fill=(255, 0, 0))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(apply_attack(IMG, "rotate", angle=0.0), IMG)
    np.testing.assert_array_equal(apply_attack(IMG, "rotate", angle=0.0, expand=True), IMG)


def test_flips() -> None:
    np.testing.assert_array_equal(apply_attack(IMG, "hflip"), np.fliplr(IMG))
    np.testing.assert_array_equal(apply_attack(IMG, "vflip"), np.flipud(IMG))
    assert apply_attack(IMG, "hflip").flags["C_CONTIGUOUS"]


# --- perspective ------------------------------------------------------------------------


def test_perspective_moves_points_like_the_homography() -> None:
    height, width = 80, 120
    corners = (0.3, -0.2, 0.5, 0.1, -1.0, 1.0, 0.2, 0.2)
    distortion = 0.1
    src = np.array(
        [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]]
    )
    dst = src + np.array(corners).reshape(4, 2) * distortion * np.array([width, height])
    transform = ProjectiveTransform.from_estimate(src, dst)
    assert transform
    for px, py in [(30, 20), (90, 60), (60, 40)]:
        img = np.zeros((height, width, 3), np.uint8)
        img[py - 1 : py + 2, px - 1 : px + 2] = 255
        out = apply_attack(img, "perspective", distortion=distortion, corners=corners)
        ys, xs = np.nonzero(out[..., 0].astype(np.float64) > 0)
        weights = out[ys, xs, 0].astype(np.float64)
        centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
        np.testing.assert_allclose(centroid, transform([[px, py]])[0], atol=0.5)


def test_perspective_inward_corners_leave_black_borders() -> None:
    img = np.full((50, 50, 3), 200, np.uint8)
    out = apply_attack(img, "perspective", distortion=0.2, corners=(1, 1, -1, 1, -1, -1, 1, -1))
    assert out.shape == img.shape
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[25, 25], [200, 200, 200])


def test_perspective_identity_and_degenerate() -> None:
    np.testing.assert_array_equal(
        apply_attack(IMG, "perspective", distortion=0.0, corners=[1.0] * 8), IMG
    )
    np.testing.assert_array_equal(apply_attack(IMG, "perspective", distortion=0.3), IMG)
    # top-left and top-right corners meet in the middle: the quadrilateral is degenerate
    collapsed = apply_attack(
        IMG, "perspective", distortion=0.5, corners=(1, 1, -1, 1, -1, -1, 1, -1)
    )
    assert not collapsed.any()


@pytest.mark.parametrize(
    "corners", [(0.1,) * 7, (0.1,) * 9, (1.5,) + (0.0,) * 7, ("a",) * 8, (float("nan"),) * 8]
)
def test_perspective_rejects_bad_corners(corners: tuple) -> None:
    with pytest.raises(AttackParameterError, match="corners"):
        apply_attack(IMG, "perspective", distortion=0.1, corners=corners)


# --- pad ---------------------------------------------------------------------------------


def test_pad_sizes_content_and_fill() -> None:
    out = apply_attack(IMG, "pad", left=0.2, right=0.2, top=0.5, fill=[1, 2, 3])
    assert out.shape == (60 + 30, 100 + 20 + 20, 3)
    np.testing.assert_array_equal(out[30:, 20:120], IMG)
    assert (out[:30] == [1, 2, 3]).all()
    assert (out[:, :20] == [1, 2, 3]).all()
    assert (out[:, 120:] == [1, 2, 3]).all()
    np.testing.assert_array_equal(apply_attack(IMG, "pad"), IMG)


# --- strengths, validation, drawing --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "strength"),
    [
        ("resize", {"scale": 0.1}, 1.0),
        ("resize", {"scale": 1.0}, 0.0),
        ("resize", {"scale": 2.0}, 1 / math.log2(10)),
        ("center_crop", {"area": 0.1}, 0.9),
        ("rotate", {"angle": 45.0}, 0.5),
        ("rotate", {"angle": 270.0}, 1.0),
        ("rotate", {"angle": -350.0}, 10 / 90),
        ("rotate", {"angle": 360.0}, 0.0),
        ("perspective", {"distortion": 0.25}, 0.5),
        ("pad", {"left": 0.2, "right": 0.2}, 0.4),
        ("pad", {"left": 1.0, "top": 1.0}, 1.0),
        ("hflip", {}, 1.0),
    ],
)
def test_strength(name: str, params: dict, strength: float) -> None:
    assert get_attack(name).strength(params) == pytest.approx(strength)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resize", {"size": 2}),  # unknown
        ("resize", {"scale": 0.0}),  # out of range
        ("resize", {"scale": 11.0}),
        ("resize", {"scale": "half"}),  # wrong type
        ("resize", {"interpolation": "cubic"}),  # not a choice
        ("resize", {"back": 1}),
        ("center_crop", {"area": 0.0}),
        ("center_crop", {"area": 1.5}),
        ("random_crop", {"x": 1.1}),
        ("resized_crop", {"ratio": 0.05}),
        ("rotate", {"angle": 400.0}),
        ("rotate", {"fill": [0, 0]}),
        ("rotate", {"fill": [0, 0, 256]}),
        ("rotate", {"fill": "black"}),
        ("perspective", {"distortion": 0.6}),
        ("perspective", {"corners": 0.5}),
        ("pad", {"left": -0.1}),
        ("pad", {"fill": [0.5, 0, 0]}),
        ("hflip", {"p": 1.0}),
    ],
)
def test_bad_parameters_raise(name: str, params: dict) -> None:
    with pytest.raises(AttackParameterError):
        apply_attack(IMG, name, **params)


@pytest.mark.parametrize(
    ("name", "config", "random_names"),
    [
        ("random_crop", {"area": 0.5}, ("x", "y")),
        ("resized_crop", {"area": {"uniform": [0.3, 0.9]}}, ("x", "y")),
        ("perspective", {"distortion": 0.1}, ("corners",)),
    ],
)
def test_draw_is_reproducible_and_fills_random_params(
    name: str, config: dict, random_names: tuple[str, ...]
) -> None:
    spec = get_attack(name)
    ctx = SampleContext(height=60, width=100)
    first = spec.draw(np.random.default_rng(7), config, ctx)
    assert first == spec.draw(np.random.default_rng(7), config, ctx)
    assert first != spec.draw(np.random.default_rng(8), config, ctx)
    for pname in random_names:
        assert first[pname] != spec.defaults[pname]
    np.testing.assert_array_equal(spec.apply(IMG, first), spec.apply(IMG, first))


def test_perspective_draw_gives_eight_values_in_range() -> None:
    params = get_attack("perspective").draw(np.random.default_rng(3))
    assert len(params["corners"]) == 8
    assert all(-1.0 <= v <= 1.0 for v in params["corners"])
    assert params["distortion"] == 0.05


def test_registered_functions_are_the_module_functions() -> None:
    for name in geo.__all__:
        spec = get_attack(name)
        assert spec.func is getattr(geo, name)
        assert spec.family == "geometric"
        assert spec.description
