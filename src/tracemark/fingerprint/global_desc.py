"""A global float descriptor for candidate retrieval: PCA-whitened VLAD over RootSIFT.

The image's SIFT features (:func:`tracemark.fingerprint.local.extract`, up to
:data:`N_FEATURES`) are projected to ``d`` dims (PCA), assigned to the nearest of ``k``
visual words, and their residuals summed per word (VLAD). Each word's sum is L2-normalised
(intra-normalisation, against bursts of one texture), the whole vector is power-normalised
(signed square root) and L2-normalised, then centred, projected and whitened by a trained
PCA to :data:`DIM` dims and L2-normalised again. Compare descriptors by inner product
(cosine). SIFT makes it invariant to rotation and scale and robust to colour changes;
positions are not used, so a crop keeps the words of what it shows.

Regions. A crop to 30% of the area keeps only part of the words, so a reference is best
stored as several rows: :func:`describe_regions` describes the whole image and
:data:`REGIONS` (centre and four corner windows of 60% per side), all from one feature
extraction (a region takes the features whose keypoint lies inside it). A query is also
described by regions (a copy inset into a larger picture matches from one of its windows),
and with ``mirror=True`` the mirrored query's rows are added (SIFT descriptors mirrored by
permutation, :func:`tracemark.fingerprint.local.mirrored`): score a pair by the maximum
inner product over query rows x reference rows.

The model (codebook, PCA) is ``data/vlad_v1.npz``, trained by ``scripts/train_codebook.py``
without any downloaded weights. Leakage caveat: it was trained on the half of
``shared/data/corpus`` whose file name's SHA-1 starts with an even byte, and benchmarks
built from the same corpus also use that half; the training learns the statistics of
generic SIFT descriptors, not the images, but report results on the odd half
(:func:`in_training_half`) to be safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from tracemark.errors import ConfigError, FingerprintError
from tracemark.fingerprint.base import Fingerprint, Fingerprinter, register_fingerprinter
from tracemark.fingerprint.local import LocalFeatures, extract, mirrored
from tracemark.imageio import ImageSource

__all__ = [
    "DIM",
    "N_FEATURES",
    "REGIONS",
    "GlobalDescriptorError",
    "VladFingerprinter",
    "VladModel",
    "default_model",
    "describe",
    "describe_features",
    "describe_regions",
    "fit_model",
    "in_training_half",
    "vlad_raw",
]

N_FEATURES: Final = 1000
"""SIFT features per image used for the descriptor."""
DIM: Final = 256
"""Dimension of the shipped model's descriptor."""
WHOLE: Final = (0.0, 0.0, 1.0, 1.0)
REGIONS: Final[tuple[tuple[float, float, float, float], ...]] = (
    WHOLE,
    (0.2, 0.2, 0.8, 0.8),
    (0.0, 0.0, 0.6, 0.6),
    (0.4, 0.0, 1.0, 0.6),
    (0.0, 0.4, 0.6, 1.0),
    (0.4, 0.4, 1.0, 1.0),
)
"""Default regions ``(x0, y0, x1, y1)`` as fractions of the width and height."""
MIN_REGION_FEATURES: Final = 5
"""A region with fewer features gets a zero row (it matches nothing)."""

_MODEL_FILE: Final = "vlad_v1.npz"


class GlobalDescriptorError(FingerprintError):
    """A VLAD model file is missing, corrupt, or inconsistent."""


