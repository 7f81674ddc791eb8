"""Visual words with Hamming embedding: SIFT features as (word, signature, angle, scale).

The classical large-scale copy-detection representation (J. Sivic and A. Zisserman, "Video
Google", ICCV 2003, for visual words; H. Jégou, M. Douze and C. Schmid, "Hamming embedding
and weak geometric consistency for large scale image search", ECCV 2008, for the rest):

* **Word.** Each RootSIFT descriptor (:func:`tracemark.fingerprint.local.extract`, bins
  0..15) is assigned to the nearest of :data:`N_WORDS` = 65,536 visual words by a two-level
  vocabulary (D. Nistér and H. Stewénius, "Scalable recognition with a vocabulary tree",
  CVPR 2006): the nearest of 256 coarse centroids, then the nearest of that cell's 256 fine
  centroids. ``word = coarse * 256 + fine`` fits a ``uint16``.
* **Signature.** The descriptor's residual to its fine centroid is projected on
  :data:`SIG_BITS` = 32 random orthogonal directions and each projection thresholded at the
  median of that direction in the coarse cell (learnt in training): a 32-bit code whose
  Hamming distance approximates the descriptor distance *within* a word. (Jégou et al. use
  64 bits and per-word medians; 32 bits and per-cell medians keep the inverted file at
  9 bytes per posting and the model small.)
* **Geometry.** The keypoint's orientation (16 bins of 22.5 degrees) and log2 scale
  (16 half-octave bins) in one byte, :func:`geometry_byte`, for weak geometric
  consistency: the true matches of a copy share one rotation and one scale change.

The model (``data/words_v1.npz``) is trained by ``scripts/train_words.py`` on the corpus
half the VLAD model was trained on (:func:`tracemark.fingerprint.global_desc.in_training_half`),
without any downloaded weights; the benchmarks report the other half.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np

from tracemark.errors import ConfigError, FingerprintError
from tracemark.fingerprint.local import LocalFeatures

__all__ = [
    "COARSE",
    "FINE",
    "N_WORDS",
    "SIG_BITS",
    "Words",
    "WordsError",
    "WordsModel",
    "default_model",
    "fit_model",
    "geometry_byte",
    "quantize",
]

COARSE: Final = 256
"""Coarse centroids of the two-level vocabulary."""
FINE: Final = 256
"""Fine centroids per coarse cell."""
N_WORDS: Final = COARSE * FINE
"""Visual words (65,536: a word id fits a ``uint16``)."""
SIG_BITS: Final = 32
"""Bits of the Hamming-embedding signature."""
ANGLE_BINS: Final = 16
SCALE_BINS: Final = 16
_MAGIC: Final = b"TMWD"
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sBxxxIII")  # magic, version, width, height, n
_MODEL_FILE: Final = "words_v1.npz"


class WordsError(FingerprintError):
    """Serialised words that cannot be read, or a model file that does not fit."""


@dataclass(frozen=True)
class WordsModel:
    """A trained vocabulary and Hamming-embedding projection.

    ``coarse`` (256, 128) float32; ``fine`` (256, 256, 128) float32; ``projection``
    (32, 128) float32 with orthonormal rows; ``medians`` (256, 32) float32 (per coarse cell
    and direction). Descriptor units: RootSIFT bins 0..15.
    """

    coarse: np.ndarray
    fine: np.ndarray
    projection: np.ndarray
    medians: np.ndarray
    info: str = "{}"

    def __post_init__(self) -> None:
        shapes = {"coarse": (COARSE, 128), "fine": (COARSE, FINE, 128),
                  "projection": (SIG_BITS, 128), "medians": (COARSE, SIG_BITS)}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                got = getattr(value, "shape", type(value).__name__)
                raise WordsError(f"words model: {name} must have shape {shape}, got {got}")
        # ||c||^2 of every centroid, for distances by one matrix product
        object.__setattr__(self, "_coarse_sq", np.einsum("ij,ij->i", self.coarse, self.coarse))
        object.__setattr__(self, "_fine_sq", np.einsum("ijk,ijk->ij", self.fine, self.fine))

    def save(self, path: str | Path) -> None:
        """Write the model as ``.npz`` (fine centroids as uint8 in 1/16 bin steps)."""
        np.savez_compressed(
            path,
            coarse=self.coarse.astype(np.float32),
            fine_q=np.clip(np.rint(self.fine * 16), 0, 255).astype(np.uint8),
            projection=self.projection.astype(np.float32),
            medians=self.medians.astype(np.float32),
            info=np.array(self.info),
        )

    @classmethod
    def load(cls, source: str | Path | io.BytesIO) -> WordsModel:
        """Read a model written by :meth:`save`; :class:`WordsError` when it does not fit."""
        try:
            with np.load(source, allow_pickle=False) as z:
                return cls(
                    coarse=z["coarse"].astype(np.float32),
                    fine=z["fine_q"].astype(np.float32) / np.float32(16),
                    projection=z["projection"].astype(np.float32),
                    medians=z["medians"].astype(np.float32),
                    info=str(z["info"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise WordsError(f"cannot read the words model: {exc}") from exc

    def assign(self, descriptors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Words and signatures of RootSIFT descriptors.

        ``descriptors``: (N, 128) uint8 in 0..15 (or float). Returns ``(words (N, k) uint16,
        signatures (N, k) uint32)`` squeezed to ``(N,)`` for ``k == 1``: the ``k`` nearest
        fine words of the descriptor's coarse cell, nearest first (``k > 1`` is multiple
        assignment, Jégou et al. 2010, for queries), each with the signature of the
        residual to that word; signature bit ``i`` (LSB first) is set when the residual's
        projection on direction ``i`` exceeds the cell's median.
        """
        d = np.asarray(descriptors, np.float32)
        if d.ndim != 2 or d.shape[1] != 128:
            raise ConfigError(f"descriptors must have shape (N, 128), got {d.shape}")
        if not isinstance(k, int) or not 1 <= k <= FINE:
            raise ConfigError(f"k must be an int in [1, {FINE}], got {k!r}")
        n = len(d)
        if n == 0:
            shape = (0,) if k == 1 else (0, k)
            return np.empty(shape, np.uint16), np.empty(shape, np.uint32)
        coarse = np.argmin(self._coarse_sq[None, :] - 2.0 * (d @ self.coarse.T), axis=1)  # type: ignore[attr-defined]
        fine = np.empty((n, k), np.int64)
        for c in np.unique(coarse):
            rows = np.flatnonzero(coarse == c)
            cents = self.fine[c]
            dist = self._fine_sq[c][None, :] - 2.0 * (d[rows] @ cents.T)  # type: ignore[attr-defined]
            if k == 1:
                fine[rows, 0] = np.argmin(dist, axis=1)
            else:
                part = np.argpartition(dist, k - 1, axis=1)[:, :k]
                order = np.argsort(np.take_along_axis(dist, part, axis=1), axis=1)
                fine[rows] = np.take_along_axis(part, order, axis=1)
        residual = d[:, None, :] - self.fine[coarse[:, None], fine]
        proj = residual @ self.projection.T
        bits = proj > self.medians[coarse][:, None, :]
        weights = (np.uint32(1) << np.arange(SIG_BITS, dtype=np.uint32))
        sigs = (bits.astype(np.uint32) * weights).sum(axis=2, dtype=np.uint64).astype(np.uint32)
        words = (coarse[:, None] * FINE + fine).astype(np.uint16)
        if k == 1:
            return words[:, 0], sigs[:, 0]
        return words, sigs


