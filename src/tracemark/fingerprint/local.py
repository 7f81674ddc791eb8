"""Local features and geometric verification: is this query an edited copy of that reference?

:func:`extract` finds keypoints (OpenCV SIFT with RootSIFT descriptors, or ORB) on a copy
of the image whose long side is at most ``max_side``, keeps the ``max_features`` strongest
*spread over the image* and reports their positions in the **original** image's pixels
(pixel centres at integers). The features are ordered so that every prefix is itself
spread out (round robin over a :data:`GRID` x :data:`GRID` grid, strongest first within a
cell): ``features.head(n)`` is what ``extract(..., max_features=n)`` would have kept, and
a small crop of the image still holds its share of the features.

:func:`verify` matches a query against one reference (mutual nearest neighbours plus
Lowe's ratio test) and fits a transform with RANSAC: a similarity (rotation, uniform scale,
translation: :func:`cv2.estimateAffinePartial2D`), then, when enough matches agree, a
homography (:func:`cv2.findHomography` with MAGSAC++) that is kept only if it explains
clearly more matches and is not degenerate. The check is asymmetric on purpose: the query
may be a small crop of the reference (few of the reference's features can match) or the
reference may be an inset of the query (a copy pasted into a larger picture: few of the
query's features can match). ``inlier_ratio`` therefore divides by the features that lie in
the *overlap* of the two images on the smaller side, not by all features.

Flips. SIFT and ORB descriptors are not mirror invariant. :func:`verify` also matches the
features of the horizontally mirrored query (``query.mirror``) and keeps the better result;
the transform it reports always maps the *unmirrored* query's pixels into the reference
(its linear part then has a negative determinant). For SIFT the mirrored features come for
free: mirroring an image mirrors each keypoint's frame, which reverses the rows of the 4x4
descriptor grid and negates gradient orientations, so :func:`mirrored` permutes the
descriptor bins instead of running SIFT again (the permuted descriptor is within about 12%
relative L2 of one computed on the flipped image). ORB's sampling pattern has no such
symmetry: ask :func:`extract` for ``mirror=True`` to compute the mirrored ORB features on
the flipped image. A vertical flip is a horizontal flip plus a 180 degree rotation, which
the similarity covers.

RootSIFT descriptors are stored with 4 bits per bin (values 0..15 in a ``uint8`` array)
so that 500 features serialise to about 25 KB (:meth:`LocalFeatures.to_bytes`); ORB
descriptors are the usual 32 bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeAlias

import cv2
import numpy as np

from tracemark.errors import ConfigError, CorruptImageError, FingerprintError
from tracemark.imageio import ImageSource, rgb_view

__all__ = [
    "GRID",
    "FeatureKind",
    "LocalFeatureError",
    "LocalFeatures",
    "Verification",
    "extract",
    "mirrored",
    "verify",
]

FeatureKind: TypeAlias = Literal["orb", "sift"]

GRID: Final = 6
"""Features are spread over a ``GRID`` x ``GRID`` grid of the (downscaled) image."""

_KINDS: Final[dict[str, int]] = {"orb": 32, "sift": 128}  # kind -> descriptor bytes
_KIND_CODES: Final[tuple[str, ...]] = ("orb", "sift")
_ROOT_LEVELS: Final = 15  # RootSIFT bins are quantised to 0..15
_ROOT_SCALE: Final = 60.0  # RootSIFT values are <= ~0.27; 0.25 maps to 15
_MAGIC: Final = b"TMLF"
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sBBBxIII")  # magic, version, kind, flags, width, height, n
_HAS_SHAPE: Final = 1
_MAX_SCALE: Final = 16.0  # similarity scale outside [1/16, 16] is degenerate
_SIFT_CONTRAST: Final = 0.02  # half of OpenCV's default: flat artwork still gets features
_MIN_MODEL_INLIERS: Final = 4  # fewer inliers than this: no transform is reported


class LocalFeatureError(FingerprintError):
    """Local features are inconsistent, of the wrong kind, or their bytes are corrupt."""


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and descriptors of one image, positions in its original pixels."""

    xy: np.ndarray
    """``(N, 2)`` float32 ``x, y`` in the original image (pixel centres at integers)."""
    descriptors: np.ndarray
    """``(N, 32)`` uint8 ORB bits, or ``(N, 128)`` uint8 RootSIFT bins in 0..15."""
    kind: FeatureKind
    width: int
    height: int
    scale: np.ndarray | None = None
    """``(N,)`` float32 keypoint diameter in original pixels (float16 precision)."""
    angle: np.ndarray | None = None
    """``(N,)`` float32 keypoint orientation in degrees, OpenCV's sense (float16 precision)."""
    mirror: LocalFeatures | None = field(default=None, repr=False)
    """Features of the horizontally mirrored image, in its own pixels (never serialised)."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise LocalFeatureError(f"kind must be 'orb' or 'sift', got {self.kind!r}")
        n = _check_array(self.xy, "xy", np.float32, (None, 2))
        _check_array(self.descriptors, "descriptors", np.uint8, (n, _KINDS[self.kind]))
        for name in ("scale", "angle"):
            value = getattr(self, name)
            if value is not None:
                _check_array(value, name, np.float32, (n,))
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                   for v in (self.width, self.height)):
            raise LocalFeatureError(
                f"width and height must be ints; got {self.width!r} and {self.height!r}"
            )
        if self.mirror is not None and not isinstance(self.mirror, LocalFeatures):
            raise LocalFeatureError(f"mirror must be LocalFeatures; got {type(self.mirror).__name__}")
        if self.width < 1 or self.height < 1:
            raise LocalFeatureError(
                f"width and height must be >= 1, got {self.width}x{self.height}"
            )

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def head(self, n: int) -> LocalFeatures:
        """The first ``n`` features (still spread over the image; see the module docstring).
        ``n`` is an ``int >= 0`` (:class:`~tracemark.errors.ConfigError` otherwise)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ConfigError(f"n must be an int >= 0, got {n!r}")
        return LocalFeatures(
            xy=self.xy[:n],
            descriptors=self.descriptors[:n],
            kind=self.kind,
            width=self.width,
            height=self.height,
            scale=None if self.scale is None else self.scale[:n],
            angle=None if self.angle is None else self.angle[:n],
            mirror=None if self.mirror is None else self.mirror.head(n),
        )

    def to_bytes(self) -> bytes:
        """A compact versioned serialisation (``mirror`` is not included).

        Layout: header ``<4sBBBxIII`` (``b"TMLF"``, version 1, kind 0=orb/1=sift, flags
        bit 0 = scale and angle present, width, height, N), then zlib of: xy float32
        ``(N, 2)``, [scale, angle float16 ``(N,)``], descriptors (SIFT: two 4-bit bins per
        byte, high nibble first; ORB: raw). All little-endian.
        """
        parts = [self.xy.astype("<f4").tobytes()]
        has_shape = self.scale is not None and self.angle is not None
        if self.scale is not None and self.angle is not None:
            parts += [self.scale.astype("<f2").tobytes(), self.angle.astype("<f2").tobytes()]
        d = self.descriptors
        parts.append(
            ((d[:, 0::2] << 4) | d[:, 1::2]).tobytes() if self.kind == "sift" else d.tobytes()
        )
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            _KIND_CODES.index(self.kind),
            _HAS_SHAPE if has_shape else 0,
            self.width,
            self.height,
            len(self),
        )
        return header + zlib.compress(b"".join(parts), 9)

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        """Read what :meth:`to_bytes` wrote; raises :class:`LocalFeatureError` on bad bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalFeatureError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise LocalFeatureError("not serialised local features (bad magic or too short)")
        _, version, kind_code, flags, width, height, n = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise LocalFeatureError(f"unsupported local-feature format version {version}")
        if kind_code >= len(_KIND_CODES):
            raise LocalFeatureError(f"unknown feature kind code {kind_code}")
        kind = _KIND_CODES[kind_code]
        try:
            body = zlib.decompress(data[_HEADER.size :])
        except zlib.error as exc:
            raise LocalFeatureError(f"corrupt local-feature payload: {exc}") from exc
        has_shape = bool(flags & _HAS_SHAPE)
        dbytes = _KINDS[kind] // (2 if kind == "sift" else 1)
        expected = n * (8 + (4 if has_shape else 0) + dbytes)
        if len(body) != expected:
            raise LocalFeatureError(f"payload holds {len(body)} bytes, expected {expected}")
        xy = np.frombuffer(body, "<f4", 2 * n, 0).reshape(n, 2).astype(np.float32)
        offset = 8 * n
        scale = angle = None
        if has_shape:
            scale = np.frombuffer(body, "<f2", n, offset).astype(np.float32)
            angle = np.frombuffer(body, "<f2", n, offset + 2 * n).astype(np.float32)
            offset += 4 * n
        raw = np.frombuffer(body, np.uint8, n * dbytes, offset).reshape(n, dbytes)
        if kind == "sift":
            desc = np.empty((n, 128), np.uint8)
            desc[:, 0::2], desc[:, 1::2] = raw >> 4, raw & 15
        else:
            desc = raw.copy()
        return cls(xy, desc, kind, width, height, scale, angle)


@dataclass(frozen=True, eq=False)
class Verification:
    """The outcome of :func:`verify`: how many matches agree on one transform, and which."""

    inliers: int
    """Matches consistent with ``transform`` (distinct query positions)."""
    matches: int
    """Tentative matches (mutual nearest neighbours passing the ratio test)."""
    transform: np.ndarray | None
    """3x3 float64 mapping query pixels to reference pixels (affine: last row 0 0 1)."""
    region: np.ndarray | None
    """``(4, 2)`` query corners mapped into the reference, clipped to it."""
    query_region: np.ndarray | None
    """``(4, 2)`` reference corners mapped into the query, clipped to it (where the copy is)."""
    inlier_ratio: float
    """``inliers`` over the features of the smaller side that lie in the overlap."""
    kind: Literal["homography", "affine", "none"]
    flipped: bool = False
    """The query matched as a mirror image of the reference."""
    alignment: np.ndarray | None = None
    """3x3 float64 query -> reference for aligning pixels (e.g. to read a watermark): the
    homography where it explains nearly as many matches as ``transform`` (at least 90%),
    since a similarity cannot undo perspective; else ``transform``."""

    @property
    def found(self) -> bool:
        """A transform was found (whether it is *enough* is the caller's threshold on ``inliers``)."""
        return self.transform is not None


def extract(
    image: ImageSource,
    *,
    kind: FeatureKind = "sift",
    max_features: int = 500,
    max_side: int = 640,
    mirror: bool = False,
) -> LocalFeatures:
    """Keypoints of ``image`` (any input :func:`~tracemark.imageio.load_image` takes).

    The image is converted to grey and shrunk (area interpolation) so its long side is at
    most ``max_side``; positions are reported in the original pixels. ``mirror=True`` also
    sets ``.mirror``: the features of the horizontally flipped image (see :func:`mirrored`).
    An image without texture gives zero features, which is not an error.
    """
    if kind not in _KINDS:
        raise ConfigError(f"kind must be 'orb' or 'sift', got {kind!r}")
    if not isinstance(max_features, int) or max_features < 1:
        raise ConfigError(f"max_features must be an int >= 1, got {max_features!r}")
    if not isinstance(max_side, int) or max_side < 32:
        raise ConfigError(f"max_side must be an int >= 32, got {max_side!r}")
    rgb = rgb_view(image)  # read only: an RGB array is not copied
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    f = min(1.0, max_side / max(height, width))
    small = grey
    if f < 1.0:
        size = (max(1, round(width * f)), max(1, round(height * f)))
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    features = _detect(small, kind, max_features, width, height)
    if mirror:
        if kind == "sift":
            features = _with_mirror(features, mirrored(features))
        else:
            flipped = _detect(
                np.ascontiguousarray(small[:, ::-1]), kind, max_features, width, height
            )
            features = _with_mirror(features, flipped)
    return features


def mirrored(features: LocalFeatures) -> LocalFeatures:
    """SIFT features of the horizontally mirrored image, by permuting descriptor bins.

    Positions become ``x' = width - 1 - x``, angles ``180 - angle``; each descriptor's 4x4
    grid has its rows reversed and its 8 orientation bins negated. ORB raises
    :class:`LocalFeatureError` (extract with ``mirror=True`` instead), as does anything
    that is not :class:`LocalFeatures`.
    """
    if not isinstance(features, LocalFeatures):
        raise LocalFeatureError(f"mirrored() takes LocalFeatures; got {type(features).__name__}")
    if features.kind != "sift":
        raise LocalFeatureError("only SIFT features can be mirrored without the image")
    n = len(features)
    xy = features.xy.copy()
    xy[:, 0] = np.float32(features.width - 1) - xy[:, 0]
    o = (-np.arange(8)) % 8
    desc = features.descriptors.reshape(n, 4, 4, 8)[:, ::-1][..., o].reshape(n, 128)
    angle = None if features.angle is None else _f16((180.0 - features.angle) % 360.0)
    return LocalFeatures(
        xy=xy,
        descriptors=np.ascontiguousarray(desc),
        kind="sift",
        width=features.width,
        height=features.height,
        scale=features.scale,
        angle=angle,
    )


def verify(
    query: LocalFeatures,
    ref: LocalFeatures,
    *,
    ratio: float = 0.8,
    flips: bool = True,
    homography: bool = True,
    threshold: float | None = None,
) -> Verification:
    """Match ``query`` to ``ref`` and fit query -> reference with RANSAC.

    ``ratio`` is Lowe's ratio; ``flips`` also tries the mirrored query (``query.mirror``,
    or :func:`mirrored` for SIFT); ``homography`` allows a homography where it explains
    clearly more matches than the similarity; ``threshold`` is the RANSAC reprojection
    error in reference pixels (default ``max(2, 0.0075 * long side)``). Returns a
    :class:`Verification` (``kind="none"`` when no transform holds: not an error).
    """
    if not isinstance(query, LocalFeatures) or not isinstance(ref, LocalFeatures):
        raise LocalFeatureError("verify() takes two LocalFeatures")
    if query.kind != ref.kind:
        raise LocalFeatureError(f"cannot match {query.kind} features against {ref.kind} features")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < ratio <= 1.0:
        raise ConfigError(f"ratio must be a number in (0, 1], got {ratio!r}")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, int | float)):
        raise ConfigError(f"threshold must be a number or None, got {threshold!r}")
    thr = max(2.0, 0.0075 * max(ref.width, ref.height)) if threshold is None else float(threshold)
    if not thr > 0:
        raise ConfigError(f"threshold must be > 0, got {threshold}")
    variants = [(query, False)]
    if flips:
        mirror = query.mirror
        if mirror is None and query.kind == "sift":
            mirror = mirrored(query)
        if mirror is not None:
            variants.append((mirror, True))
    results = [_verify_one(q, ref, ratio, thr, homography, f, query) for q, f in variants]
    best = max(results, key=lambda v: (v.inliers, v.matches, not v.flipped))
    return best


