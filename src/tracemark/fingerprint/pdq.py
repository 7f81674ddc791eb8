"""PDQ, Facebook's 256-bit perceptual hash, in numpy (no compiled dependency).

Follows the ThreatExchange reference (``pdq/cpp/hashing/pdqhashing.cpp``) step by step and
reproduces its single-precision arithmetic operation by operation, so hashes are
bit-identical to the reference (``pdqhash.compute``) except, rarely, when two DCT
coefficients tie within float rounding at the median:

1. luma ``0.299 R + 0.587 G + 0.114 B`` (computed in double, stored as float32, as the
   ``pdqhash`` wrapper does);
2. Jarosz tent filter: two passes of a box filter along rows then columns, window
   ``(n + 127) // 128`` (the reference's ``computeJaroszFilterWindowSize(n, 64)``), with the
   reference's float32 running sums reproduced exactly (an ordered cumulative sum);
3. decimation to 64x64 at ``floor((i + 0.5) * n / 64)``;
4. quality: the sum of truncated gradients ``|du| * 100 / 255`` over the 64x64 image,
   divided by 90, capped at 100;
5. the 16x16 low-frequency block of the 2-D DCT (the reference's matrix, frequencies 1..16,
   the DC excluded), summed in the reference's order;
6. bit = coefficient > the lower median (Torben's median) -> 128 bits set.

Bit order: ``bits[0]`` is the reference's bit 255 (as the ``pdqhash`` wrapper's vector), so
``np.packbits(bits).tobytes().hex()``, which is ``Fingerprint.to_hex()`` of the ``pdq``
fingerprinter, is the ThreatExchange hex string (64 lower-case digits, the reference's
``Hash256::format``: words 15 down to 0); ``Fingerprint.from_hex("pdq", text)`` reads it.

Differences from the reference, on purpose: images smaller than 5 px on a side raise
:class:`~tracemark.errors.ImageTooSmallError` (the reference returns an all-zero hash with
quality 0); large images are hashed at full resolution, like the ``pdqhash`` wrapper (the
ThreatExchange command-line tool first resizes any image larger than 512 px to 512x512 with
nearest-neighbour sampling; do that yourself to reproduce its output).

The eight dihedral hashes (:func:`pdq_dihedral`) are derived from the one DCT by sign
changes and transposition, as the reference does, in the reference's order: original,
rotate 90 (``np.rot90(img, 1)``, counter-clockwise), rotate 180, rotate 270
(``np.rot90(img, -1)``), flip X (``img[::-1]``, upside down), flip Y (``img[:, ::-1]``,
mirror), flip +1 (transpose), flip -1 (anti-transpose). They equal the hashes of the
transformed images up to the filter's half-pixel asymmetry (a few bits, more for even
window sizes).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from tracemark.errors import ImageTooSmallError
from tracemark.fingerprint.base import (
    _POPCOUNT,
    Fingerprint,
    Fingerprinter,
    _FingerprintError,
    register_fingerprinter,
)
from tracemark.imageio import ImageSource

__all__ = [
    "DIHEDRAL_NAMES",
    "PDQ_MIN_SIZE",
    "PDQFingerprinter",
    "pdq_dihedral",
    "pdq_hash",
    "pdq_match_distance",
]

PDQ_MIN_SIZE: Final[int] = 5
"""Smallest side the reference hashes (``MIN_HASHABLE_DIM``)."""

DIHEDRAL_NAMES: Final[tuple[str, ...]] = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flipx",
    "flipy",
    "flipplus1",
    "flipminus1",
)
"""Order of the hashes returned by :func:`pdq_dihedral` (the reference's order)."""

_F32 = np.float32


@lru_cache(maxsize=1)
def _dct_matrix() -> npt.NDArray[np.float32]:
    """The reference's 16x64 DCT matrix: rows are frequencies 1..16 (DC excluded)."""
    scale = float(_F32(math.sqrt(2.0 / 64.0)))  # stored as float, multiplied in double
    step = math.pi / 2.0 / 64.0
    d = [[scale * math.cos(step * (i + 1) * (2 * j + 1)) for j in range(64)] for i in range(16)]
    m = np.array(d, dtype=np.float32)
    m.flags.writeable = False
    return m


@lru_cache(maxsize=64)
def _box_divisors(n: int, w: int) -> npt.NDArray[np.float32]:
    """Window size at each output of the reference's box filter (shrinking at the ends)."""
    h = (w + 2) // 2
    div = np.concatenate([np.arange(h, w + 1), np.full(n - w, w), np.arange(w - 1, w - h, -1)])
    div = div.astype(np.float32)[:, None]
    div.flags.writeable = False
    return div


def _box_rows(
    x: npt.NDArray[np.float32], w: int, keep: npt.NDArray[np.intp] | None = None
) -> npt.NDArray[np.float32]:
    """The reference's ``box1DFloat`` along axis 0 of a C-contiguous ``x`` (all columns at once).

    Output ``k`` is the mean of ``x[k - (w - h) .. k + h - 1]`` (``h = (w + 2) // 2``),
    truncated at the ends, computed with the reference's float32 running sum: add
    ``x[0 .. w-1]``, then per step add ``x[w + t]`` and subtract ``x[t]``, then subtract
    ``x[n - w ..]``; each sum is divided by the current window size. ``keep`` selects output
    rows (all when ``None``).
    """
    n = x.shape[0]
    h = (w + 2) // 2
    s = np.empty_like(x)  # the running sum at each output
    first = w - h + 1
    s[:first] = np.cumsum(x[:w], axis=0, dtype=np.float32)[h - 1 : w]
    add, sub = np.add, np.subtract
    for k in range(first, first + n - w):  # full windows: one add, one subtract
        out = s[k]
        add(s[k - 1], x[k + h - 1], out=out)
        sub(out, x[k - first], out=out)
    for k in range(n - h + 1, n):  # the tail: subtracts only
        sub(s[k - 1], x[k - first], out=s[k])
    div = _box_divisors(n, w)
    if keep is not None:
        return s[keep] / div[keep]
    return s / div


@lru_cache(maxsize=64)
def _decimation_index(n: int) -> npt.NDArray[np.intp]:
    """The reference's ``decimateFloat`` sample positions: ``floor((i + 0.5) * n / 64)``."""
    return np.array([int(((i + 0.5) * n) / 64) for i in range(64)], dtype=np.intp)


def _luma(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r * 0.299 + g * 0.587 + b * 0.114).astype(np.float32)


def _downsample64(
    luma: npt.NDArray[np.float32], *, dihedral: bool = False
) -> npt.NDArray[np.float32]:
    """Two Jarosz passes (rows then columns) and decimation to 64x64, as the reference.

    The reference's single hash takes a 64x64 luma as it is; its dihedral hashes filter
    it anyway (window 1, whose running sum is not exactly the identity): so do we.
    """
    n_rows, n_cols = luma.shape
    if n_rows == 64 and n_cols == 64 and not dihedral:
        return luma
    w_rows = (n_cols + 127) // 128  # window along rows (over columns)
    w_cols = (n_rows + 127) // 128  # window along columns (over rows)
    di, dj = _decimation_index(n_rows), _decimation_index(n_cols)
    # Rows of the working array are processed together, so each pass runs along axis 0;
    # cv2.transpose switches layouts (several times faster than a numpy transposed copy).
    t = _box_rows(cv2.transpose(luma), w_rows)  # pass 1 along rows, (C, R)
    x = _box_rows(cv2.transpose(t), w_cols)  # pass 1 along columns, (R, C)
    t = _box_rows(cv2.transpose(x), w_rows, keep=dj)  # pass 2 along rows, (64, R)
    return _box_rows(cv2.transpose(t), w_cols, keep=di)  # pass 2 along columns, (64, 64)


def _quality(a: npt.NDArray[np.float32]) -> int:
    """The reference's gradient-sum quality metric (0..100)."""
    total = 0
    for d in (a[:-1, :] - a[1:, :], a[:, :-1] - a[:, 1:]):
        q = np.trunc((d * _F32(100)) / _F32(255))
        total += int(np.abs(q).sum(dtype=np.float64))
    return min(total // 90, 100)


def _dct16(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``D A D^T`` (16x16) with float32 products summed sequentially, as the reference."""
    d = _dct_matrix()
    prod = d[:, :, None] * a[None, :, :]  # (16, 64k, 64j)
    t = np.cumsum(prod, axis=1, dtype=np.float32)[:, -1, :]  # (16, 64)
    prod = t[:, None, :] * d[None, :, :]  # (16i, 16j, 64k)
    return np.cumsum(prod, axis=2, dtype=np.float32)[:, :, -1]


WHOLE_IMAGE_MAX_PIXELS: Final[int] = 8_000_000
"""Images with more pixels than this are filtered a strip of rows at a time
(:func:`_downsample64_strips`): no full-size float copy of the image is made."""
_STRIP_PIXELS: Final[int] = 1 << 20


def _downsample64_strips(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """:func:`_downsample64` of ``_luma(rgb)`` for a large image, in bounded memory: both
    passes along rows run per strip of rows (keeping the 64 decimated columns), then both
    passes along columns on the ``(R, 64)`` result. The filters are linear, so this equals
    the reference's order (rows, columns, rows, columns) up to float32 rounding."""
    n_rows, n_cols = rgb.shape[:2]
    w_rows = (n_cols + 127) // 128
    w_cols = (n_rows + 127) // 128
    di, dj = _decimation_index(n_rows), _decimation_index(n_cols)
    z = np.empty((64, n_rows), np.float32)
    step = max(1, _STRIP_PIXELS // n_cols)
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        t = _box_rows(cv2.transpose(_luma(rgb[r0:r1])), w_rows)  # (C, r)
        z[:, r0:r1] = _box_rows(t, w_rows, keep=dj)
    x = _box_rows(cv2.transpose(z), w_cols)  # (R, 64)
    return _box_rows(x, w_cols, keep=di)


def _dct_and_quality(image: ImageSource, *, dihedral: bool = False) -> tuple[npt.NDArray[np.float32], int]:
    from tracemark.imageio import rgb_view

    rgb = rgb_view(image)  # read only: an RGB array is not copied
    h, w = rgb.shape[:2]
    if min(h, w) < PDQ_MIN_SIZE:
        raise ImageTooSmallError(f"PDQ needs both sides >= {PDQ_MIN_SIZE} px; got {w}x{h}")
    if h * w > WHOLE_IMAGE_MAX_PIXELS:
        a = _downsample64_strips(rgb)
    else:
        a = _downsample64(_luma(rgb), dihedral=dihedral)
    return _dct16(a), _quality(a)


def _bits(b: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Threshold at Torben's (lower) median; reference bit ``k = 16 i + j`` goes to ``255 - k``."""
    flat = b.ravel()
    median = np.partition(flat, 127)[127]
    return (flat > median)[::-1].astype(np.uint8)


def _dihedral_dcts(b: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    """The reference's ``dct16OriginalTo*``: the 8 orientations from one DCT block."""
    idx = np.arange(16)
    even_i = (idx % 2 == 0)[:, None]  # rows i with i & 1 == 0
    even_j = (idx % 2 == 0)[None, :]
    odd_sum = ((idx[:, None] + idx[None, :]) % 2) == 1
    neg_even_j = np.where(even_j, -b, b)
    neg_even_i = np.where(even_i, -b, b)
    neg_odd_sum = np.where(odd_sum, -b, b)
    return [
        b,
        neg_even_j.T,  # rotate 90: B[j][i] = A[i][j], negated where j is even
        neg_odd_sum,  # rotate 180
        neg_even_i.T,  # rotate 270: negated where i is even
        neg_even_i,  # flip X
        neg_even_j,  # flip Y
        b.T,  # flip +1
        neg_odd_sum.T,  # flip -1
    ]


def _out(bits: npt.NDArray[np.uint8], packed: bool) -> npt.NDArray[np.uint8]:
    return np.packbits(bits, axis=-1) if packed else bits


def pdq_hash(image: ImageSource, *, packed: bool = False) -> tuple[npt.NDArray[np.uint8], int]:
    """PDQ hash and quality (an ``int``, 0..100) of ``image`` (anything ``load_image``
    accepts: a path, bytes, a binary file object, a PIL image, an array).

    Returns 256 bits as ``uint8`` 0/1 (reference bit 255 first), or with ``packed=True``
    the 32 bytes whose hex is the ThreatExchange hash string. Raises the loader's typed
    :class:`~tracemark.errors.ImageError` for anything else and
    :class:`~tracemark.errors.ImageTooSmallError` below 5 px a side.
    """
    b, quality = _dct_and_quality(image)
    return _out(_bits(b), packed), quality


def pdq_dihedral(
    image: ImageSource, *, packed: bool = False
) -> tuple[npt.NDArray[np.uint8], int]:
    """The 8 dihedral PDQ hashes ``(8, 256)`` (or ``(8, 32)`` packed) and the quality, of
    ``image`` (as :func:`pdq_hash`, with the same errors).

    Row order: :data:`DIHEDRAL_NAMES`. Row ``k`` is (nearly) the hash of the image
    transformed by that orientation; see the module docstring.
    """
    b, quality = _dct_and_quality(image, dihedral=True)
    bits = np.stack([_bits(x) for x in _dihedral_dcts(b)])
    return _out(bits, packed), quality


def _as_packed(h: npt.ArrayLike, what: str) -> npt.NDArray[np.uint8]:
    a = np.asarray(h)
    if a.ndim == 0 or a.shape[-1] not in (32, 256):
        raise _FingerprintError(
            f"{what} must end in 256 bits or 32 packed bytes; got shape {a.shape}"
        )
    if a.shape[-1] == 256:
        if a.dtype.kind not in "biu" or not np.isin(a, (0, 1)).all():
            raise _FingerprintError(f"{what}: 256-long hashes must hold only 0 and 1")
        return np.packbits(a.astype(np.uint8), axis=-1)
    if a.dtype != np.uint8:
        raise _FingerprintError(f"{what}: packed hashes must be uint8; got {a.dtype}")
    return a


def pdq_match_distance(
    query_hashes8: npt.ArrayLike, ref_hash: npt.ArrayLike
) -> int | npt.NDArray[np.int64]:
    """Smallest Hamming distance between any of the query's hashes and the reference.

    ``query_hashes8``: ``(k, 256)`` bits or ``(k, 32)`` packed (usually the 8 of
    :func:`pdq_dihedral`), or one hash (``(256,)`` / ``(32,)``); ``ref_hash``: one hash (``(256,)`` / ``(32,)``) -> an ``int``, or
    ``(n, 256)`` / ``(n, 32)`` -> an ``int64`` array of ``n`` distances. Anything else (an
    image, a hex string, other shapes or dtypes) raises
    :class:`~tracemark.errors.FingerprintError`; a hex string is read with
    ``Fingerprint.from_hex("pdq", text).vector``.
    """
    q = _as_packed(query_hashes8, "query_hashes8")
    r = _as_packed(ref_hash, "ref_hash")
    if q.ndim == 1:  # one query hash: the distance between two hashes
        q = q[None, :]
    if q.ndim != 2 or r.ndim not in (1, 2):
        raise _FingerprintError(
            f"expected query (k, bits) and reference (bits,) or (n, bits); "
            f"got {q.shape} and {r.shape}"
        )
    x = np.bitwise_xor(q[None, :, :], np.atleast_2d(r)[:, None, :])  # (n, k, 32)
    d = _POPCOUNT[x].sum(axis=-1, dtype=np.int64).min(axis=1)
    return int(d[0]) if r.ndim == 1 else d


@register_fingerprinter("pdq")
class PDQFingerprinter(Fingerprinter):
    """PDQ (256 bits, Hamming); ``Fingerprint.quality`` is PDQ's quality (0..100).

    The ThreatExchange guidance: hashes with quality below 50 are unreliable, and a
    distance of at most 31 (of 256) is the usual match threshold.
    """

    kind = "binary"
    dim = 256
    metric = "hamming"
    min_size = PDQ_MIN_SIZE

    def _compute(self, rgb: npt.NDArray[np.uint8]) -> Fingerprint:
        a = (_downsample64_strips(rgb) if rgb.shape[0] * rgb.shape[1] > WHOLE_IMAGE_MAX_PIXELS
             else _downsample64(_luma(rgb)))
        return Fingerprint(self.name, np.packbits(_bits(_dct16(a))), float(_quality(a)))