@dataclass(frozen=True, eq=False)
class Words:
    """One image's features as visual words (see the module docstring).

    ``words`` (N,) uint16; ``signatures`` (N,) uint32; ``geometry`` (N,) uint8
    (:func:`geometry_byte`); ``xy`` (N, 2) float32 positions in the image's original pixels;
    ``width``, ``height`` in pixels.
    """

    words: np.ndarray
    signatures: np.ndarray
    geometry: np.ndarray
    xy: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.words.shape[0])

    def to_bytes(self) -> bytes:
        """Layout: header ``<4sBxxxIII`` (``b"TMWD"``, version 1, width, height, N), then
        zlib of words uint16, signatures uint32, geometry uint8, xy float16 (N, 2); all
        little-endian. 11 bytes per feature before compression."""
        body = b"".join((
            self.words.astype("<u2").tobytes(),
            self.signatures.astype("<u4").tobytes(),
            self.geometry.astype(np.uint8).tobytes(),
            self.xy.astype("<f2").tobytes(),
        ))
        return _HEADER.pack(_MAGIC, _VERSION, self.width, self.height, len(self)) + zlib.compress(body, 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> Words:
        """Read what :meth:`to_bytes` wrote; :class:`WordsError` on anything else."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WordsError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise WordsError("not serialised words (bad magic or too short)")
        _, version, width, height, n = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise WordsError(f"unsupported words format version {version}")
        try:
            body = zlib.decompress(data[_HEADER.size:])
        except zlib.error as exc:
            raise WordsError(f"corrupt words payload: {exc}") from exc
        if len(body) != 11 * n:
            raise WordsError(f"words payload holds {len(body)} bytes, expected {11 * n}")
        words = np.frombuffer(body, "<u2", n, 0).astype(np.uint16)
        sigs = np.frombuffer(body, "<u4", n, 2 * n).astype(np.uint32)
        geometry = np.frombuffer(body, np.uint8, n, 6 * n).copy()
        xy = np.frombuffer(body, "<f2", 2 * n, 7 * n).reshape(n, 2).astype(np.float32)
        return cls(words, sigs, geometry, xy, int(width), int(height))


def geometry_byte(angle: np.ndarray | None, scale: np.ndarray | None) -> np.ndarray:
    """Orientation and scale of keypoints in one byte each: ``angle_bin << 4 | scale_bin``.

    ``angle`` (N,) degrees (OpenCV's sense) -> 16 bins of 22.5 degrees; ``scale`` (N,)
    keypoint diameter in pixels -> ``clip(round(2 * log2(scale)), 0, 15)`` (half octaves,
    1 to 181 px). Missing angle or scale gives bin 0.
    """
    if angle is None or scale is None:
        present = angle if angle is not None else scale
        return np.zeros(0 if present is None else len(present), np.uint8)
    a = (np.floor(np.mod(np.asarray(angle, np.float64), 360.0) / (360.0 / ANGLE_BINS)).astype(np.int64)) % ANGLE_BINS
    s = np.clip(np.rint(2.0 * np.log2(np.maximum(np.asarray(scale, np.float64), 1.0))), 0, SCALE_BINS - 1).astype(np.int64)
    return ((a << 4) | s).astype(np.uint8)


def quantize(features: LocalFeatures, model: WordsModel | None = None, *,
             assign: int = 1) -> Words:
    """The :class:`Words` of SIFT features (``features.kind == "sift"``).

    ``assign > 1`` (multiple assignment, for queries): each feature appears ``assign``
    times, with its ``assign`` nearest words (feature ``i``'s copies are rows
    ``i * assign ... i * assign + assign - 1``). Raises :class:`WordsError` for ORB features
    (the vocabulary is RootSIFT's)."""
    if not isinstance(features, LocalFeatures) or features.kind != "sift":
        raise WordsError("quantize() takes SIFT LocalFeatures")
    m = model or default_model()
    words, sigs = m.assign(features.descriptors, assign)
    n = len(features)
    geometry = (geometry_byte(features.angle, features.scale)
                if features.angle is not None and features.scale is not None
                else np.zeros(n, np.uint8))
    xy = features.xy.astype(np.float32)
    if assign > 1:
        words, sigs = words.reshape(-1), sigs.reshape(-1)
        geometry, xy = np.repeat(geometry, assign), np.repeat(xy, assign, axis=0)
    return Words(words, sigs, geometry, xy, int(features.width), int(features.height))


@lru_cache(maxsize=1)
def default_model() -> WordsModel:
    """The shipped model (``tracemark/fingerprint/data/words_v1.npz``), loaded once."""
    ref = resources.files("tracemark.fingerprint") / "data" / _MODEL_FILE
    return WordsModel.load(io.BytesIO(ref.read_bytes()))


def fit_model(descriptors: np.ndarray, *, seed: int = 0, niter: int = 12,
              info: dict[str, object] | None = None) -> WordsModel:
    """Train a vocabulary and HE projection on RootSIFT descriptors ((N, 128), bins 0..15).

    k-means (FAISS, ``seed``) for the 256 coarse centroids, then per coarse cell k-means
    for its 256 fine centroids (a cell with fewer descriptors than 256 repeats its
    descriptors with jitter); the projection is a random orthogonal matrix (QR of a
    Gaussian, ``seed``) and the medians are taken per cell over its residuals.
    """
    import faiss

    d = np.ascontiguousarray(descriptors, np.float32)
    if d.ndim != 2 or d.shape[1] != 128 or len(d) < 10 * COARSE:
        raise ConfigError(f"need (N >= {10 * COARSE}, 128) descriptors, got {d.shape}")
    rng = np.random.default_rng(seed)
    km = faiss.Kmeans(128, COARSE, niter=niter, seed=seed, verbose=False)
    km.train(d)
    coarse = km.centroids.astype(np.float32)
    _, assign = km.index.search(d, 1)
    assign = assign[:, 0]
    fine = np.empty((COARSE, FINE, 128), np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    projection = q[:SIG_BITS].astype(np.float32)
    medians = np.zeros((COARSE, SIG_BITS), np.float32)
    for c in range(COARSE):
        cell = d[assign == c]
        if len(cell) == 0:
            cell = coarse[c][None, :]
        train = cell
        if len(train) < 4 * FINE:
            reps = int(np.ceil(4 * FINE / len(train)))
            train = np.repeat(train, reps, axis=0) + rng.normal(0, 0.25, (len(train) * reps, 128)).astype(np.float32)
        kmf = faiss.Kmeans(128, FINE, niter=niter, seed=seed + c + 1, verbose=False)
        kmf.train(np.ascontiguousarray(train, np.float32))
        # stored in 1/16 bin steps (:meth:`WordsModel.save`): quantise now so the medians
        # are those of the residuals the shipped model will compute
        fine[c] = np.clip(np.rint(kmf.centroids * 16), 0, 255) / np.float32(16)
        dist = (fine[c] ** 2).sum(axis=1)[None, :] - 2.0 * (cell @ fine[c].T)
        residual = cell - fine[c][np.argmin(dist, axis=1)]
        medians[c] = np.median(residual @ projection.T, axis=0)
    meta = {"seed": seed, "descriptors": int(len(d)), **(info or {})}
    return WordsModel(coarse, fine, projection, medians, info=json.dumps(meta, sort_keys=True))
