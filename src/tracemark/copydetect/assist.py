"""Registry-assisted watermark detection: read the mark through any geometry that copy
detection can undo.

Blind detection finds the mark's lattice in the query itself; strong geometry (a 45 degree
rotation, strong perspective, a small crop, an inset in a larger picture) defeats that
search. When the query is a copy of a registered work, copy detection has already
verified a transform from the query to the reference (:attr:`Match.transform`, fitted by
RANSAC on SIFT matches): warping the query into the reference's frame puts the mark back
where the embedder laid it, and the detector's size prior (the lattice laid on an image of
the reference's size) reads it.

p-value: blind detection and the aligned attempts are separate tests of the same
hypothesis, and half of the false-positive budget goes to each stage (Bonferroni): the
blind p-value is reported doubled, an aligned one multiplied by twice the number of
alignments tried. So the whole procedure calls an unmarked image (or one marked with
another key) marked with probability at most ``alpha``. The key's sequences are
independent of the image and of the transform that copy detection chose (it never sees
the key), so each test's own bound holds (checked on unmarked registered images in
benchmarks/bench_watermark_calibration.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from tracemark.copydetect.index import Match
from tracemark.errors import ImageTooSmallError
from tracemark.imageio import load_image
from tracemark.watermark.base import DEFAULT_ALPHA, Detection

__all__ = ["REFINEMENTS", "align_to_reference", "detect_assisted"]

REFINEMENTS = 1
"""Second searches of the aligned image whose transform refines the first one."""


def align_to_reference(image: npt.NDArray[np.uint8], match: Match) -> npt.NDArray[np.uint8] | None:
    """The query ``image`` (H, W, 3) uint8 warped into the frame of ``match``'s reference
    (reference_size, black where the query does not reach); None when the match carries
    no transform."""
    if match.transform is None or match.reference_size is None:
        return None
    t = np.asarray(match.transform, np.float64)
    w, h = (int(v) for v in match.reference_size)
    if w < 1 or h < 1 or not np.all(np.isfinite(t)):
        return None
    return cv2.warpPerspective(image, t, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def detect_assisted(
    detect: Callable[[npt.NDArray[np.uint8], float], Detection],
    image: Any,
    search: Callable[[npt.NDArray[np.uint8]], Sequence[Match]],
    *,
    alpha: float = DEFAULT_ALPHA,
    max_alignments: int = 3,
) -> Detection:
    """Blind detection, then, when it finds nothing, detection in the frame of each
    registered work that copy detection decides ``image`` is a copy of (at most
    ``max_alignments``, best first).

    ``detect(rgb, alpha)`` is the watermark's detector with its key bound (e.g.
    ``lambda im, a: method.detect(im, key, alpha=a)``); ``search(rgb)`` returns copy
    detection's matches (e.g. ``CopyIndex.search``). Returns a :class:`Detection` whose
    ``p_value`` is corrected for the number of tests (module docstring) and whose
    ``details`` say the route: ``"blind"`` or ``"registry"`` (with ``ref_id``). A detector
    that cannot tell presence (``present`` None: the peers) is read blind only, its
    detection returned as it is: nothing says the blind read missed, nor which of several
    reads is right.
    """
    # an RGB array is used as it is (not copied), so that ``search`` sees the caller's object
    # for the query and can reuse what it already found for it
    is_rgb = (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
              and image.shape[2] == 3)
    rgb = image if is_rgb else load_image(image)
    blind = detect(rgb, alpha / 2)
    if blind.present is None:
        return replace(blind, details={**blind.details, "route": "blind"})
    p_blind = None if blind.p_value is None else min(1.0, 2.0 * blind.p_value)
    if blind.present:
        return replace(blind, p_value=p_blind,
                       present=p_blind is None or p_blind < alpha,
                       details={**blind.details, "route": "blind"})
    try:
        matches = search(rgb)
    except ImageTooSmallError as exc:  # too small to search: the blind answer stands
        return replace(blind, p_value=p_blind, present=False,
                       details={**blind.details, "route": "blind",
                                "registry": f"not searched: {exc.message}"})
    candidates = [m for m in matches if m.decision and m.transform is not None]
    candidates = candidates[:max_alignments]
    best: tuple[Detection, Match] | None = None
    for m in candidates:
        # copy detection keeps a similarity where a homography explains little more; a
        # second search of the aligned image measures what is left (perspective) and the
        # two transforms are composed: the alignment the detector reads is the last one
        transform = np.asarray(m.transform, np.float64)
        aligned = align_to_reference(rgb, m)
        for _ in range(REFINEMENTS):
            if aligned is None:
                break
            again = [r for r in search(aligned) if r.ref_id == m.ref_id and r.transform is not None]
            if not again:
                break
            transform = np.asarray(again[0].transform, np.float64) @ transform
            aligned = align_to_reference(rgb, replace(m, transform=transform.tolist()))
        if aligned is None or min(aligned.shape[:2]) < 16:
            continue
        det = detect(aligned, alpha / (2 * len(candidates)))
        if best is None or _p(det) < _p(best[0]):
            best = (det, m)
    if best is None:
        return replace(blind, p_value=p_blind, present=False,
                       details={**blind.details, "route": "blind", "alignments": 0})
    det, m = best
    p = None if det.p_value is None else min(1.0, 2.0 * len(candidates) * det.p_value)
    present = det.present if p is None else p < alpha
    return replace(det, p_value=p, present=present,
                   payload=det.payload if present else None,
                   details={**det.details, "route": "registry", "ref_id": m.ref_id,
                            "alignments": len(candidates)})


def _p(det: Detection) -> float:
    return 1.0 if det.p_value is None else float(det.p_value)