@dataclass(frozen=True, eq=False)
class VladModel:
    """Everything :func:`describe` needs; see the module docstring for the pipeline."""

    desc_mean: np.ndarray
    """``(128,)`` float32 mean RootSIFT descriptor."""
    desc_proj: np.ndarray
    """``(128, d)`` float32 PCA of RootSIFT."""
    centroids: np.ndarray
    """``(k, d)`` float32 visual words."""
    vlad_mean: np.ndarray
    """``(k * d,)`` float32 mean normalised VLAD."""
    vlad_proj: np.ndarray
    """``(k * d, D)`` float32 PCA-whitening projection."""
    info: str = "{}"
    """JSON: how it was trained."""

    def __post_init__(self) -> None:
        k, d = self.centroids.shape
        shapes = {
            "desc_mean": (self.desc_mean, (128,)),
            "desc_proj": (self.desc_proj, (128, d)),
            "vlad_mean": (self.vlad_mean, (k * d,)),
        }
        for name, (a, shape) in shapes.items():
            if a.shape != shape:
                raise GlobalDescriptorError(f"{name} has shape {a.shape}, expected {shape}")
        if self.vlad_proj.ndim != 2 or self.vlad_proj.shape[0] != k * d:
            raise GlobalDescriptorError(
                f"vlad_proj has shape {self.vlad_proj.shape}, expected ({k * d}, D)"
            )

    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.vlad_proj.shape[1])

    def to_bytes(self) -> bytes:
        """An ``.npz`` file (the projections stored as float16)."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            desc_mean=self.desc_mean,
            desc_proj=self.desc_proj,
            centroids=self.centroids,
            vlad_mean=self.vlad_mean.astype(np.float16),
            vlad_proj=self.vlad_proj.astype(np.float16),
            info=np.array(self.info),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> VladModel:
        """Read what :meth:`to_bytes` wrote (``bytes``, ``bytearray`` or ``memoryview``);
        raises :class:`GlobalDescriptorError` for anything else or a bad file."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise GlobalDescriptorError(f"expected bytes, got {type(data).__name__}")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise GlobalDescriptorError(f"not a VLAD model file: {exc}") from exc
        names = ("desc_mean", "desc_proj", "centroids", "vlad_mean", "vlad_proj")
        if missing := [n for n in (*names, "info") if n not in arrays]:
            raise GlobalDescriptorError(f"VLAD model file lacks {missing}")
        return cls(
            *(np.ascontiguousarray(arrays[n], np.float32) for n in names),
            info=str(arrays["info"]),
        )


@lru_cache(maxsize=1)
def default_model() -> VladModel:
    """The shipped model (read once, on first use)."""
    try:
        data = resources.files("tracemark.fingerprint").joinpath("data", _MODEL_FILE).read_bytes()
    except OSError as exc:
        raise GlobalDescriptorError(f"the shipped model {_MODEL_FILE} is missing: {exc}") from exc
    return VladModel.from_bytes(data)


def _model(model: VladModel | None) -> VladModel:
    if model is None:
        return default_model()
    if not isinstance(model, VladModel):
        raise GlobalDescriptorError(f"model must be a VladModel or None; got {type(model).__name__}")
    return model


def describe(image: ImageSource, *, model: VladModel | None = None) -> np.ndarray:
    """The whole-image descriptor of ``image`` (anything
    :func:`~tracemark.imageio.load_image` accepts; its typed errors otherwise): ``(D,)``
    float32, unit norm (zero when featureless)."""
    return describe_regions(image, regions=(WHOLE,), model=model)[0]


def describe_regions(
    image: ImageSource,
    *,
    regions: tuple[tuple[float, float, float, float], ...] = REGIONS,
    mirror: bool = False,
    model: VladModel | None = None,
) -> np.ndarray:
    """``(R, D)`` float32 rows, one per region (``2R`` with ``mirror``: mirrored rows last),
    of ``image`` (anything :func:`~tracemark.imageio.load_image` accepts)."""
    _model(model)
    features = extract(image, kind="sift", max_features=N_FEATURES)
    return describe_features(features, regions=regions, mirror=mirror, model=model)


