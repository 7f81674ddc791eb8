"""The signal chain of tracemark's own watermark, "lattice" (pure functions).

Design (see docs/watermark.md):

* A keyed N x N tile of +-1 chips is repeated over the whole image (a lattice). A share
  of the chips carries a known keyed synchronisation sequence; the others carry the coded
  payload bits, each bit spread over several keyed chips.
* The tile is rendered smoothly (periodic cubic interpolation) at ``c`` pixels per chip,
  with ``c`` proportional to the image's short side, multiplied by a perceptual mask
  (local activity) and added to the luma, scaled to a target PSNR.
* Detection never needs the original: the luma residual (band-pass, locally normalised)
  is autocorrelated; the repetition makes peaks on the lattice, whose basis vectors
  give scale, rotation, aspect and shear. Folding the residual modulo the lattice
  gives one noisy tile up to a cyclic shift and a symmetry of the square (rotations by
  90 degrees and mirrors); the keyed synchronisation sequence fixes both by FFT
  correlation. Its normalised peak is the detection statistic; the aligned chips give
  soft payload bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy import ndimage
from scipy.special import ndtr

F32 = npt.NDArray[np.float32]

N_CHIPS = 32
"""Chips per tile side."""
SUB = 4
"""Folding bins per chip (sub-chip alignment resolution)."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --- layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which chips carry what, and their keyed signs."""

    pn: npt.NDArray[np.float32]  # (N*N,) +-1
    sync_idx: npt.NDArray[np.intp]  # (n_sync,)
    msg_idx: npt.NDArray[np.intp]  # (n_coded, reps)

    @property
    def n_coded(self) -> int:
        return int(self.msg_idx.shape[0])

    def tile(self, bits: npt.NDArray[np.uint8] | None) -> F32:
        """The N x N chip values: sync chips, and message chips (0 when ``bits`` is None)."""
        t = np.zeros(N_CHIPS * N_CHIPS, np.float32)
        t[self.sync_idx] = self.pn[self.sync_idx]
        if bits is not None:
            signs = (2.0 * np.asarray(bits, np.float32) - 1.0)[:, None]
            t[self.msg_idx] = self.pn[self.msg_idx] * signs
        return t.reshape(N_CHIPS, N_CHIPS)


