"""Describe an image for copy detection: the one recipe for references and queries.

A reference is stored with its PDQ hash (256 bits, one row), its VLAD region descriptors
(whole image, centre and four corner windows; :mod:`tracemark.fingerprint.global_desc`)
and its SIFT features for verification. A query is described the same way, except that
its descriptors also cover the mirrored image (VLAD rows of the flipped image, PDQ hashes
of the 8 dihedral orientations), so that flipped and rotated copies are retrieved.

Every place that describes images for copy detection (the index, the credential store's
fingerprint route, the benchmark) calls these functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracemark.fingerprint import global_desc, local, pdq, words
from tracemark.imageio import rgb_view

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "MAX_SIDE",
    "PREVIEW_BLOB",
    "PREVIEW_MAX_SIDE",
    "PREVIEW_MEDIA_TYPE",
    "PREVIEW_QUALITY",
    "QUERY_ASSIGN",
    "QUERY_WORDS",
    "REFERENCE_WORDS",
    "QueryDescriptors",
    "ReferenceDescriptors",
    "content_hash",
    "describe_query",
    "describe_reference",
    "reference_preview",
    "reference_words",
]

DEFAULT_MAX_FEATURES = 500
"""SIFT features per image kept for geometric verification."""
MAX_SIDE = 400
"""Long side (pixels) of the copy SIFT runs on (:func:`tracemark.fingerprint.local.extract`):
400 px instead of the 640 px of v1 halves the query's extraction time at the same muAP on
the copy-detection benchmark (0.930 at 400, 0.933 at 480, 0.925 at 640; 60 references)."""
QUERY_ASSIGN = 1
"""Words per query feature (multiple assignment, Jégou et al., IJCV 2010, when > 1). One:
``benchmarks/bench_words_scale.py --assign 1,2,3`` found the true reference among the
candidates for 0.87 / 0.87 / 0.86 of the queries at 100k references, at 7 / 14 / 21 ms."""
QUERY_WORDS = 500
"""Query features looked up in the inverted file (the spread-out prefix of its SIFT
features): at a million references 400, 600 and 1,000 find the true reference equally
often (0.87 among the candidates) while the search time grows with the count."""
PREVIEW_BLOB = "preview"
"""The index blob holding a reference's preview (:func:`reference_preview`)."""
PREVIEW_MAX_SIDE = 256
"""Long side (pixels) of a reference's preview, at most: enough to show the matched
region beside the query on the verification page, ~5-15 kB a reference."""
PREVIEW_QUALITY = 80
"""JPEG quality of a preview (libjpeg scale, 1..100)."""
PREVIEW_MEDIA_TYPE = "image/jpeg"
"""A preview's media type."""
REFERENCE_WORDS = 200
"""SIFT features of a reference posted in the inverted file (the spread-out prefix of its
features, :meth:`tracemark.fingerprint.local.LocalFeatures.head`): 200 x 9 bytes of RAM per
reference (:mod:`tracemark.copydetect.ivf`)."""


def content_hash(rgb: np.ndarray) -> str:
    """SHA-256 (64 hex characters) of the decoded pixels and their shape.

    ``rgb``: (H, W, 3) uint8. The same picture in another container (PNG vs lossless WebP,
    stripped metadata) has the same content hash.
    """
    h = hashlib.sha256()
    h.update(np.asarray(rgb.shape, np.int64).tobytes())
    h.update(memoryview(np.ascontiguousarray(rgb)).cast("B"))  # no bytes copy
    return h.hexdigest()


@dataclass(frozen=True)
class ReferenceDescriptors:
    """What is stored of a reference: ``pdq`` (1, 32) uint8 packed bits, ``vlad``
    (R, D) float32 L2-normalised region rows, ``features`` for verification, ``words``
    (:func:`reference_words`) for the inverted file."""

    rgb: np.ndarray
    pdq: np.ndarray
    vlad: np.ndarray
    features: local.LocalFeatures
    words: words.Words