# --- extraction ----------------------------------------------------------------------


def _detect(
    small: np.ndarray, kind: str, max_features: int, width: int, height: int
) -> LocalFeatures:
    """Detect on the downscaled grey image; keep a spread-out prefix; map to original pixels."""
    h, w = small.shape
    if kind == "sift":
        detector = cv2.SIFT_create(contrastThreshold=_SIFT_CONTRAST)
    else:
        detector = cv2.ORB_create(nfeatures=4 * max_features, fastThreshold=10, edgeThreshold=15)
    try:
        keypoints, desc = detector.detectAndCompute(small, None)
    except cv2.error as exc:  # pragma: no cover - OpenCV rejects only odd inputs
        raise CorruptImageError(f"feature detection failed: {exc}") from exc
    if desc is None or not keypoints:
        return _empty(kind, width, height)
    pts = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
    response = np.array([k.response for k in keypoints], np.float64)
    order = _spread_order(pts, response, w, h)[:max_features]
    sx, sy = width / w, height / h
    xy = np.empty((len(order), 2), np.float32)
    xy[:, 0] = (pts[order, 0] + 0.5) * sx - 0.5
    xy[:, 1] = (pts[order, 1] + 0.5) * sy - 0.5
    scale = _f16(np.array([keypoints[i].size for i in order], np.float64) * (sx + sy) / 2)
    angle = _f16(np.array([keypoints[i].angle for i in order], np.float64) % 360.0)
    d = desc[order]
    if kind == "sift":
        d = _rootsift(d)
    return LocalFeatures(xy, np.ascontiguousarray(d, np.uint8), kind, width, height, scale, angle)  # type: ignore[arg-type]


