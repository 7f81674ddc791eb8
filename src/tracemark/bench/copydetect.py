"""Copy-detection benchmark in the style of DISC21, built from a folder of images.

Construction (every random choice derives from ``seed`` with
:func:`tracemark.attacks.suites.derive_seed`, so a run is replayable; the drawn attack
parameters of every query are recorded):

1. **Split.** Images (found recursively, named by their path relative to the folder) whose
   name is *not* in the shipped VLAD model's training half
   (:func:`tracemark.fingerprint.global_desc.in_training_half`) are the references R:
   the descriptor model was trained on the other half, so references and their copies are
   held out from it (no leakage). ``refs`` keeps that many, evenly spread over the sorted
   list (photos and art mixed). The training half is the distractor pool D, never
   indexed: a share ``background_share`` of it (a seeded permutation) is the calibration
   background, used only by :meth:`tracemark.copydetect.CopyIndex.calibrate` and never as a
   query or inside one; the rest, P, supplies negative queries, hard negatives and the
   backgrounds of insertions.
2. **Positive queries.** For each reference, ``queries_per_ref`` distinct entries of the
   ``disc21-like`` suite (chosen with ``derive_seed(seed, ref, "entries")``), each drawn
   with ``derive_seed(seed, ref, "query", label)``; insertions take their background from
   P. A share ``hard_share`` of the references (a seeded permutation) also gets one
   explicit hard edit of :func:`hard_edits_suite`, cycling through its entries: crop to
   30-45% of the area, insertion into a P image at scale 0.4-0.7, screenshot framing,
   rotation up to 45 degrees, large text + emoji overlays, mirror + JPEG. A positive's
   ground truth is its reference.
3. **Negative queries.** ``negatives`` images of P (default all), each with one
   ``disc21-like`` entry drawn the same way: edited-looking images that are not copies.
   These, the positives of 2 and the hard negatives of 4 are the query set ``"v1"``, the
   queries of version 1 of this benchmark, kept as they were so that its numbers stay
   comparable.
4. **Hard negatives.** For each of ``hard_negatives`` references (default all), the P
   image most similar by the VLAD descriptor (maximum inner product over region rows, the
   retrieval similarity) and the P image nearest by PDQ (smallest distance over the 8
   orientations): "looks alike globally" and "hash-near". Each distinct image becomes one
   query, JPEG quality 80. No method should match them.
5. **The hard kinds** (query set ``"v2"``, the ``copydetect-v2`` suite: the image inside a
   web page, strong sharpening, thumbnails of 96-200 px, pixelization, heavy blur, crops
   keeping 8-12 %, stacks of two or three). Each reference gets ``v2_queries_per_ref``
   distinct entries, assigned in turn over a seeded permutation of the references
   (``derive_seed(seed, "v2")``) so that every entry gets the same number of queries
   (within one); each is drawn with ``derive_seed(seed, ref, "query", label)``.
   ``v2_negatives`` pool images (default all) also get one ``copydetect-v2`` entry
   (``derive_seed(seed, name, "v2entries")`` chooses it): page screenshots and thumbnails
   of non-copies, which share a page's furniture or a thumbnail's blur with the copies.

Methods, each giving at most ``k`` predictions ``(query, reference, score)`` per query:
``pdq`` (``256 - `` the smallest dihedral PDQ distance, brute force over every reference),
``phash`` (``64 - `` Hamming distance, plain), ``local`` (RANSAC inliers of SIFT
verification against *every* reference, or the ``local_shortlist`` best by VLAD when set),
``full`` (:meth:`CopyIndex.search` with the default :class:`MatchConfig`, scored by
``raw_score``) and ``full_v1`` (the same index and calibration searched through a second
read-only handle with ``MatchConfig(retrieval="v1")``: the previous version's candidate
retrieval, VLAD region rows + PDQ), so the old and the new detector answer the same queries
in one run. Metrics (:mod:`tracemark.metrics.retrieval`): micro-AP (at most ``k``
predictions per query), recall at precision 0.9, accuracy at rank 1, over all queries and
per query set (``"v1"``: the set of version 1; ``"v2"``: the hard kinds; both with the hard
negatives), and accuracy at rank 1 per edit (group). Each method also has an operating
threshold: PDQ distance <= 31 (ThreatExchange), pHash distance <= 10, >=
``MatchConfig.min_inliers`` inliers, and for ``full`` and ``full_v1`` the raw score where
the calibrated p-value reaches 1e-3 (:meth:`CopyIndex.threshold_for_alpha`, the recommended
threshold; each retrieval version is calibrated on the same background images, since
their raw scores differ); at it, precision,
recall (all copies and the hard kinds alone), and the shares of hard negatives and of
negative queries whose best score stays below it. Timings are wall-clock per query and
method (each method's own feature extraction included), the index build and the
calibration.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tracemark.attacks.suites import Suite, derive_seed, get_suite, suite_from_dict
from tracemark.bench.watermark import prepare_image
from tracemark.errors import ConfigError, TracemarkError

__all__ = [
    "RESULTS_VERSION",
    "METHODS",
    "RECOMMENDED_ALPHA",
    "CopyDetectConfig",
    "QuerySpec",
    "Split",
    "HARD_EDITS_YAML",
    "hard_edits_suite",
    "split_images",
    "run_copydetect_bench",
    "compute_metrics",
    "one_thread",
    "plan_queries",
    "predictions_of",
    "format_markdown",
    "write_outputs",
]

RESULTS_VERSION = 2
"""2: query set ``"v2"`` (the ``copydetect-v2`` suite), method ``full_v1``, ``query_set`` on
queries and records, per-set metrics (``subsets``) and ``recall_v2`` at the operating point.
Version 1 results still format (their metrics lack the new fields)."""
METHODS = ("pdq", "phash", "local", "full_v1", "full")
INDEX_METHODS = ("full_v1", "full")
"""The methods that search the :class:`~tracemark.copydetect.CopyIndex` (and need its
calibration)."""
RECOMMENDED_ALPHA = 1e-3
"""The p-value at which the ``full`` pipeline's recommended threshold is taken."""
QUERY_SUITE = "disc21-like"
V2_SUITE = "copydetect-v2"
"""The hard kinds of issue 13 (query set ``"v2"``)."""
QUERY_SETS = ("v1", "v2")
PDQ_THRESHOLD = 31
"""PDQ match threshold in bits (ThreatExchange's usual value)."""
PHASH_THRESHOLD = 10
"""pHash match threshold in bits (a common choice for 64-bit hashes)."""
HARD_NEGATIVE_JPEG = 80