@dataclass(frozen=True)
class QueryDescriptors:
    """A query's descriptors: ``vlad`` (2R, D) float32 (the image and its mirror),
    ``pdq8`` (8, 32) uint8 (the 8 dihedral orientations), ``features`` for verification,
    ``words`` and ``words_mirror`` (every feature of the image and of its mirror as visual
    words) for the inverted file."""

    features: local.LocalFeatures
    vlad: np.ndarray
    pdq8: np.ndarray
    words: words.Words | None = None
    words_mirror: words.Words | None = None
    pdq_quality: int = 100
    """PDQ's quality of the query (0..100, the reference implementation's gradient sum): a
    hash below :data:`tracemark.copydetect.decide.PDQ_MIN_QUALITY` is not trusted."""


def describe_reference(image: Any, *, max_features: int = DEFAULT_MAX_FEATURES) -> ReferenceDescriptors:
    """Describe a reference image (anything :func:`tracemark.imageio.load_image` takes).

    Raises the loader's :class:`~tracemark.errors.ImageError` subclasses for bad input.
    """
    rgb = rgb_view(image)  # read only: an RGB array is not copied
    feats = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES, max_side=MAX_SIDE)
    vlad = global_desc.describe_features(feats)
    packed, _quality = pdq.pdq_hash(rgb, packed=True)
    return ReferenceDescriptors(rgb=rgb, pdq=packed[None, :], vlad=vlad,
                                features=feats.head(max_features),
                                words=reference_words(feats))


def reference_preview(image: Any) -> bytes:
    """A small JPEG of a reference for people to look at (the verification page draws a
    copy match's region on it): the image scaled to a long side of at most
    :data:`PREVIEW_MAX_SIDE` px (never enlarged; aspect ratio kept, each side at least
    1 px) with Pillow's Lanczos filter, JPEG quality :data:`PREVIEW_QUALITY`, no metadata.

    ``image``: anything :func:`tracemark.imageio.rgb_view` takes (an (H, W, 3) uint8 array
    is not copied). The preview's size is ``round(side * scale)`` per side with
    ``scale = min(1, PREVIEW_MAX_SIDE / max(H, W))``: a region in the reference's pixels
    maps to the preview by multiplying by ``preview_width / W``. Raises the loader's
    :class:`~tracemark.errors.ImageError` subclasses for bad input.
    """
    from PIL import Image

    from tracemark.imageio import encode_image, to_pil

    rgb = rgb_view(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        small = to_pil(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        rgb = np.asarray(small)
    return encode_image(rgb, "JPEG", quality=PREVIEW_QUALITY)


def reference_words(features: local.LocalFeatures) -> words.Words:
    """The visual words a reference posts: those of its first :data:`REFERENCE_WORDS`
    SIFT features (also how an index of the previous version is migrated, from the SIFT
    features it stored for verification)."""
    return words.quantize(features.head(REFERENCE_WORDS))


def describe_query(image: Any, *, max_features: int = DEFAULT_MAX_FEATURES) -> QueryDescriptors:
    """Describe a query image (anything :func:`tracemark.imageio.load_image` takes).

    Raises the loader's :class:`~tracemark.errors.ImageError` subclasses for bad input.
    """
    rgb = rgb_view(image)  # read only: an RGB array is not copied
    # the mirrored features are derived once here and travel with the features (VLAD rows,
    # words and every candidate's verification use them)
    feats = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES,
                          max_side=MAX_SIDE, mirror=True)
    vlad = global_desc.describe_features(feats, mirror=True)
    pdq8, quality = pdq.pdq_dihedral(rgb, packed=True)
    lookup = feats.head(QUERY_WORDS)
    return QueryDescriptors(features=feats.head(max_features), vlad=vlad, pdq8=pdq8,
                            pdq_quality=int(quality),
                            words=words.quantize(lookup, assign=QUERY_ASSIGN),
                            words_mirror=words.quantize(lookup.mirror, assign=QUERY_ASSIGN))