def describe_features(
    features: LocalFeatures,
    *,
    regions: tuple[tuple[float, float, float, float], ...] = REGIONS,
    mirror: bool = False,
    model: VladModel | None = None,
) -> np.ndarray:
    """Like :func:`describe_regions`, from SIFT features already extracted (their
    ``.mirror``, when set, serves as the mirrored image's features)."""
    if not isinstance(features, LocalFeatures) or features.kind != "sift":
        raise GlobalDescriptorError("describe_features() needs SIFT LocalFeatures")
    boxes = _check_regions(regions)
    m = _model(model)
    rows = _describe(features, boxes, m)
    if mirror:
        # Mirrored image: a region (x0, x1) of it is (1 - x1, 1 - x0) of the original.
        flipped = features.mirror if features.mirror is not None else mirrored(features)
        rows = np.vstack([rows, _describe(flipped, boxes, m)])
    return rows


def vlad_raw(features: LocalFeatures, regions: np.ndarray, model: VladModel) -> np.ndarray:
    """``(R, k * d)`` normalised VLAD before the PCA (zero rows for near-empty regions).

    ``features``: SIFT :class:`LocalFeatures`; ``regions``: ``(R, 4)`` fractions ``x0, y0,
    x1, y1``; ``model``: a :class:`VladModel`. :class:`GlobalDescriptorError` or
    :class:`~tracemark.errors.ConfigError` for anything else.
    """
    if not isinstance(features, LocalFeatures) or features.kind != "sift":
        raise GlobalDescriptorError("vlad_raw() needs SIFT LocalFeatures")
    if not isinstance(model, VladModel):
        raise GlobalDescriptorError(f"model must be a VladModel; got {type(model).__name__}")
    regions = _check_regions(regions)
    k, d = model.centroids.shape
    out = np.zeros((len(regions), k * d), np.float32)
    if len(features) == 0:
        return out
    x = features.descriptors.astype(np.float32) / np.float32(60.0)  # back to RootSIFT scale
    x = (x - model.desc_mean) @ model.desc_proj
    dist = (
        (x * x).sum(1)[:, None] - 2.0 * (x @ model.centroids.T) + (model.centroids**2).sum(1)[None]
    )
    word = np.argmin(dist, axis=1)
    resid = x - model.centroids[word]
    u = (features.xy[:, 0] + 0.5) / features.width
    v = (features.xy[:, 1] + 0.5) / features.height
    for i, (x0, y0, x1, y1) in enumerate(regions):
        inside = (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)
        if inside.sum() < MIN_REGION_FEATURES:
            continue
        agg = np.zeros((k, d), np.float32)
        np.add.at(agg, word[inside], resid[inside])
        agg /= np.maximum(np.linalg.norm(agg, axis=1, keepdims=True), 1e-12)
        flat = agg.ravel()
        flat = np.sign(flat) * np.sqrt(np.abs(flat))
        out[i] = flat / max(float(np.linalg.norm(flat)), 1e-12)
    return out