def make_layout(pn: npt.NDArray[np.floating], perm: npt.NDArray[np.intp], n_coded: int) -> Layout:
    """Split the chips (in keyed order ``perm``) into message chips (``reps`` per coded bit)
    and synchronisation chips (the rest)."""
    total = N_CHIPS * N_CHIPS
    reps = total // (n_coded + max(1, total // (4 * n_coded)))  # leave >= ~1/5 for sync
    reps = max(1, min(reps, (total - 128) // n_coded))
    n_msg = n_coded * reps
    return Layout(
        pn=np.asarray(pn, np.float32),
        sync_idx=np.sort(perm[n_msg:]),
        msg_idx=perm[:n_msg].reshape(n_coded, reps),
    )


# --- rendering and embedding ---------------------------------------------------------------


def render_tile(tile: F32, c: int) -> F32:
    """Smooth periodic rendering of an N x N chip tile at ``c`` pixels per chip (cubic)."""
    n = tile.shape[0]
    pad = 2
    big = np.pad(tile, pad, mode="wrap")
    up = cv2.resize(big, ((n + 2 * pad) * c, (n + 2 * pad) * c), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(up[pad * c : pad * c + n * c, pad * c : pad * c + n * c])


def chip_size(height: int, width: int) -> int:
    """Pixels per chip for an image: the tile spans about a quarter of the short side."""
    return max(2, int(round(min(height, width) / (4.4 * N_CHIPS))))


def luma(image: npt.NDArray[np.uint8]) -> F32:
    return (image.astype(np.float32) @ LUMA).astype(np.float32)


def _activity(y: F32, c: int) -> F32:
    """The local contrast :func:`activity_mask` normalises: box-blurred local std + 4."""
    k = 2 * c + 1
    mu = cv2.blur(y, (k, k))
    var = np.maximum(cv2.blur(y * y, (k, k)) - mu * mu, 0.0)
    m = np.sqrt(var) + 4.0
    return cv2.blur(m, (k, k))


def activity_mask(y: F32, c: int) -> F32:
    """Perceptual mask: more strength where the local contrast hides it, mean 1."""
    m = _activity(y, c)
    m /= float(m.mean())
    return np.clip(m, 0.5, 2.5).astype(np.float32)


def embed_delta(y: F32, tile: F32, c: int, mse: float) -> F32:
    """The luma change that carries ``tile``: rendered, tiled, masked, scaled to ``mse``."""
    h, w = y.shape
    pattern = render_tile(tile, c)
    t = pattern.shape[0]
    full = np.tile(pattern, (-(-h // t), -(-w // t)))[:h, :w]
    d = activity_mask(y, c) * full
    power = float(np.mean(d * d))
    return (d * math.sqrt(mse / power)).astype(np.float32) if power > 0 else d


# --- large images: bounded memory --------------------------------------------------------

WHOLE_IMAGE_MAX_PIXELS = 8_000_000
"""Images with at most this many pixels are marked and read as a whole array (the path
every result in docs/ was measured on). Larger ones are marked a strip of rows at a time
(:class:`StripDelta`) and read from a working copy built a strip at a time
(:func:`working_luma`), so that the working memory does not grow with the image beyond
the marked copy and a float16 mask (see :data:`STRIP_FLOATS` and docs/watermark.md)."""
STRIP_FLOATS = 1 << 22
"""Float32 values (16 MiB) in one strip of the large-image paths, halo included."""
MAX_ASPECT = 4.0
"""Large images are read from their central window of at most this many times the short
side along the long side: the mark repeats every tile, and a long strip's whole length
would only cost memory (a working copy of 512 x 100000 px for a 900 x 175000 px strip)."""


def _strip_rows(width: int, halo: int, multiple: int = 1) -> int:
    """Rows per strip for an image ``width`` px wide whose strips need ``halo`` extra rows
    on each side: at least ``2 * halo``, rounded up to a multiple of ``multiple``."""
    rows = max(2 * halo, STRIP_FLOATS // max(1, width) - 2 * halo, 16)
    return -(-rows // multiple) * multiple


def _tiled_rows(pattern: F32, r0: int, r1: int, width: int) -> F32:
    """Rows ``r0:r1`` (first ``width`` columns) of ``pattern`` repeated over the plane."""
    t = pattern.shape[0]
    rows = pattern[np.arange(r0, r1) % t]
    return np.tile(rows, (1, -(-width // t)))[:, :width]


class StripDelta:
    """The luma change of :func:`embed_delta` for an image too large to hold it whole.

    Built in one pass over strips of rows: the activity mask (:func:`activity_mask`, the
    box filters run on each strip with a halo of ``2 c + 1`` rows, so every pixel sees
    the same neighbourhood as in the whole image) is kept as float16 ``(H, W)`` (2 bytes
    a pixel), its mean normalised and clipped as in :func:`activity_mask`; the scale that
    gives the target MSE is summed over the strips. :meth:`apply` then writes the marked
    image a strip at a time. The result equals the whole-image path up to float32
    rounding of the box filters and the float16 mask (relative 1e-3 of the mask).
    """

    def __init__(self, image: npt.NDArray[np.uint8], tile: F32, c: int, mse: float) -> None:
        h, w = image.shape[:2]
        self.c = c
        self.pattern = render_tile(tile, c)
        halo = 2 * c + 2
        step = _strip_rows(w, halo)
        mask = np.empty((h, w), np.float16)
        total = 0.0
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            a, b = max(0, r0 - halo), min(h, r1 + halo)
            m = _activity(luma(image[a:b]), c)[r0 - a : r1 - a]
            total += float(m.sum(dtype=np.float64))
            mask[r0:r1] = m
            del m
        mean = total / (h * w)
        power = 0.0
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            m = np.clip(mask[r0:r1].astype(np.float32) / np.float32(mean), 0.5, 2.5)
            mask[r0:r1] = m
            d = m * _tiled_rows(self.pattern, r0, r1, w)
            power += float(np.sum(d * d, dtype=np.float64))
        power /= h * w
        self.mask = mask
        """(H, W) float16: the normalised activity mask (0.5 .. 2.5)."""
        self.scale = math.sqrt(mse / power) if power > 0 else 1.0
        """Factor that brings the masked pattern to the target MSE."""

    def rows(self, r0: int, r1: int) -> F32:
        """Rows ``r0:r1`` of the luma change (float32, ``(r1 - r0, W)``)."""
        w = self.mask.shape[1]
        d = self.mask[r0:r1].astype(np.float32) * _tiled_rows(self.pattern, r0, r1, w)
        d *= np.float32(self.scale)
        return d

    def apply(self, image: npt.NDArray[np.uint8], gain: float = 1.0, *,
              headroom: bool = False) -> npt.NDArray[np.uint8]:
        """``image`` plus ``gain`` times the change on R, G and B, as the whole-image
        ``_marked`` of the ``lattice`` method does (with ``headroom``, pixels too close to
        black or white are first moved inward by the 3 x 3 maximum of the change)."""
        h, w = image.shape[:2]
        out = np.empty_like(image)
        step = _strip_rows(w * 3, 1)
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            a, b = (max(0, r0 - 1), min(h, r1 + 1)) if headroom else (r0, r1)
            d = self.rows(a, b)
            if gain != 1.0:
                d *= np.float32(gain)
            base = image[r0:r1].astype(np.float32)
            if headroom:
                env = cv2.dilate(np.abs(d), np.ones((3, 3), np.uint8))[r0 - a : r1 - a, :, None]
                base = np.clip(base, env, 255.0 - env)
            base += d[r0 - a : r1 - a, :, None]
            np.rint(base, out=base)
            np.clip(base, 0, 255, out=base)
            out[r0:r1] = base
        return out


# --- detection ---------------------------------------------------------------------


WORK_SIDE = 512


def prior_basis(height: int, width: int, scale: float) -> npt.NDArray[np.float64]:
    """The lattice :func:`embed_delta` lays on an image of this size (axis-aligned, period
    ``N_CHIPS * chip_size``), in working pixels (``scale`` from :func:`working_luma`)."""
    t = N_CHIPS * chip_size(height, width) * scale
    return np.array([[t, 0.0], [0.0, t]])


def working_luma(
    image: npt.NDArray[np.uint8],
    transform: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
) -> tuple[F32, float]:
    """Luma at the working resolution (short side <= ~1.15 * WORK_SIDE) and the scale used.

    An image of more than :data:`WHOLE_IMAGE_MAX_PIXELS` pixels is read from its central
    window of at most :data:`MAX_ASPECT` times its short side, a strip of rows at a time
    (luma, then area resizing, which is separable: across per strip, then down), without a
    full-size float copy; ``transform`` (e.g. a JPEG round trip) is then applied to each
    strip (16-row multiples, window origin on a multiple of 16 px) before its luma."""
    h, w = image.shape[:2]
    if h * w > WHOLE_IMAGE_MAX_PIXELS or transform is not None:
        return _working_luma_strips(image, transform)
    y = luma(image)
    short = min(y.shape)
    if short > int(WORK_SIDE * 1.15):
        f = WORK_SIDE / short
        y = cv2.resize(
            y,
            (max(1, round(y.shape[1] * f)), max(1, round(y.shape[0] * f))),
            interpolation=cv2.INTER_AREA,
        )
        return y, f
    return y, 1.0


def _working_luma_strips(
    image: npt.NDArray[np.uint8],
    transform: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
) -> tuple[F32, float]:
    h, w = image.shape[:2]
    short = min(h, w)
    span = int(MAX_ASPECT * short)
    if h > span:
        y0 = (h - span) // 2 // 16 * 16
        image = image[y0 : y0 + span]
    elif w > span:
        x0 = (w - span) // 2 // 16 * 16
        image = image[:, x0 : x0 + span]
    h, w = image.shape[:2]
    f = WORK_SIDE / short if short > int(WORK_SIDE * 1.15) else 1.0
    out_w, out_h = (max(1, round(w * f)), max(1, round(h * f))) if f < 1.0 else (w, h)
    across = np.empty((h, out_w), np.float32)
    step = _strip_rows(w * 4, 0, multiple=16)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        strip = image[r0:r1] if transform is None else transform(image[r0:r1])
        y = luma(strip)
        across[r0:r1] = cv2.resize(y, (out_w, r1 - r0), interpolation=cv2.INTER_AREA) \
            if out_w != w else y
    if out_h == h:
        return across, f
    return cv2.resize(across, (out_w, out_h), interpolation=cv2.INTER_AREA), f


SCORE_FLOOR = 3.0
"""Autocorrelation level (in noise units) a lattice point must exceed to add to a score."""
NOMINAL_CHIP = 4.0
MIN_PERIOD = 14.0
"""Shortest tile period searched (working pixels): a 256 px image resized to 1/4."""
"""Chip size (working pixels) the default residual filter is tuned for."""


def residual(y: F32, chip: float = NOMINAL_CHIP, *, suppress: bool = False) -> F32:
    """Band-pass luma residual tuned to ``chip`` px chips, locally normalised, clipped;
    with ``suppress``, periodic content removed first (:func:`suppress_periodic`)."""
    s1, s2 = 0.175 * chip, 0.75 * chip
    lo = cv2.GaussianBlur(y, (0, 0), s1) if s1 >= 0.3 else y
    r = lo - cv2.GaussianBlur(y, (0, 0), max(s2, 0.6))
    if suppress:
        r = suppress_periodic(r)
    win = max(9, int(round(4.25 * chip)) | 1)
    s = np.sqrt(np.maximum(cv2.blur(r * r, (win, win)), 0.0)) + 0.5
    r = np.clip(r / s, -3.0, 3.0)
    return (r - r.mean()).astype(np.float32)


PERIODIC_PEAK = 5.0
"""Spectral lines above this many times their neighbourhood's mean are content that
repeats (grass, fabric, dot screens, tiles), not the mark, whose energy is spread thinly
over many lines: they are cut down to that level."""


PERIODIC_SHARE = 0.05
"""Periodic content is suppressed only where its lines hold at least this share of the
residual's energy (natural photographs rarely do; dot screens, fabric and tiles do)."""


def periodic_share(r: F32, factor: float = PERIODIC_PEAK) -> float:
    """Share of ``r``'s energy in spectral lines above ``factor`` times their
    neighbourhood's mean (15 x 15 lines): high for content that repeats."""
    mag = np.abs(sfft.rfft2(r, workers=1))
    local = ndimage.uniform_filter(mag, 15, mode="wrap") + 1e-6
    power = mag * mag
    return float(power[mag > factor * local].sum() / max(float(power.sum()), 1e-12))


def suppress_periodic(r: F32, factor: float = PERIODIC_PEAK) -> F32:
    """``r`` with its outlying spectral lines (periodic content) attenuated to ``factor``
    times the local mean magnitude (15 x 15 lines). On a flat image the mark's own lines
    are such outliers: the detector therefore tries the residual with and without it."""
    spec = sfft.rfft2(r, workers=1)
    mag = np.abs(spec)
    local = ndimage.uniform_filter(mag, 15, mode="wrap") + 1e-6
    gain = np.where(mag > factor * local, factor * local / np.maximum(mag, 1e-9), 1.0)
    gain[0, 0] = 1.0
    return sfft.irfft2(spec * gain, r.shape, workers=1).astype(np.float32)


def autocorrelation(r: F32) -> F32:
    """Linear autocorrelation (zero-padded), spectrally whitened, normalised by overlap; centred."""
    h, w = r.shape
    fh, fw = sfft.next_fast_len(2 * h, real=True), sfft.next_fast_len(2 * w, real=True)
    spec = sfft.rfft2(r, (fh, fw), workers=1)
    p = np.abs(spec) ** 2
    p = p / (ndimage.uniform_filter(p, 9, mode="wrap") + 1e-6)
    # notch the 8x8 block grid of JPEG/WebP coding (lines at multiples of 1/8 cycle/px),
    # whose periods (8, 16, ..., 96, ...) would otherwise pose as lattices
    for k in range(1, 8):
        for n_len, axis in ((fh, 0), (fw, 1)):
            if axis == 1 and k > 4:
                continue  # rfft: only non-negative horizontal frequencies
            centre = k * n_len / 8
            lo, hi = int(np.floor(centre)) - 1, int(np.ceil(centre)) + 2
            if axis == 0:
                p[max(lo, 0) : hi, :] = 1.0
            else:
                p[:, max(lo, 0) : hi] = 1.0
    a = sfft.irfft2(p, (fh, fw), workers=1)
    ones = sfft.rfft2(np.ones_like(r), (fh, fw), workers=1)
    cnt = sfft.irfft2(np.abs(ones) ** 2, (fh, fw), workers=1)
    a = np.where(cnt > 0.25 * h * w, a / np.maximum(cnt, 1.0), 0.0)
    a = np.fft.fftshift(a)
    return a.astype(np.float32)


@dataclass(frozen=True)
class Lattice:
    basis: npt.NDArray[np.float64]  # 2x2, columns are lattice vectors (x, y) in working pixels
    score: float


def _subpixel_peak(
    a: F32, cy: int, cx: int, v: npt.NDArray[np.float64], rad: int = 3
) -> tuple[npt.NDArray[np.float64], float] | None:
    x0, y0 = int(round(cx + v[0])), int(round(cy + v[1]))
    if not (rad + 1 <= y0 < a.shape[0] - rad - 1 and rad + 1 <= x0 < a.shape[1] - rad - 1):
        return None
    win = a[y0 - rad : y0 + rad + 1, x0 - rad : x0 + rad + 1]
    iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)
    py, px = y0 - rad + iy, x0 - rad + ix
    val = float(a[py, px])

    def quad(m1: float, m0: float, p1: float) -> float:
        den = m1 - 2 * m0 + p1
        return 0.0 if den >= 0 else 0.5 * (m1 - p1) / den

    dx = quad(float(a[py, px - 1]), val, float(a[py, px + 1]))
    dy = quad(float(a[py - 1, px]), val, float(a[py + 1, px]))
    return np.array([px + dx - cx, py + dy - cy]), val


def _acf_context(r: F32) -> tuple[F32, F32, int, int, float, float, float] | None:
    a = autocorrelation(r)
    h, w = r.shape
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    # the embedded tile spans ~1/4.4 of the original short side; crops raise that share,
    # padding or expanding rotations lower it: search periods from 1/9 to 0.62 of it
    rmin = max(MIN_PERIOD, min(h, w) / 9.0)
    rmax = 0.62 * min(h, w)
    if rmax <= rmin:
        return None
    # keep only the lags that can matter (|lag| <= rmax + margin)
    m = int(rmax) + 4
    a = np.ascontiguousarray(a[max(cy - m, 0) : cy + m + 1, max(cx - m, 0) : cx + m + 1])
    cy, cx = min(cy, m), min(cx, m)
    yy, xx = np.ogrid[0 : a.shape[0], 0 : a.shape[1]]
    rad = np.hypot(xx - cx, yy - cy)
    ring = (rad >= rmin) & (rad <= rmax)
    noise = float(np.std(a[ring])) + 1e-9
    a = a / noise
    amax = cv2.dilate(a, np.ones((5, 5), np.uint8))
    return a, amax, cy, cx, rmin, rmax, noise


HOUGH_POINTS = np.array(
    [(1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (1, -2)], np.float64
).T


def _hough(amax: F32, cy: int, cx: int, rmin: float, rmax: float, top: int) -> list[npt.NDArray[np.float64]]:
    """Square lattices (rotation x period) scored by the mean max-filtered ACF over the
    lattice points within reach; the finest of near-equal scores wins (a multiple of the
    period scores alike)."""
    periods = np.exp(np.arange(np.log(rmin), np.log(rmax), 0.012))
    out: list[tuple[float, float, float]] = []
    h, w = amax.shape
    for t in periods:
        step = 1.6 / (2.3 * t)
        thetas = np.arange(0.0, np.pi / 2, step)
        c, s_ = np.cos(thetas), np.sin(thetas)
        # points (k, l) -> k*v1 + l*v2, v1 = t(c, s), v2 = t(-s, c)
        px = t * (np.outer(c, HOUGH_POINTS[0]) - np.outer(s_, HOUGH_POINTS[1]))
        py = t * (np.outer(s_, HOUGH_POINTS[0]) + np.outer(c, HOUGH_POINTS[1]))
        dist = t * np.hypot(HOUGH_POINTS[0], HOUGH_POINTS[1])
        use = dist <= rmax
        if use.sum() < 2:
            continue
        xi = np.rint(cx + px[:, use]).astype(np.int64)
        yi = np.rint(cy + py[:, use]).astype(np.int64)
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = np.where(ok, amax[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0)
        score = np.minimum(vals, 12.0).mean(axis=1)
        j = int(np.argmax(score))
        out.append((float(score[j]), float(t), float(thetas[j])))
    if not out:
        return []
    out.sort(key=lambda x: -x[0])
    chosen: list[tuple[float, float, float]] = []
    for sc, t, th in out:
        if any(abs(np.log(t / t2)) < 0.05 and abs(th - th2) < 0.05 for _, t2, th2 in chosen):
            continue
        chosen.append((sc, t, th))
        if len(chosen) == top:
            break
    # finest of near-equal: move a smaller period with >= 75% of the best score to the front
    best = chosen[0][0]
    chosen.sort(key=lambda x: (x[0] < 0.75 * best, x[1] if x[0] >= 0.75 * best else -x[0]))
    return [
        np.array([[t * np.cos(th), -t * np.sin(th)], [t * np.sin(th), t * np.cos(th)]]) for _, t, th in chosen
    ]


def find_lattices(
    r: F32,
    *,
    top: int = 7,
    max_peaks: int = 16,
    priors: Sequence[npt.NDArray[np.float64]] = (),
) -> list[Lattice]:
    """Candidate lattice bases, best first: the ``priors`` (lattices expected without any
    geometric change, e.g. the one the embedder uses for an image of this size), then a
    square-lattice Hough search over period and rotation, then pairs of strong
    autocorrelation peaks (which also catch aspect changes and shear); each refined by a
    least-squares fit to sub-pixel peaks. Content that repeats (grass, fabric, tiles) can
    pose as a lattice in the autocorrelation; a prior does not depend on it."""
    ctx = _acf_context(r)
    if ctx is None:
        return [Lattice(np.asarray(b, np.float64), 0.0) for b in priors]
    a, amax, cy, cx, rmin, rmax, _ = ctx
    noise = 1.0
    seen: list[npt.NDArray[np.float64]] = []
    out: list[Lattice] = []

    def add(b: npt.NDArray[np.float64], score: float) -> None:
        if any(_same_lattice(b, o) for o in seen):
            return
        seen.append(b)
        out.append(Lattice(_refine(a, cy, cx, b), score))

    for b in priors:  # as expected, and refined (a small resize moves it)
        b = np.asarray(b, np.float64)
        score = _lattice_score(amax, cy, cx, b, rmax, noise)
        # not in ``seen``: a prior must not hide a searched lattice a few degrees away
        out.append(Lattice(b, score))
        refined = _refine(a, cy, cx, b)
        if not np.allclose(refined, b, atol=0.05):
            out.append(Lattice(refined, score))
    n_priors = len(out)

    for b in _hough(amax, cy, cx, rmin, rmax, max(2, top // 2)):
        add(b, _lattice_score(amax, cy, cx, b, rmax, noise))
        if np.hypot(*b[:, 0]) / 2 >= MIN_PERIOD:
            # image content can make a multiple of the period look stronger than the period
            add(b / 2, _lattice_score(amax, cy, cx, b / 2, rmax, noise))
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    dy, dx = yy - cy, xx - cx
    rad = np.hypot(dx, dy)
    half = (dy > 0) | ((dy == 0) & (dx > 0))
    region = (rad >= rmin) & (rad <= rmax) & half
    local_max = a == amax
    cand = np.flatnonzero((region & local_max & (a > 0)).ravel())
    pairs: list[Lattice] = []
    if cand.size >= 2:
        vals = a.ravel()[cand]
        order = np.argsort(vals)[::-1][:max_peaks]
        pts = np.stack([dx.ravel()[cand[order]], dy.ravel()[cand[order]]], 1).astype(np.float64)
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                b = _gauss_reduce(pts[i], pts[j])
                if b is None:
                    continue
                p, q = b[:, 0], b[:, 1]
                lp, lq = np.hypot(*p), np.hypot(*q)
                if lp < rmin or not (0.7 < lp / lq < 1.43) or abs(float(p @ q)) / (lp * lq) > 0.4:
                    continue
                pairs.append(Lattice(b, _lattice_score(amax, cy, cx, b, rmax, noise)))
    pairs.sort(key=lambda lat: -lat.score)
    reduced = []
    for lat in pairs[:top]:
        b, sc = _reduce(amax, cy, cx, lat.basis, rmin, rmax, noise)
        reduced += [Lattice(b, sc), lat]
    pairs = sorted(reduced, key=lambda lat: -lat.score)
    for lat in pairs:
        if len(out) >= top + n_priors:  # the priors do not take a searched candidate's place
            break
        add(lat.basis, lat.score)
    return out


def _gauss_reduce(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Lagrange-Gauss reduction of a 2-D lattice basis (shortest, nearly orthogonal)."""
    if abs(p[0] * q[1] - p[1] * q[0]) < 1.0:
        return None
    u, v = p.copy(), q.copy()
    if u @ u > v @ v:
        u, v = v, u
    for _ in range(20):
        mu = round(float(u @ v) / float(u @ u))
        v = v - mu * u
        if v @ v >= u @ u:
            break
        u, v = v, u
    return np.stack([u, v], 1)


def _lattice_score(
    amax: F32, cy: int, cx: int, basis: npt.NDArray[np.float64], radius: float, noise: float
) -> float:
    """Sum over lattice points within ``radius`` of (peak - 2 noise), capped: a lattice whose
    every point is a peak beats its sub-lattices (fewer points) and finer false lattices
    (points without peaks count negative)."""
    inv_len = 1.0 / min(np.hypot(*basis[:, 0]), np.hypot(*basis[:, 1]))
    m_max = int(radius * inv_len) + 1
    m, n = np.meshgrid(np.arange(-m_max, m_max + 1), np.arange(-m_max, m_max + 1))
    pts = basis @ np.stack([m.ravel(), n.ravel()]).astype(np.float64)
    dist = np.hypot(*pts)
    keep = (dist > 1e-6) & (dist <= radius)
    x = np.rint(cx + pts[0, keep]).astype(int)
    y = np.rint(cy + pts[1, keep]).astype(int)
    ok = (x >= 0) & (x < amax.shape[1]) & (y >= 0) & (y < amax.shape[0])
    vals = amax[y[ok], x[ok]] / noise
    return float(np.sum(np.minimum(vals, 12.0) - SCORE_FLOOR))


def _reduce(
    amax: F32, cy: int, cx: int, basis: npt.NDArray[np.float64], rmin: float, radius: float, noise: float
) -> tuple[npt.NDArray[np.float64], float]:
    """Move to an index-2 super-lattice while that raises the lattice score.

    A found lattice may be a sub-lattice of the embedded one (every multiple or
    combination of periods is a period); its index-2 super-lattices add p/2, q/2 or
    (p+q)/2; the score rewards lattices whose every point is a peak.
    """
    b = basis.copy()
    best = _lattice_score(amax, cy, cx, b, radius, noise)
    for _ in range(4):
        p, q = b[:, 0], b[:, 1]
        options = [np.stack([p / 2, q], 1), np.stack([p, q / 2], 1), np.stack([(p + q) / 2, q], 1)]
        scored = []
        for o in options:
            red = _gauss_reduce(o[:, 0], o[:, 1])
            if red is None or min(np.hypot(*red[:, 0]), np.hypot(*red[:, 1])) < rmin:
                continue
            scored.append((_lattice_score(amax, cy, cx, red, radius, noise), red))
        if not scored:
            break
        sc, red = max(scored, key=lambda t: t[0])
        if sc <= best:
            break
        best, b = sc, red
    return b, best


def _same_lattice(b1: npt.NDArray[np.float64], b2: npt.NDArray[np.float64]) -> bool:
    if abs(np.linalg.det(b2)) < 1e-6:
        return False
    m = np.linalg.solve(b2, b1)
    return bool(
        np.all(np.abs(m - np.round(m)) < 0.1) and abs(abs(np.linalg.det(np.round(m))) - 1) < 0.5
    )


def _refine(a: F32, cy: int, cx: int, basis: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Least-squares fit of the basis to sub-pixel peaks at small lattice combinations."""
    src, dst = [], []
    for m in range(-3, 4):
        for n in range(-3, 4):
            if (m, n) == (0, 0):
                continue
            v = basis @ np.array([m, n], np.float64)
            got = _subpixel_peak(a, cy, cx, v)
            if got is None:
                continue
            pos, val = got
            if val <= 0 or np.hypot(*(pos - v)) > 2.5:
                continue
            src.append((m, n))
            dst.append(pos)
    if len(src) < 3:
        return basis
    s, d = np.array(src, np.float64), np.array(dst, np.float64)
    sol, *_ = np.linalg.lstsq(s, d, rcond=None)  # d = s @ sol -> basis = sol.T
    refined = sol.T
    drift = np.hypot(*(refined - basis)) / np.hypot(*basis)
    if (
        not np.all(np.isfinite(refined))
        or np.any(drift > 0.15)
        or abs(np.linalg.det(refined)) < 1.0
    ):
        return basis
    return refined


def fold(
    r: F32,
    basis: npt.NDArray[np.float64],
    bins: int = N_CHIPS * SUB,
    *,
    offset: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    mask: npt.NDArray[np.bool_] | None = None,
) -> F32:
    """Average the residual modulo the lattice into a bins x bins tile (zero-mean).

    ``offset`` (per-pixel, in tile units) is subtracted from the lattice coordinates (a
    smooth correction of the global lattice, e.g. for perspective); ``mask`` restricts the
    pixels folded."""
    h, w = r.shape
    inv = np.linalg.inv(basis)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    u = inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None]
    v = inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None]
    if offset is not None:
        u = u - offset[0]
        v = v - offset[1]
    iu = (np.floor((u - np.floor(u)) * bins).astype(np.int64)) % bins
    iv = (np.floor((v - np.floor(v)) * bins).astype(np.int64)) % bins
    idx = (iv * bins + iu).ravel()
    weights = r.ravel().astype(np.float64)
    if mask is not None:
        keep = mask.ravel()
        idx, weights = idx[keep], weights[keep]
    acc = np.bincount(idx, weights=weights, minlength=bins * bins)
    cnt = np.bincount(idx, minlength=bins * bins)
    t = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    t = t - t[cnt > 0].mean() if np.any(cnt > 0) else t
    return t.reshape(bins, bins).astype(np.float32)


def dihedral(t: F32, k: int) -> F32:
    """The k-th of the 8 symmetries of the square (k in 0..7)."""
    out = np.rot90(t, k % 4)
    return np.ascontiguousarray(out.T if k >= 4 else out)


@dataclass(frozen=True)
class Alignment:
    z: float
    sym: int
    shift: tuple[int, int]
    aligned: F32


def align(folded: F32, sync_ref: F32) -> Alignment:
    """Best symmetry and cyclic shift of the folded tile against the rendered sync tile."""
    ref = sfft.rfft2(sync_ref - sync_ref.mean(), workers=1)
    best: Alignment | None = None
    all_c = []
    for k in range(8):
        d = dihedral(folded, k)
        c = sfft.irfft2(sfft.rfft2(d, workers=1) * np.conj(ref), d.shape, workers=1)
        all_c.append(c)
    stack = np.stack(all_c)
    mu, sd = float(stack.mean()), float(stack.std()) + 1e-12
    k, sy, sx = np.unravel_index(int(np.argmax(stack)), stack.shape)
    z = (float(stack[k, sy, sx]) - mu) / sd
    aligned = np.roll(dihedral(folded, int(k)), (-int(sy), -int(sx)), axis=(0, 1))
    best = Alignment(z=z, sym=int(k), shift=(int(sy), int(sx)), aligned=aligned)
    return best


def dihedral_inverse(t: F32, k: int) -> F32:
    out = t.T if k >= 4 else t
    return np.ascontiguousarray(np.rot90(out, -(k % 4)))


def _shift_in_fold(folded: F32, ref_u: npt.NDArray[np.complex128]) -> tuple[npt.NDArray[np.float64], float]:
    """Cyclic shift (bins, (dv, du)) of ``folded`` against a reference spectrum, and its z."""
    c = sfft.irfft2(sfft.rfft2(folded, workers=1) * ref_u, folded.shape, workers=1)
    k = int(np.argmax(c))
    sy, sx = np.unravel_index(k, c.shape)
    z = (float(c.flat[k]) - float(c.mean())) / (float(c.std()) + 1e-12)
    return np.array([sy, sx], np.float64), z


def local_offsets(
    r: F32, basis: npt.NDArray[np.float64], sync_ref: F32, sym: int, grid: int = 3, min_z: float = 4.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Per-pixel lattice corrections (tile units) from the shift of each region of a grid x grid
    partition relative to the whole image, interpolated bilinearly: a piecewise-affine
    lattice that follows perspective and other smooth warps. None if too few regions lock."""
    bins = sync_ref.shape[0]
    g = dihedral_inverse(sync_ref - sync_ref.mean(), sym)
    ref_u = np.conj(sfft.rfft2(g, workers=1))
    whole, _ = _shift_in_fold(fold(r, basis), ref_u)
    h, w = r.shape
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    du = np.full((grid, grid), np.nan)
    dv = np.full((grid, grid), np.nan)
    for i in range(grid):
        for j in range(grid):
            mask = np.zeros((h, w), bool)
            mask[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = True
            shift, z = _shift_in_fold(fold(r, basis, mask=mask), ref_u)
            if z < min_z:
                continue
            d = (shift - whole + bins / 2) % bins - bins / 2
            dv[i, j], du[i, j] = d / bins
    good = np.isfinite(du)
    if good.sum() < max(3, grid * grid // 2):
        return None
    du[~good] = np.median(du[good])
    dv[~good] = np.median(dv[good])
    size = (w, h)
    return (
        cv2.resize(du.astype(np.float32), size, interpolation=cv2.INTER_LINEAR).astype(np.float64),
        cv2.resize(dv.astype(np.float32), size, interpolation=cv2.INTER_LINEAR).astype(np.float64),
    )


def chip_values(aligned: F32) -> npt.NDArray[np.float64]:
    """Per-chip sums of the aligned folded tile (N*N,), row-major like the layout."""
    n = aligned.shape[0] // SUB
    return aligned.reshape(n, SUB, n, SUB).sum(axis=(1, 3)).ravel().astype(np.float64)


def soft_bits(chips: npt.NDArray[np.float64], layout: Layout) -> npt.NDArray[np.float64]:
    """Soft payload bits (positive = 1), normalised by the sync chips' noise level."""
    s = (chips[layout.msg_idx] * layout.pn[layout.msg_idx]).sum(axis=1)
    sync = chips[layout.sync_idx] * layout.pn[layout.sync_idx]
    gain = max(float(sync.mean()), 1e-9)
    noise = float(np.std(sync - sync.mean())) + 1e-9
    reps = layout.msg_idx.shape[1]
    # in units of the per-bit noise std, signed by the estimated gain
    return s / (noise * math.sqrt(reps)) * np.sign(gain)


def z_to_p(z: float, trials: float) -> float:
    """Bonferroni p-value of a maximum of ``trials`` standard-normal statistics."""
    return float(min(1.0, trials * float(ndtr(-z))))