def _spread_order(pts: np.ndarray, response: np.ndarray, w: int, h: int) -> np.ndarray:
    """Indices ordered by (rank within grid cell, -response): every prefix is spread out."""
    cx = np.minimum((pts[:, 0] * GRID / w).astype(np.int64), GRID - 1)
    cy = np.minimum((pts[:, 1] * GRID / h).astype(np.int64), GRID - 1)
    cell = np.clip(cy, 0, GRID - 1) * GRID + np.clip(cx, 0, GRID - 1)
    by_cell = np.lexsort((-response, cell))  # cell ascending, strongest first within it
    sorted_cell = cell[by_cell]
    starts = np.searchsorted(sorted_cell, sorted_cell, side="left")
    rank = np.empty(len(pts), np.int64)
    rank[by_cell] = np.arange(len(pts)) - starts
    return np.lexsort((-response, rank))


def _rootsift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (square root of the L1-normalised descriptor), quantised to 0..15."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), np.float32(1e-7))
    q = np.rint(np.sqrt(d) * np.float32(_ROOT_SCALE))
    return np.minimum(q, _ROOT_LEVELS).astype(np.uint8)


def _empty(kind: str, width: int, height: int) -> LocalFeatures:
    z = np.zeros(0, np.float32)
    return LocalFeatures(
        np.zeros((0, 2), np.float32),
        np.zeros((0, _KINDS[kind]), np.uint8),
        kind,  # type: ignore[arg-type]
        width,
        height,
        z,
        z.copy(),
    )


