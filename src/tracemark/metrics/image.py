"""Image quality metrics: PSNR and SSIM between a reference image and a test image.

Both functions take two arrays of the same shape and the same dtype, ``(H, W)`` (grey) or
``(H, W, 3)`` (RGB), normally ``uint8``. ``data_range`` defaults to the dtype's range for
unsigned integers (255 for ``uint8``, 65535 for ``uint16``); floats and signed integers
have no natural range and must give it (``1.0`` for floats in ``[0, 1]``). Two arrays of
different dtypes (a ``uint8`` image against a ``[0, 1]`` float one) are refused rather than
compared on a wrong scale. Computation is in ``float64``.

SSIM follows Wang et al. (2004), as most watermarking papers report it: an 11x11 Gaussian
window with sigma 1.5 (truncated at 3.5 sigma), ``K1 = 0.01``, ``K2 = 0.03``, population
(not sample) covariance, reflected borders, the SSIM map averaged after cropping 5 pixels
from each border, and for colour images the mean over the R, G and B channels. It equals
``skimage.metrics.structural_similarity(reference, test, channel_axis=-1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from tracemark.errors import ImageTooSmallError, MetricError

__all__ = ["psnr", "ssim", "SSIM_SIGMA", "SSIM_WINDOW"]

SSIM_SIGMA = 1.5
"""Standard deviation of the Gaussian SSIM window (Wang et al. 2004)."""

_SSIM_TRUNCATE = 3.5
SSIM_WINDOW = 2 * int(_SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
"""Side of the SSIM window in pixels (11); images must be at least this large."""

_K1 = 0.01
_K2 = 0.03


def _pair(reference: Any, test: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    arrays = []
    for what, image in (("reference", reference), ("test", test)):
        if not isinstance(image, np.ndarray):
            raise MetricError(f"{what} must be a numpy array; got {type(image).__name__}")
        if image.dtype == np.bool_ or not (
            np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
        ):
            raise MetricError(f"{what} must have an integer or float dtype; got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise MetricError(f"{what} must have shape (H, W) or (H, W, 3); got {image.shape}")
        if image.size == 0:
            raise MetricError(f"{what} has no pixels: shape {image.shape}")
        as_float = image.astype(np.float64)
        if not np.all(np.isfinite(as_float)):
            raise MetricError(f"{what} contains NaN or infinite values")
        arrays.append(as_float)
    if arrays[0].shape != arrays[1].shape:
        raise MetricError(
            f"reference and test must have the same shape; got {reference.shape} and {test.shape}"
        )
    return arrays[0], arrays[1]


def _both_integer(reference: Any, test: Any) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype != np.bool_
               and np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize <= 4
               for a in (reference, test))


_MSE_BLOCK = 1 << 20
"""Values per block of :func:`_integer_mse`."""


def _integer_mse(reference: npt.NDArray[Any], test: npt.NDArray[Any]) -> float:
    """MSE of two integer arrays (at most 32-bit values), checked as :func:`_pair` does,
    summed exactly in int64 a block of rows at a time."""
    for what, image in (("reference", reference), ("test", test)):
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise MetricError(f"{what} must have shape (H, W) or (H, W, 3); got {image.shape}")
        if image.size == 0:
            raise MetricError(f"{what} has no pixels: shape {image.shape}")
    if reference.shape != test.shape:
        raise MetricError(
            f"reference and test must have the same shape; got {reference.shape} and {test.shape}"
        )
    row = max(1, reference[0].size)
    step = max(1, _MSE_BLOCK // row)
    total = 0
    for r0 in range(0, reference.shape[0], step):
        d = reference[r0 : r0 + step].astype(np.int64) - test[r0 : r0 + step]
        total += int(np.dot(d.ravel(), d.ravel()))
    return total / reference.size


def _range_for(reference: Any, test: Any, data_range: float | None) -> float:
    """``data_range`` checked, or the range of the pair's dtype (module docstring)."""
    if isinstance(reference, np.ndarray) and isinstance(test, np.ndarray) \
            and reference.dtype != test.dtype:
        raise MetricError(
            f"reference and test must have the same dtype; got {reference.dtype} and "
            f"{test.dtype} (convert both to one scale first, e.g. uint8 in 0..255)")
    if data_range is not None:
        return _check_range(data_range)
    dtype = reference.dtype if isinstance(reference, np.ndarray) else None
    if dtype is not None and np.issubdtype(dtype, np.unsignedinteger):
        return float(np.iinfo(dtype).max)
    raise MetricError(
        f"give data_range for {dtype} images (e.g. 1.0 for floats in [0, 1], 255 for "
        "values in 0..255); only unsigned integer dtypes have a default")


def _check_range(data_range: float) -> float:
    try:
        value = float(data_range)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"data_range must be a number; got {data_range!r}") from exc
    if not (math.isfinite(value) and value > 0):
        raise MetricError(f"data_range must be finite and > 0; got {data_range!r}")
    return value


def psnr(reference: npt.NDArray[Any], test: npt.NDArray[Any], *,
         data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 * log10(data_range**2 / MSE)``.

    Returns ``math.inf`` when the images are identical. The MSE is taken over all pixels
    and channels together. Symmetric in its two images. Takes decoded arrays only (load
    files with :func:`tracemark.imageio.load_image`); anything else, or arrays of
    different shapes or dtypes, or a float pair without ``data_range``, raises
    :class:`MetricError`. Two integer arrays are compared a block
    of rows at a time with exact int64 sums (no float64 copies of the images).
    """
    if _both_integer(reference, test):
        peak = _range_for(reference, test, data_range)
        mse = _integer_mse(reference, test)
    else:
        ref, tst = _pair(reference, test)
        peak = _range_for(reference, test, data_range)
        mse = float(np.mean((ref - tst) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _ssim_channel(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], peak: float) -> float:
    def blur(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        blurred = ndimage.gaussian_filter(
            a, sigma=SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect"
        )
        return np.asarray(blurred, dtype=np.float64)

    c1 = (_K1 * peak) ** 2
    c2 = (_K2 * peak) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    pad = (SSIM_WINDOW - 1) // 2
    ssim_map = (num / den)[pad : x.shape[0] - pad, pad : x.shape[1] - pad]
    return float(ssim_map.mean(dtype=np.float64))


def ssim(reference: npt.NDArray[Any], test: npt.NDArray[Any], *,
         data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004; see the module docstring).

    Colour images: SSIM of each channel, averaged. Both sides must be at least
    ``SSIM_WINDOW`` (11) pixels, else :class:`~tracemark.errors.ImageTooSmallError` (the
    size and the minimum; other bad input is :class:`MetricError`). Identical images give
    ``1.0``.
    Symmetric in its two images; arrays only, as :func:`psnr`.
    """
    ref, tst = _pair(reference, test)
    peak = _range_for(reference, test, data_range)
    if min(ref.shape[:2]) < SSIM_WINDOW:
        raise ImageTooSmallError(
            f"ssim needs both sides >= {SSIM_WINDOW} px (its Gaussian window); got "
            f"{ref.shape[1]}x{ref.shape[0]}"
        )
    if ref.ndim == 2:
        return _ssim_channel(ref, tst, peak)
    return float(np.mean([_ssim_channel(ref[..., c], tst[..., c], peak) for c in range(3)]))