QueryKind = Literal["positive", "negative", "hard_negative"]
QuerySet = Literal["v1", "v2"]
Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CopyDetectConfig:
    """What a run does besides which images; validated when built."""

    seed: int = 0
    refs: int | None = None
    """Keep this many references (evenly spread); None: every held-out image."""
    queries_per_ref: int = 2
    v2_queries_per_ref: int = 2
    """Entries of ``copydetect-v2`` per reference (0 to its length; 2 gives each of its 8
    entries ``refs / 4`` queries)."""
    hard_share: float = 0.5
    """Share of references that also get one explicit hard edit."""
    negatives: int | None = None
    """Negative queries from the pool P; None: one per pool image."""
    v2_negatives: int | None = None
    """Negative queries of the hard kinds (``copydetect-v2``); None: one per pool image."""
    hard_negatives: int | None = None
    """References for which hard negatives are mined; None: every reference."""
    background_share: float = 0.4
    """Share of the distractor pool kept apart for calibration."""
    max_side: int | None = None
    """Shrink every image so its long side is at most this (tests use small images)."""
    methods: tuple[str, ...] = METHODS
    k: int = 10
    local_shortlist: int | None = None
    """``local``: verify only the best N references by VLAD (None: every reference)."""
    workers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(dict.fromkeys(self.methods)))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"methods must be a non-empty subset of {METHODS}; got {self.methods}"
            )
        checks = {
            "refs": (self.refs, 1),
            "negatives": (self.negatives, 0),
            "v2_negatives": (self.v2_negatives, 0),
            "hard_negatives": (self.hard_negatives, 0),
            "max_side": (self.max_side, 64),
            "local_shortlist": (self.local_shortlist, 1),
        }
        for name, (value, low) in checks.items():
            if value is not None and value < low:
                raise ConfigError(f"{name} must be >= {low} or None; got {value}")
        if not 0 <= self.queries_per_ref <= 15:
            raise ConfigError(f"queries_per_ref must be in [0, 15]; got {self.queries_per_ref}")
        n_v2 = len(get_suite(V2_SUITE))
        if not 0 <= self.v2_queries_per_ref <= n_v2:
            raise ConfigError(
                f"v2_queries_per_ref must be in [0, {n_v2}] (the entries of {V2_SUITE}); "
                f"got {self.v2_queries_per_ref}"
            )
        for name in ("hard_share", "background_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.k < 1 or self.workers < 1:
            raise ConfigError(f"k and workers must be >= 1; got {self.k}, {self.workers}")


@dataclass(frozen=True)
class QuerySpec:
    """The recipe of one query: replay with ``get_attack(attack).apply(image(source), params)``."""

    name: str
    kind: QueryKind
    source: str
    """The image the query is made from (a reference, or a pool image for negatives)."""
    reference: str | None
    """Ground truth: the reference it copies (None for negatives and hard negatives)."""
    label: str
    group: str
    attack: str
    params: dict[str, Any]
    seed: int
    note: dict[str, Any] = field(default_factory=dict)
    query_set: QuerySet = "v1"
    """``"v1"``: the queries of version 1 of the benchmark; ``"v2"``: the hard kinds."""


@dataclass(frozen=True)
class Split:
    """Which image plays which role (names relative to the folder)."""

    references: list[str]
    pool: list[str]
    background: list[str]
    paths: dict[str, Path]


HARD_EDITS_YAML = """
name: copydetect-hard
description: Hard copy edits (small crops, insertion, framing, rotation, overlays, mirror).
entries:
  - {label: hard_crop, group: hard_crop, attack: random_crop, params: {area: {uniform: [0.3, 0.45]}}}
  - {label: hard_insert, group: hard_insert, attack: insert, params: {scale: {uniform: [0.4, 0.7]}}}
  - label: hard_screenshot
    group: hard_screenshot
    attack: screenshot
    params: {scale: {uniform: [0.5, 0.8]}}
  - label: hard_rotate
    group: hard_rotate
    attack: rotate
    params: {angle: {uniform: [-45.0, 45.0]}, expand: {choice: [true, false]}}
  - label: hard_overlay
    group: hard_overlay
    attack: compose
    params:
      steps:
        - {attack: text_overlay, params: {font_size: {uniform: [0.12, 0.25]}}}
        - {attack: emoji_overlay, params: {size: {uniform: [0.3, 0.5]}}}
  - label: hard_mirror
    group: hard_mirror
    attack: compose
    params:
      steps:
        - {attack: hflip}
        - {attack: jpeg, params: {quality: {randint: [40, 85]}}}
"""
"""The explicit hard edits, as a suite (positions, texts, emoji, backgrounds drawn by the attacks)."""


@lru_cache(maxsize=1)
def hard_edits_suite() -> Suite:
    """:data:`HARD_EDITS_YAML` as a :class:`Suite` (drawn like any suite entry)."""
    import yaml

    return suite_from_dict(yaml.safe_load(HARD_EDITS_YAML), origin="copydetect hard edits")


# --- construction ------------------------------------------------------------------------


def _names(paths: Sequence[Path], root: Path | None) -> list[str]:
    out = []
    for p in paths:
        out.append(
            p.relative_to(root).as_posix()
            if root is not None and p.is_relative_to(root)
            else p.name
        )
    if len(set(out)) != len(out):
        raise ConfigError("image names must be distinct (pass root= to name them by relative path)")
    return out


def _spread(names: Sequence[str], limit: int | None) -> list[str]:
    """``limit`` names evenly spaced over ``names`` (all when None or not smaller; none for 0)."""
    if limit is None or limit >= len(names):
        return list(names)
    return [names[(i * len(names)) // limit] for i in range(limit)]


def split_images(
    paths: Sequence[Path], config: CopyDetectConfig, root: Path | None = None
) -> Split:
    """References (held-out half), pool and calibration background (see the module docstring)."""
    from tracemark.fingerprint.global_desc import in_training_half

    names = _names(paths, root)
    by_name = dict(zip(names, paths, strict=True))
    held = sorted(n for n in names if not in_training_half(n))
    train = sorted(n for n in names if in_training_half(n))
    refs = _spread(held, config.refs)
    perm = np.random.default_rng(derive_seed(config.seed, "split")).permutation(len(train))
    n_bg = round(config.background_share * len(train))
    background = sorted(train[i] for i in perm[:n_bg])
    pool = sorted(train[i] for i in perm[n_bg:])
    return Split(refs, pool, background, by_name)


def _load(split: Split, name: str, max_side: int | None) -> Image:
    from tracemark.imageio import load_image

    return prepare_image(load_image(split.paths[name], name=name), max_side=max_side)


def _draw(suite: Suite, label: str, seed: int, image: Image, backgrounds: Sequence[str]) -> Any:
    from tracemark.attacks.base import SampleContext

    return suite.draw(suite.entry(label), seed, SampleContext.for_image(image, backgrounds))


def _spec(
    name: str,
    kind: QueryKind,
    source: str,
    reference: str | None,
    rec: Any,
    query_set: QuerySet = "v1",
    **note: Any,
) -> QuerySpec:
    return QuerySpec(
        name,
        kind,
        source,
        reference,
        rec.label,
        rec.group,
        rec.attack,
        rec.params,
        rec.seed,
        note,
        query_set,
    )


def plan_queries(
    split: Split,
    images: Mapping[str, Image],
    hard_negatives: Sequence[tuple[str, str, str, float]],
    config: CopyDetectConfig,
) -> list[QuerySpec]:
    """Every query's recipe. ``images`` holds the prepared references and pool images (for
    the sizes the draws depend on); ``hard_negatives`` the mined ``(pool image, reference,
    "vlad" | "pdq", value)`` tuples."""
    from tracemark.attacks.suites import AttackRecord

    suite, hard = get_suite(QUERY_SUITE), hard_edits_suite()
    pool_paths = {n: str(split.paths[n]) for n in split.pool}
    labels = [e.label for e in suite]
    out: list[QuerySpec] = []
    n_hard = round(config.hard_share * len(split.references))
    hard_order = np.random.default_rng(derive_seed(config.seed, "hard")).permutation(
        len(split.references)
    )
    hard_label = {
        split.references[i]: hard.entries[j % len(hard)].label
        for j, i in enumerate(hard_order[:n_hard])
    }
    for ref in split.references:
        img = images[ref]
        rng = np.random.default_rng(derive_seed(config.seed, ref, "entries"))
        picks = sorted(rng.choice(len(labels), size=config.queries_per_ref, replace=False).tolist())
        for i in picks:
            rec = _draw(
                suite,
                labels[i],
                derive_seed(config.seed, ref, "query", labels[i]),
                img,
                list(pool_paths.values()),
            )
            out.append(_spec(f"pos:{ref}:{labels[i]}", "positive", ref, ref, rec))
        if ref in hard_label:
            lab = hard_label[ref]
            rec = _draw(
                hard,
                lab,
                derive_seed(config.seed, ref, "query", lab),
                img,
                list(pool_paths.values()),
            )
            out.append(_spec(f"pos:{ref}:{lab}", "positive", ref, ref, rec))
    negs = _spread(split.pool, config.negatives)
    for name in negs:
        rng = np.random.default_rng(derive_seed(config.seed, name, "entries"))
        lab = labels[int(rng.integers(len(labels)))]
        others = [p for n, p in pool_paths.items() if n != name]
        rec = _draw(suite, lab, derive_seed(config.seed, name, "query", lab), images[name], others)
        out.append(_spec(f"neg:{name}:{lab}", "negative", name, None, rec))
    why: dict[str, list[dict[str, Any]]] = {}
    for pool_name, ref, by, value in hard_negatives:
        why.setdefault(pool_name, []).append({"reference": ref, "by": by, "value": value})
    out += _plan_v2(split, images, config)
    for name in sorted(why):
        rec = AttackRecord(
            "jpeg80",
            "jpeg",
            {"quality": HARD_NEGATIVE_JPEG},
            0,
            0.2,
            "degradation",
            "hard_negative",
            None,
        )
        out.append(_spec(f"hard:{name}", "hard_negative", name, None, rec, nearest_to=why[name]))
    return out


def _plan_v2(
    split: Split, images: Mapping[str, Image], config: CopyDetectConfig
) -> list[QuerySpec]:
    """The query set ``"v2"``: the hard kinds on references and on pool images."""
    suite = get_suite(V2_SUITE)
    labels = [e.label for e in suite]
    pool_paths = {n: str(split.paths[n]) for n in split.pool}
    out: list[QuerySpec] = []
    k = config.v2_queries_per_ref
    order = np.random.default_rng(derive_seed(config.seed, "v2")).permutation(
        len(split.references)
    )
    slot = {split.references[i]: j for j, i in enumerate(order)}
    for ref in split.references:
        for t in range(k):
            lab = labels[(slot[ref] * k + t) % len(labels)]
            rec = _draw(
                suite,
                lab,
                derive_seed(config.seed, ref, "query", lab),
                images[ref],
                list(pool_paths.values()),
            )
            out.append(_spec(f"pos:{ref}:{lab}", "positive", ref, ref, rec, "v2"))
    for name in _spread(split.pool, config.v2_negatives):
        rng = np.random.default_rng(derive_seed(config.seed, name, "v2entries"))
        lab = labels[int(rng.integers(len(labels)))]
        others = [p for n, p in pool_paths.items() if n != name]
        rec = _draw(suite, lab, derive_seed(config.seed, name, "query", lab), images[name], others)
        out.append(_spec(f"neg:{name}:{lab}", "negative", name, None, rec, "v2"))
    return out


def query_image(spec: QuerySpec, source: Image) -> Image:
    """Materialise a query from its prepared source image."""
    from tracemark.attacks.base import get_attack

    return get_attack(spec.attack).apply(source, spec.params)


# --- methods ------------------------------------------------------------------------------


@dataclass
class _Refs:
    """What the brute-force methods need of the references, by position."""

    names: list[str]
    pdq: np.ndarray
    """``(n, 32)`` packed PDQ hashes."""
    phash: np.ndarray
    """``(n, 8)`` packed pHashes."""
    local: list[Any]
    vlad: np.ndarray
    """``(rows, D)`` region descriptors of every reference, ``vlad_owner`` says whose."""
    vlad_owner: np.ndarray


@dataclass
class _Runtime:
    refs: _Refs
    index: Any
    config: CopyDetectConfig
    index_v1: Any = None
    """A second handle on the same index, searching with ``MatchConfig(retrieval="v1")``."""


Predictions = list[tuple[str, float]]
MethodFn = Callable[[_Runtime, Image], tuple[Predictions, dict[str, Any] | None]]
_METHODS: dict[str, MethodFn] = {}


def _method(name: str) -> Callable[[MethodFn], MethodFn]:
    def register(fn: MethodFn) -> MethodFn:
        _METHODS[name] = fn
        return fn

    return register


def _top(rt: _Runtime, scores: np.ndarray) -> Predictions:
    """The ``k`` best references by score (ties by name), as ``(name, score)``."""
    names = rt.refs.names
    order = sorted(range(len(names)), key=lambda i: (-float(scores[i]), names[i]))[: rt.config.k]
    return [(names[i], float(scores[i])) for i in order]


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


@_method("pdq")
def _pdq(rt: _Runtime, image: Image) -> tuple[Predictions, None]:
    from tracemark.fingerprint.pdq import pdq_dihedral, pdq_match_distance

    q8, _ = pdq_dihedral(image, packed=True)
    d = np.asarray(pdq_match_distance(q8, rt.refs.pdq))
    return _top(rt, 256.0 - d), None


@_method("phash")
def _phash(rt: _Runtime, image: Image) -> tuple[Predictions, None]:
    from tracemark.fingerprint.hashes import phash

    d = _POPCOUNT[np.bitwise_xor(rt.refs.phash, phash(image)[None, :])].sum(axis=1)
    return _top(rt, 64.0 - d), None


@_method("local")
def _local(rt: _Runtime, image: Image) -> tuple[Predictions, None]:
    from tracemark.copydetect import describe_query
    from tracemark.fingerprint import local

    d = describe_query(image, max_features=rt.index.config.max_features)
    candidates = range(len(rt.refs.names))
    if rt.config.local_shortlist is not None:
        sims = d.vlad @ rt.refs.vlad.T
        best = np.full(len(rt.refs.names), -np.inf)
        np.maximum.at(best, rt.refs.vlad_owner, sims.max(axis=0))
        candidates = np.argsort(-best, kind="stable")[: rt.config.local_shortlist].tolist()
    q = d.features
    scores = np.full(len(rt.refs.names), 0.0)
    for i in candidates:
        scores[i] = local.verify(q, rt.refs.local[i]).inliers
    return _top(rt, scores), None


def _search(index: Any, image: Image, k: int) -> tuple[Predictions, dict[str, Any] | None]:
    matches = index.search(image, k=k)
    preds = [(str(m.source), float(m.raw_score)) for m in matches]
    top = None
    if matches:
        m = matches[0]
        top = {
            "p_value": m.p_value,
            "score": m.score,
            "inliers": m.inliers,
            "similarity": round(m.similarity, 4),
            "decision": m.decision,
        }
    return preds, top


@_method("full")
def _full(rt: _Runtime, image: Image) -> tuple[Predictions, dict[str, Any] | None]:
    return _search(rt.index, image, rt.config.k)


@_method("full_v1")
def _full_v1(rt: _Runtime, image: Image) -> tuple[Predictions, dict[str, Any] | None]:
    return _search(rt.index_v1, image, rt.config.k)


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, TracemarkError):
        return exc.to_dict()
    return {"type": type(exc).__name__, "message": str(exc), "source": None}


def evaluate_query(rt: _Runtime, spec: QuerySpec, source: Image) -> dict[str, Any]:
    """One record: predictions and milliseconds per method (or an ``error``)."""
    rec: dict[str, Any] = {
        "query": spec.name,
        "kind": spec.kind,
        "reference": spec.reference,
        "group": spec.group,
        "query_set": spec.query_set,
        "predictions": {},
        "ms": {},
        "top": {},
    }
    try:
        image = query_image(spec, source)
    except Exception as exc:  # a failed attack is one error record; the run carries on
        rec["error"] = _error(exc)
        return rec
    rec["query_size"] = [int(image.shape[1]), int(image.shape[0])]
    for name in rt.config.methods:
        t0 = time.perf_counter()
        try:
            preds, top = _METHODS[name](rt, image)
        except Exception as exc:
            rec.setdefault("method_errors", {})[name] = _error(exc)
            continue
        rec["ms"][name] = round(1000 * (time.perf_counter() - t0), 3)
        rec["predictions"][name] = [[r, round(s, 6)] for r, s in preds]
        if top is not None:
            rec["top"][name] = top
    return rec


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed code on one thread: OpenCV, FAISS's OpenMP and, when ``threadpoolctl``
    is installed, the BLAS pools (on a busy machine their spinning threads multiply query
    times several-fold). Restores the previous settings."""
    import cv2
    import faiss

    cv_threads, omp_threads = cv2.getNumThreads(), faiss.omp_get_max_threads()
    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = nullcontext()
    else:
        limits = threadpool_limits(1)
    try:
        with limits:
            yield
    finally:
        cv2.setNumThreads(cv_threads)
        faiss.omp_set_num_threads(omp_threads)


_WORKER: dict[str, Any] = {}


def _open_v1(index_path: str | Path) -> Any:
    """A read-only handle on the index that retrieves candidates as version 1 did."""
    from tracemark.copydetect import CopyIndex, MatchConfig

    return CopyIndex.open(index_path, read_only=True, config=MatchConfig(retrieval="v1"))


def _worker_init(index_path: str, refs: _Refs, config: CopyDetectConfig, split: Split) -> None:
    from tracemark.copydetect import CopyIndex

    guard = one_thread()
    guard.__enter__()  # for the worker's lifetime
    v1 = _open_v1(index_path) if "full_v1" in config.methods else None
    _WORKER.update(
        guard=guard,
        rt=_Runtime(refs, CopyIndex.open(index_path, read_only=True), config, v1),
        split=split,
    )


def _worker_run(spec: QuerySpec) -> dict[str, Any]:
    rt, split = _WORKER["rt"], _WORKER["split"]
    return evaluate_query(rt, spec, _load(split, spec.source, rt.config.max_side))


# --- the run -------------------------------------------------------------------------------


def _mine_hard_negatives(
    refs: _Refs, ref_names: Sequence[str], pool: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[str, str, str, float]]:
    """``(pool image, reference, "vlad" | "pdq", similarity or distance)`` per reference."""
    from tracemark.fingerprint.pdq import pdq_match_distance

    if not pool:
        return []
    names = sorted(pool)
    pos = {n: i for i, n in enumerate(refs.names)}
    out = []
    for ref in ref_names:
        i = pos[ref]
        rows = refs.vlad[refs.vlad_owner == i]
        sims = [float(np.max(pool[n][0] @ rows.T)) if rows.size else -1.0 for n in names]
        dists = [int(pdq_match_distance(pool[n][1], refs.pdq[i])) for n in names]
        best_v = min(range(len(names)), key=lambda j: (-sims[j], names[j]))
        best_p = min(range(len(names)), key=lambda j: (dists[j], names[j]))
        out.append((names[best_v], ref, "vlad", round(sims[best_v], 4)))
        out.append((names[best_p], ref, "pdq", float(dists[best_p])))
    return out


def run_copydetect_bench(
    images: Sequence[Path],
    *,
    config: CopyDetectConfig | None = None,
    root: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Build, query and score the benchmark; returns the JSON-serialisable result."""
    from tqdm import tqdm

    from tracemark.copydetect import CopyIndex, describe_query
    from tracemark.fingerprint import local
    from tracemark.fingerprint.hashes import phash

    cfg = config or CopyDetectConfig()
    split = split_images(images, cfg, root)
    if not split.references:
        raise ConfigError("no reference images: every image is in the VLAD training half")
    if set(INDEX_METHODS) & set(cfg.methods) and len(split.background) < 4:
        raise ConfigError(
            f"calibration needs >= 4 background images; the split leaves {len(split.background)}"
        )
    tty = sys.stderr.isatty()  # a bar on a terminal; in a log a line every 30 s
    bar_opts = {"file": sys.stderr, "disable": not progress, "leave": not tty,
                "mininterval": 0.1 if tty else 30.0, "ascii": not tty}
    skipped: list[dict[str, Any]] = []
    prepared: dict[str, Image] = {}
    for name in tqdm([*split.references, *split.pool], desc="load", unit="img", **bar_opts):
        try:
            prepared[name] = _load(split, name, cfg.max_side)
        except TracemarkError as exc:
            skipped.append({"image": name, "stage": "load", "error": exc.to_dict()})
    timings: dict[str, Any] = {}
    with one_thread(), tempfile.TemporaryDirectory(prefix="tracemark-copydetect-") as tmp:
        ci = CopyIndex.create(Path(tmp) / "index")
        ci_v1 = None
        try:
            names = [n for n in split.references if n in prepared]
            t0 = time.perf_counter()
            added = ci.add_many((prepared[n], {"source": n}) for n in names)
            ci.commit()
            timings["index_build_s"] = round(time.perf_counter() - t0, 3)
            ids: dict[str, int] = {}
            for n, res in zip(names, added, strict=True):
                if isinstance(res, TracemarkError):
                    skipped.append({"image": n, "stage": "index", "error": res.to_dict()})
                elif res.duplicate_of is not None:
                    skipped.append(
                        {
                            "image": n,
                            "stage": "index",
                            "error": {
                                "type": "duplicate",
                                "message": f"same pixels as reference {res.duplicate_of}",
                                "source": n,
                            },
                        }
                    )
                else:
                    ids[n] = res.id
            ref_names = [n for n in names if n in ids]
            timings["index_build_ms_per_ref"] = round(
                1000 * timings["index_build_s"] / max(1, len(ref_names)), 3
            )
            vlad = [ci.index.vectors(ids[n], "vlad") for n in ref_names]
            refs = _Refs(
                names=ref_names,
                pdq=np.vstack([ci.index.vectors(ids[n], "pdq") for n in ref_names]),
                phash=np.vstack([phash(prepared[n]) for n in ref_names]),
                local=[
                    local.LocalFeatures.from_bytes(ci.index.blob(ids[n], "local") or b"")
                    for n in ref_names
                ],
                vlad=np.vstack(vlad).astype(np.float32),
                vlad_owner=np.concatenate([np.full(len(v), i) for i, v in enumerate(vlad)]),
            )
            threshold = None
            thresholds: dict[str, float | None] = {}
            calibration = None
            background: list[Image] = []
            if set(INDEX_METHODS) & set(cfg.methods):
                t0 = time.perf_counter()
                background = [_load(split, n, cfg.max_side) for n in split.background]
                calibration = ci.calibrate(background)
                timings["calibration_s"] = round(time.perf_counter() - t0, 3)
                threshold = ci.threshold_for_alpha(RECOMMENDED_ALPHA)
                thresholds["full"] = threshold
            if "full_v1" in cfg.methods:
                # raw scores of v1 and v2 differ: v1 gets its own null sample, on the same
                # background images (kept beside v2's in the calibration file)
                ci.calibrate(background, retrieval="v1")
                ci_v1 = _open_v1(ci.index.path)  # after calibration: it loads the v1 null
                thresholds["full_v1"] = ci_v1.threshold_for_alpha(RECOMMENDED_ALPHA)
            pool_desc: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for n in tqdm(
                [p for p in split.pool if p in prepared], desc="pool", unit="img", **bar_opts
            ):
                d = describe_query(prepared[n])
                pool_desc[n] = (d.vlad, d.pdq8)
            n_hn = (
                len(ref_names)
                if cfg.hard_negatives is None
                else min(cfg.hard_negatives, len(ref_names))
            )
            hn_refs = _spread(ref_names, n_hn)
            mined = _mine_hard_negatives(refs, hn_refs, pool_desc)
            live = Split(
                ref_names, [p for p in split.pool if p in prepared], split.background, split.paths
            )
            specs = plan_queries(live, prepared, mined, cfg)
            records: list[dict[str, Any]] = []
            t0 = time.perf_counter()
            with tqdm(total=len(specs), desc="bench copydetect", unit="query", **bar_opts) as bar:
                if cfg.workers == 1 or len(specs) <= 1:
                    rt = _Runtime(refs, ci, cfg, ci_v1)
                    for spec in specs:
                        records.append(evaluate_query(rt, spec, prepared[spec.source]))
                        bar.update(1)
                else:
                    with ProcessPoolExecutor(
                        max_workers=cfg.workers,
                        initializer=_worker_init,
                        initargs=(str(ci.index.path), refs, cfg, live),
                    ) as pool:
                        for rec in pool.map(_worker_run, specs, chunksize=4):
                            records.append(rec)
                            bar.update(1)
            timings["queries_s"] = round(time.perf_counter() - t0, 3)
            index_stats = ci.stats()
        finally:
            if ci_v1 is not None:
                ci_v1.close()
            ci.close()
    truth = {s.name: s.reference for s in specs if s.reference is not None}
    return {
        "version": RESULTS_VERSION,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "config": asdict(cfg),
        "recommended_alpha": RECOMMENDED_ALPHA,
        "recommended_threshold": threshold,
        "recommended_thresholds": thresholds,
        "calibration": calibration,
        "split": {
            "references": ref_names,
            "pool": live.pool,
            "background": split.background,
            "skipped": skipped,
        },
        "index": {"count": index_stats["count"], "disk_bytes": index_stats["disk_bytes"]},
        "queries": [asdict(s) for s in specs],
        "ground_truth": truth,
        "records": records,
        "timings": timings,
        "metrics": compute_metrics(records, truth, cfg.methods, thresholds or threshold),
    }


# --- metrics --------------------------------------------------------------------------------


def predictions_of(
    records: Iterable[Mapping[str, Any]], method: str
) -> list[tuple[str, str, float]]:
    """The pooled ``(query, reference, score)`` predictions of one method."""
    return [
        (r["query"], ref, float(s))
        for r in records
        for ref, s in r.get("predictions", {}).get(method, [])
    ]


def operating_threshold(method: str,
                        recommended: float | Mapping[str, float | None] | None) -> float | None:
    """The score at or above which a method declares a copy (see the module docstring).
    ``recommended``: the calibrated thresholds by method (``full``, ``full_v1``), or one
    threshold for both (results of version 1 and 2)."""
    from tracemark.copydetect import MatchConfig

    if isinstance(recommended, Mapping):
        if method in recommended:
            return recommended[method]
        recommended = recommended.get("full")

    fixed = {
        "pdq": 256.0 - PDQ_THRESHOLD,
        "phash": 64.0 - PHASH_THRESHOLD,
        "local": float(MatchConfig().min_inliers),
        "full_v1": recommended,
        "full": recommended,
    }
    return fixed[method]


def _below(records: Sequence[Mapping[str, Any]], method: str, threshold: float) -> float | None:
    if not records:
        return None
    best = [
        max((s for _, s in r.get("predictions", {}).get(method, [])), default=-math.inf)
        for r in records
    ]
    return float(np.mean([b < threshold for b in best]))


def compute_metrics(
    records: Sequence[Mapping[str, Any]],
    truth: Mapping[str, str],
    methods: Sequence[str],
    recommended: float | Mapping[str, float | None] | None,
) -> dict[str, Any]:
    """Per method: micro-AP, recall@P90, acc@1 (all queries, and per query set in
    ``subsets``), timings, the operating point and per-group accuracy at rank 1.

    A query set's metrics use its own queries plus the hard negatives (which belong to
    every set); records without ``query_set`` (version 1 results) are set ``"v1"``.
    ``subsets`` holds only the sets that have positives.
    """
    from tracemark.metrics.retrieval import (
        accuracy_at_rank1,
        micro_average_precision,
        precision_recall_curve,
        recall_at_precision,
    )

    hard = [r for r in records if r["kind"] == "hard_negative"]
    negs = [r for r in records if r["kind"] == "negative"]
    positives = [r for r in records if r["kind"] == "positive"]
    set_of = {r["query"]: r.get("query_set", "v1") for r in records}
    groups = sorted({(set_of[r["query"]], r["group"]) for r in positives})
    in_set = {
        qs: {r["query"] for r in records if r["kind"] == "hard_negative" or set_of[r["query"]] == qs}
        for qs in QUERY_SETS
    }
    set_truth = {
        qs: {q: ref for q, ref in truth.items() if set_of.get(q, "v1") == qs} for qs in QUERY_SETS
    }
    out: dict[str, Any] = {
        "n_queries": len(records),
        "n_positive": len(positives),
        "n_negative": len(negs),
        "n_hard_negative": len(hard),
        "n_errors": sum("error" in r or bool(r.get("method_errors")) for r in records),
        "sets": {
            qs: {
                "n_queries": len(in_set[qs]),
                "n_positive": len(set_truth[qs]),
                "n_negative": sum(set_of[r["query"]] == qs for r in negs),
            }
            for qs in QUERY_SETS
        },
        "methods": {},
    }
    if not truth:
        return out

    def recall_at(preds: list[tuple[str, str, float]], sub: Mapping[str, str], thr: float) -> float:
        curve = precision_recall_curve(preds, sub, max_per_query=10)
        n = int(np.sum(curve.thresholds >= thr))
        return float(curve.recall[n - 1]) if n else 0.0

    for m in methods:
        preds = predictions_of(records, m)
        ms = [r["ms"][m] for r in records if m in r.get("ms", {})]
        thr = operating_threshold(m, recommended)
        subsets = {}
        for qs in QUERY_SETS:
            if not set_truth[qs]:
                continue
            sub_preds = [p for p in preds if p[0] in in_set[qs]]
            subsets[qs] = {
                "micro_ap": micro_average_precision(sub_preds, set_truth[qs], max_per_query=10),
                "recall_at_p90": recall_at_precision(
                    sub_preds, set_truth[qs], 0.9, max_per_query=10
                ),
                "acc_at_1": accuracy_at_rank1(sub_preds, set_truth[qs]),
            }
        op: dict[str, Any] = {"threshold": thr}
        if thr is not None:
            curve = precision_recall_curve(preds, truth, max_per_query=10)
            n = int(np.sum(curve.thresholds >= thr))
            op.update(
                precision=float(curve.precision[n - 1]) if n else None,
                recall=float(curve.recall[n - 1]) if n else 0.0,
                recall_v2=(
                    recall_at([p for p in preds if p[0] in in_set["v2"]], set_truth["v2"], thr)
                    if set_truth["v2"]
                    else None
                ),
                hard_negatives_below=_below(hard, m, thr),
                negatives_below=_below(negs, m, thr),
            )
        per_group = {}
        for qs, g in groups:
            qnames = {r["query"] for r in positives if r["group"] == g}
            sub_truth = {q: truth[q] for q in qnames}
            per_group[g] = {
                "n": len(qnames),
                "query_set": qs,
                "acc_at_1": accuracy_at_rank1([p for p in preds if p[0] in qnames], sub_truth),
            }
        out["methods"][m] = {
            "micro_ap": micro_average_precision(preds, truth, max_per_query=10),
            "recall_at_p90": recall_at_precision(preds, truth, 0.9, max_per_query=10),
            "acc_at_1": accuracy_at_rank1(preds, truth),
            "subsets": subsets,
            "query_ms_median": statistics.median(ms) if ms else None,
            "query_ms_p95": float(np.percentile(ms, 95)) if ms else None,
            "operating_point": op,
            "per_group_acc_at_1": per_group,
        }
    return out


# --- report ----------------------------------------------------------------------------------


def _f(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def format_markdown(result: Mapping[str, Any], *, level: int = 1) -> str:
    """The report: the method table (all queries, the hard kinds alone, the version 1
    queries alone), the operating points, per-group accuracy and timings. Formats version 1
    results too (without the per-set columns)."""
    h1, h2 = "#" * level, "#" * (level + 1)
    met, cfg, tim = result["metrics"], result["config"], result["timings"]
    methods = list(met["methods"])
    sp = result["split"]
    size = f"long side <= {cfg['max_side']} px" if cfg.get("max_side") else "original size"
    lines = [
        f"{h1} Copy detection (DISC21-style)",
        "",
        f"{result['date']}; {result['machine']}; seed {cfg['seed']}; images at {size}. "
        f"{len(sp['references'])} references (held-out half of the VLAD model), "
        f"{len(sp['pool'])} pool and {len(sp['background'])} calibration-background images "
        f"(training half, never indexed). Queries: {met['n_positive']} copies "
        f"({cfg['queries_per_ref']} `{QUERY_SUITE}` draws per reference plus hard edits for a "
        f"share of {cfg['hard_share']:g}), {met['n_negative']} edited non-copies, "
        f"{met['n_hard_negative']} hard negatives (nearest pool image by VLAD and by PDQ, JPEG "
        f"{HARD_NEGATIVE_JPEG}); {met['n_errors']} query errors.",
    ]
    sets = met.get("sets")
    if sets is not None:
        v2 = sets["v2"]
        lines[-1] += (
            f" Of these, the hard kinds (`{V2_SUITE}`, {cfg['v2_queries_per_ref']} entries per "
            f"reference): {v2['n_positive']} copies and {v2['n_negative']} edited non-copies."
        )
    n_v2 = sets["v2"]["n_positive"] if sets is not None else 0
    lines += [
        "",
        f"| method | n queries | muAP | recall@P90 | acc@1 (n = {met['n_positive']} copies) "
        f"| muAP hard kinds | recall@P90 hard kinds | acc@1 hard kinds (n = {n_v2}) "
        "| median query ms | p95 query ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        x = met["methods"][m]
        hk = x.get("subsets", {}).get("v2", {})
        lines.append(
            f"| {m} | {met['n_queries']} | {_f(x['micro_ap'])} | {_f(x['recall_at_p90'])} | "
            f"{_f(x['acc_at_1'])} | {_f(hk.get('micro_ap'))} | {_f(hk.get('recall_at_p90'))} | "
            f"{_f(hk.get('acc_at_1'))} | {_f(x['query_ms_median'], '.1f')} | "
            f"{_f(x['query_ms_p95'], '.1f')} |"
        )
    shortlist = cfg.get("local_shortlist")
    lines += [
        "",
        "muAP: micro average precision over the pooled predictions, at most 10 per query "
        "(ISC2021). `pdq`: 256 - smallest dihedral distance; `phash`: 64 - distance; `local`: "
        + (
            "RANSAC inliers against every reference (brute force)"
            if shortlist is None
            else f"RANSAC inliers against the best {shortlist} references by VLAD"
        )
        + "; `full`: `CopyIndex.search` raw score; `full_v1`: the same index and calibration "
        "searched with the previous version's candidate retrieval (`MatchConfig(retrieval="
        "\"v1\")`). Hard kinds: the `" + V2_SUITE + "` queries with the hard negatives. Query "
        "times include each method's own feature extraction.",
        "",
    ]
    if sets is not None:
        v1 = sets["v1"]
        lines += [
            f"Version 1 queries alone ({v1['n_positive']} copies, {v1['n_negative']} edited "
            f"non-copies, {met['n_hard_negative']} hard negatives; comparable with results of "
            "version 1):",
            "",
            "| method | muAP | recall@P90 | acc@1 |",
            "|---|---:|---:|---:|",
        ]
        for m in methods:
            x = met["methods"][m].get("subsets", {}).get("v1", {})
            lines.append(
                f"| {m} | {_f(x.get('micro_ap'))} | {_f(x.get('recall_at_p90'))} | "
                f"{_f(x.get('acc_at_1'))} |"
            )
        lines.append("")
    lines += [
        f"{h2} Operating points",
        "",
        f"| method | threshold (score >=) | precision | recall (n = {met['n_positive']}) | "
        f"recall hard kinds (n = {n_v2}) | "
        f"hard negatives below (n = {met['n_hard_negative']}) | "
        f"negatives below (n = {met['n_negative']}) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "pdq": f"PDQ distance <= {PDQ_THRESHOLD}",
        "phash": f"pHash distance <= {PHASH_THRESHOLD}",
        "local": "min inliers",
        "full_v1": f"recommended (p = {RECOMMENDED_ALPHA:g})",
        "full": f"recommended (p = {RECOMMENDED_ALPHA:g})",
    }
    for m in methods:
        op = met["methods"][m]["operating_point"]
        if op["threshold"] is None:
            continue
        lines.append(
            f"| {m} ({names[m]}) | {op['threshold']:.2f} | {_f(op['precision'])} | {_f(op['recall'])} | "
            f"{_f(op.get('recall_v2'))} | "
            f"{_f(op['hard_negatives_below'])} | {_f(op['negatives_below'])} |"
        )
    cells_of = {m: met["methods"][m]["per_group_acc_at_1"] for m in methods}
    groups = sorted(
        {(c.get("query_set", "v1"), g) for m in methods for g, c in cells_of[m].items()}
    )
    lines += [
        "",
        f"{h2} Accuracy at rank 1 per edit",
        "",
        "| edit | queries | n | " + " | ".join(methods) + " |",
        "|---|---|---:|" + "---:|" * len(methods),
    ]
    for qs, g in groups:
        cells = [cells_of[m].get(g) for m in methods]
        n = next(c["n"] for c in cells if c is not None)
        where = f"hard kinds (`{V2_SUITE}`)" if qs == "v2" else "version 1"
        lines.append(
            f"| {g} | {where} | {n} | "
            + " | ".join("—" if c is None else f"{c['acc_at_1']:.2f}" for c in cells)
            + " |"
        )
    lines += [
        "",
        f"Index build: {tim['index_build_s']:.1f} s for {len(sp['references'])} references "
        f"({tim['index_build_ms_per_ref']:.0f} ms each, SIFT + VLAD + PDQ); calibration: "
        f"{_f(tim.get('calibration_s'), '.1f')} s; all queries: {tim['queries_s']:.0f} s "
        f"(workers: {cfg['workers']}).",
    ]
    return "\n".join(lines)


def write_outputs(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results.json`` and ``report.md``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(result, separators=(",", ":")) + "\n", encoding="utf-8")
    paths[1].write_text(format_markdown(result) + "\n", encoding="utf-8")
    return paths


# --- command line ----------------------------------------------------------------------------