def _with_mirror(features: LocalFeatures, mirror: LocalFeatures) -> LocalFeatures:
    return LocalFeatures(
        features.xy,
        features.descriptors,
        features.kind,
        features.width,
        features.height,
        features.scale,
        features.angle,
        mirror,
    )


def _f16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64).astype(np.float16).astype(np.float32)


def _check_array(a: object, name: str, dtype: type, shape: tuple[int | None, int | None]) -> int:
    if not isinstance(a, np.ndarray):
        raise LocalFeatureError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype or a.ndim != len(shape):
        raise LocalFeatureError(
            f"{name} must be {np.dtype(dtype).name} with {len(shape)} dims, "
            f"got {a.dtype} with shape {a.shape}"
        )
    for got, want in zip(a.shape, shape, strict=True):
        if want is not None and got != want:
            raise LocalFeatureError(f"{name} must have shape {shape}, got {a.shape}")
    return int(a.shape[0])


# --- matching and verification -------------------------------------------------------


def _match(q: LocalFeatures, r: LocalFeatures, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours passing the ratio test: (query indices, reference indices)."""
    none = np.zeros(0, np.int64)
    if len(q) < 1 or len(r) < 2:
        return none, none
    rows = np.arange(len(q))
    if q.kind == "sift":
        a = q.descriptors.astype(np.float32)
        b = r.descriptors.astype(np.float32)
        # cv2.gemm: steady ~0.5 ms for 500 x 500 (threaded BLAS stalls on a busy machine)
        dist = cv2.gemm(a, b, -2.0, None, 0.0, flags=cv2.GEMM_2_T)
        dist += (a * a).sum(1)[:, None]
        dist += (b * b).sum(1)[None, :]
        np.maximum(dist, 0.0, out=dist)
        limit = ratio * ratio  # squared distances
        nn = np.argmin(dist, axis=1)
        d1 = dist[rows, nn]
        two = np.partition(dist, 1, axis=1)[:, 1]
        back = np.argmin(dist, axis=0)
    else:
        hamming = cv2.NORM_HAMMING
        d2, i2 = cv2.batchDistance(q.descriptors, r.descriptors, cv2.CV_32S, normType=hamming, K=2)
        _, ib = cv2.batchDistance(r.descriptors, q.descriptors, cv2.CV_32S, normType=hamming, K=1)
        nn, d1, two = i2[:, 0].astype(np.int64), d2[:, 0], d2[:, 1]
        back = ib[:, 0].astype(np.int64)
        limit = ratio
    keep = (back[nn] == rows) & (d1 < limit * two)
    return rows[keep], nn[keep]


def _verify_one(
    q: LocalFeatures,
    r: LocalFeatures,
    ratio: float,
    thr: float,
    allow_h: bool,
    flipped: bool,
    original: LocalFeatures,
) -> Verification:
    qi, ri = _match(q, r, ratio)
    nothing = Verification(0, len(qi), None, None, None, 0.0, "none", flipped)
    if len(qi) < _MIN_MODEL_INLIERS:
        return nothing
    src = q.xy[qi].astype(np.float32)
    dst = r.xy[ri].astype(np.float32)
    m, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=2000, confidence=0.995
    )
    if m is None or mask is None:
        return nothing
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if not 1.0 / _MAX_SCALE <= s <= _MAX_SCALE:
        return nothing
    t = np.vstack([m, [0.0, 0.0, 1.0]])
    inl = mask.ravel().astype(bool)
    count = _distinct(src[inl])
    kind: Literal["homography", "affine"] = "affine"
    align: np.ndarray | None = None
    if allow_h and count >= 12:
        h, hmask = cv2.findHomography(
            src, dst, cv2.USAC_MAGSAC, thr, maxIters=1000, confidence=0.995
        )
        if h is not None and hmask is not None and _sane_homography(h, q.width, q.height):
            hinl = hmask.ravel().astype(bool)
            hcount = _distinct(src[hinl])
            if hcount >= count * 1.15 + 2:
                t, inl, count, kind = h / h[2, 2], hinl, hcount, "homography"
            elif hcount >= 0.9 * count:
                align = h / h[2, 2]
    if count < _MIN_MODEL_INLIERS:
        return nothing
    if align is None:
        align = t
    if flipped:  # original query pixel -> mirrored query pixel -> reference
        flip = np.array([[-1.0, 0.0, q.width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        t = t @ flip
        align = align @ flip
    return replace(_finish(t, original, r, count, len(qi), kind, flipped), alignment=align)


def _finish(
    t: np.ndarray,
    q: LocalFeatures,
    r: LocalFeatures,
    count: int,
    n_matches: int,
    kind: Literal["homography", "affine"],
    flipped: bool,
) -> Verification:
    inv = np.linalg.inv(t)
    q_corners = _corners(q.width, q.height)
    r_corners = _corners(r.width, r.height)
    region = _clip(_apply(t, q_corners), r.width, r.height)
    query_region = _clip(_apply(inv, r_corners), q.width, q.height)
    q_in = int(_inside(_apply(t, q.xy), r.width, r.height).sum()) if len(q) else 0
    r_in = int(_inside(_apply(inv, r.xy), q.width, q.height).sum()) if len(r) else 0
    ratio = min(1.0, count / max(1, min(q_in, r_in)))
    return Verification(count, n_matches, t, region, query_region, ratio, kind, flipped)


def _distinct(xy: np.ndarray) -> int:
    """Distinct positions (SIFT may place several orientations on one keypoint)."""
    if len(xy) == 0:
        return 0
    return int(len(np.unique(np.rint(xy).astype(np.int64), axis=0)))


def _sane_homography(h: np.ndarray, width: int, height: int) -> bool:
    """Corners stay in front of the camera and keep a convex, same-orientation outline."""
    corners = _corners(width, height)
    w = corners @ h[2, :2] + h[2, 2]
    if np.any(w <= 1e-8 * abs(h[2, 2])) or not np.all(np.isfinite(h)):
        return False
    p = _apply(h, corners)
    edges = np.roll(p, -1, axis=0) - p
    cross = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
        - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    )
    if not (np.all(cross > 0) or np.all(cross < 0)):
        return False
    area = abs(cross.sum()) / 4.0  # mean of the 4 triangle areas x2 / 2
    ratio = area / float(width * height)
    return 1.0 / _MAX_SCALE**2 <= ratio <= _MAX_SCALE**2


def _corners(width: int, height: int) -> np.ndarray:
    return np.array(
        [[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]],
        np.float64,
    )


def _apply(t: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.asarray(xy, np.float64) @ t[:2, :2].T + t[:2, 2]
    w = np.asarray(xy, np.float64) @ t[2, :2] + t[2, 2]
    return p / w[:, None]


def _clip(p: np.ndarray, width: int, height: int) -> np.ndarray:
    out = p.copy()
    out[:, 0] = np.clip(out[:, 0], -0.5, width - 0.5)
    out[:, 1] = np.clip(out[:, 1], -0.5, height - 0.5)
    return out


def _inside(p: np.ndarray, width: int, height: int) -> np.ndarray:
    return (
        (p[:, 0] >= -0.5) & (p[:, 0] <= width - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= height - 0.5)
    )