def fit_model(
    descriptors: np.ndarray,
    features: list[LocalFeatures],
    *,
    k: int = 32,
    d: int = 64,
    dim: int = DIM,
    regions: tuple[tuple[float, float, float, float], ...] = REGIONS,
    seed: int = 0,
    info: dict[str, object] | None = None,
) -> VladModel:
    """Train a model: PCA of ``descriptors`` (RootSIFT 0..15 rows), k-means, PCA-whitening.

    The VLAD PCA is fitted on the region rows of ``features``; whitening is regularised
    by adding the mean eigenvalue of the kept components (so weak directions are not
    blown up by the few training rows). ``descriptors``: an ``(N, 128)`` array (N >= k);
    ``features``: a list of SIFT :class:`LocalFeatures`; :class:`~tracemark.errors.ConfigError`
    otherwise.
    """
    if not isinstance(descriptors, np.ndarray):
        raise ConfigError(f"descriptors must be an (N, 128) array; got {type(descriptors).__name__}")
    if not isinstance(features, list | tuple) or not all(
        isinstance(f, LocalFeatures) and f.kind == "sift" for f in features
    ):
        raise ConfigError("features must be a list of SIFT LocalFeatures")
    if descriptors.ndim != 2 or descriptors.shape[1] != 128 or len(descriptors) < k:
        raise ConfigError(f"need an (N >= k, 128) descriptor array, got {descriptors.shape}")
    x = descriptors.astype(np.float32) / np.float32(60.0)
    mean = x.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    proj = np.ascontiguousarray(eigvec[:, ::-1][:, :d], np.float32)
    y = np.ascontiguousarray((x - mean) @ proj, np.float32)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
    _, _, centroids = cv2.kmeans(y, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    partial = VladModel(
        mean,
        proj,
        centroids.astype(np.float32),
        np.zeros(k * d, np.float32),
        np.zeros((k * d, 1), np.float32),
    )
    boxes = _check_regions(regions)
    rows = np.vstack([vlad_raw(f, boxes, partial) for f in features])
    rows = rows[np.linalg.norm(rows, axis=1) > 0]
    if len(rows) <= dim:
        raise ConfigError(
            f"need more than {dim} non-empty VLAD rows to fit the PCA, got {len(rows)}"
        )
    vmean = rows.mean(axis=0)
    centred = rows - vmean
    # PCA through the small Gram matrix (rows << k * d).
    gval, gvec = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(gval)[::-1][:dim]
    gval, gvec = np.maximum(gval[order], 1e-12), gvec[:, order]
    basis = centred.T @ gvec / np.sqrt(gval)  # unit principal directions
    eig = gval / (len(rows) - 1)
    whiten = 1.0 / np.sqrt(eig + eig.mean())
    meta = {"k": k, "d": d, "dim": dim, "seed": seed, **(info or {})}
    return VladModel(
        mean,
        proj,
        partial.centroids,
        vmean.astype(np.float32),
        (basis * whiten).astype(np.float32),
        info=json.dumps(meta, sort_keys=True),
    )


def in_training_half(path: str | os.PathLike[str]) -> bool:
    """Whether the shipped model's training used this corpus file (by its name's SHA-1).
    ``path``: a ``str`` or ``os.PathLike`` (:class:`~tracemark.errors.ConfigError` otherwise)."""
    if not isinstance(path, str | os.PathLike):
        raise ConfigError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    return hashlib.sha1(Path(path).name.encode()).digest()[0] % 2 == 0


def _describe(features: LocalFeatures, boxes: np.ndarray, model: VladModel) -> np.ndarray:
    raw = vlad_raw(features, boxes, model)
    empty = ~raw.any(axis=1)
    out = (raw - model.vlad_mean) @ model.vlad_proj
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    out[empty] = 0.0
    return out.astype(np.float32)


def _check_regions(regions: object) -> np.ndarray:
    try:
        boxes = np.asarray(regions, np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"regions must be (x0, y0, x1, y1) tuples: {exc}") from exc
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise ConfigError(
            f"regions must be a non-empty sequence of (x0, y0, x1, y1), got {regions!r}"
        )
    ok = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= 1) & (boxes[:, 3] <= 1)
    if not np.all(ok & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])):
        raise ConfigError(
            f"regions must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {regions!r}"
        )
    return boxes


@register_fingerprinter("vlad")
class VladFingerprinter(Fingerprinter):
    """The whole-image descriptor as a :class:`Fingerprint` (``kind="float"``, ``metric="ip"``).

    ``quality`` is the fraction of :data:`N_FEATURES` features found (0..1). An image with
    fewer than :data:`MIN_REGION_FEATURES` SIFT features (flat, featureless) raises
    :class:`GlobalDescriptorError`: it has no usable descriptor.
    """

    kind = "float"
    dim = DIM
    metric = "ip"
    min_size = 16

    def _compute(self, rgb: npt.NDArray[np.uint8]) -> Fingerprint:
        features = extract(rgb, kind="sift", max_features=N_FEATURES)
        if len(features) < MIN_REGION_FEATURES:
            raise GlobalDescriptorError(
                f"only {len(features)} SIFT features; need >= {MIN_REGION_FEATURES} for a descriptor"
            )
        vector = describe_features(features, regions=(WHOLE,))[0]
        return Fingerprint(self.name, vector, quality=len(features) / N_FEATURES)
