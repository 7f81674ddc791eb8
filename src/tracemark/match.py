"""Copy detection: retrieve candidates, verify them geometrically, score against a background.

A :class:`CopyIndex` is a persistent :class:`tracemark.index.Index` with two vector sets
and one blob per reference:

* ``pdq`` — the 256-bit PDQ hash (one row; queries search their 8 dihedral hashes);
* ``vlad`` — region descriptors (whole image, centre and four corner windows) for
  retrieval that survives crops, insets, rotations and colour changes;
* blob ``local`` — the reference's SIFT features for verification.

:meth:`CopyIndex.search` takes the union of the best ``candidates`` references by
descriptor similarity and the PDQ hits within ``pdq_max_distance``, verifies each with
RANSAC on local features (asymmetric: the query may be a small crop of the reference or
contain it as an inset), and scores it:

``raw = inliers + 10 * s_norm`` where ``s_norm`` is the descriptor similarity normalised
against a background set of non-matching images, as the Image Similarity Challenge 2021
winners did: ``s_norm = s(q, r) - mean(top-3 s(q, b) over background b)``. A query that
resembles everything (flat, generic) is penalised. The calibrated ``score`` is
``1 - p`` where ``p`` is a p-value against the null distribution of raw scores learnt
by :meth:`CopyIndex.calibrate` (background images that are not in the collection,
searched like queries): empirical up to the median, an exponential tail fitted to the
exceedances beyond it. ``decision`` is ``p <= alpha``. Without calibration,
``score`` is a fixed logistic of ``raw`` and the decision uses ``min_inliers``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.errors import ConfigError, TracemarkError
from tracemark.fingerprint import global_desc, local, pdq
from tracemark.imageio import load_image
from tracemark.index import AddResult, Index, NewReference, VectorSpec

__all__ = ["MatchConfig", "Match", "QueryResult", "CopyIndex", "content_hash"]

CALIBRATION_FILE = "calibration.npz"
CALIBRATION_VERSION = 1


def content_hash(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape: the same picture in another container
    (PNG vs lossless WebP, stripped metadata) is the same content."""
    h = hashlib.sha256()
    h.update(np.asarray(rgb.shape, np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class MatchConfig:
    candidates: int = 25
    """References verified per query, by descriptor similarity."""
    pdq_max_distance: int = 64
    """PDQ hits within this Hamming distance (any of 8 orientations) are verified too."""
    min_inliers: int = 12
    """Decision threshold on inliers when the index is not calibrated."""
    alpha: float = 1e-3
    """Decision: empirical p-value against the background at most this (calibrated index)."""
    max_features: int = 500
    """SIFT features per image kept for verification."""
    background_k: int = 3

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.max_features < 10 or not 0 < self.alpha < 1:
            raise ConfigError(f"invalid match configuration: {self}")


@dataclass(frozen=True)
class Match:
    ref_id: int
    source: str | None
    score: float
    """Calibrated: 1 - p-value against the background (higher = more certainly a copy)."""
    p_value: float | None
    raw_score: float
    inliers: int
    similarity: float
    """Descriptor similarity (max inner product over region rows), before normalisation."""
    pdq_distance: int | None
    region: list[list[float]] | None
    """The query's outline in the reference's pixels (4 corners), where the copy comes from."""
    query_region: list[list[float]] | None
    """The reference's outline in the query's pixels: where the copy sits in the query."""
    flipped: bool
    decision: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueryResult:
    query: str
    matches: list[Match] = field(default_factory=list)
    error: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "matches": [m.to_dict() for m in self.matches],
                "error": self.error, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class _Query:
    features: local.LocalFeatures
    vlad: np.ndarray
    pdq8: np.ndarray


class CopyIndex:
    """A persistent collection of protected works and the copy-detection pipeline over it."""

    def __init__(self, index: Index, config: MatchConfig | None = None) -> None:
        self.index = index
        self.config = config or MatchConfig()
        self._background: np.ndarray | None = None
        self._null: np.ndarray | None = None
        self._load_calibration()

    # --- lifecycle -----------------------------------------------------------------

    @staticmethod
    def vector_specs() -> dict[str, VectorSpec]:
        return {"pdq": VectorSpec("binary", 256), "vlad": VectorSpec("float", global_desc.DIM)}

    @classmethod
    def create(cls, path: str | Path, config: MatchConfig | None = None, *,
               database_url: str | None = None, schema: str | None = None) -> CopyIndex:
        """A new collection at ``path``; with ``database_url`` and ``schema`` its metadata
        and vectors live in that (PostgreSQL) schema, FAISS files in ``path``."""
        return cls(Index.create(path, vector_specs=cls.vector_specs(), database_url=database_url,
                                schema=schema), config)

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, config: MatchConfig | None = None,
             database_url: str | None = None) -> CopyIndex:
        return cls(Index.open(path, read_only=read_only, database_url=database_url), config)

    @classmethod
    def open_or_create(cls, path: str | Path, config: MatchConfig | None = None) -> CopyIndex:
        p = Path(path)
        if p.exists() and any(p.iterdir()):
            return cls.open(p, config=config)
        return cls.create(p, config)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> CopyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.index.commit()
        self.close()

    # --- registering -------------------------------------------------------------------

    def _reference(self, image: Any, *, source: str | None, owner: str | None, license: str | None,
                   notes: str | None) -> NewReference:
        rgb = load_image(image)
        feats = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES)
        vlad = global_desc.describe_features(feats)
        packed, _quality = pdq.pdq_hash(rgb, packed=True)
        return NewReference(
            content_hash=content_hash(rgb),
            vectors={"pdq": packed[None, :], "vlad": vlad},
            source=source, owner=owner, license=license, notes=notes,
            blobs={"local": feats.head(self.config.max_features).to_bytes()},
        )

    def add(self, image: Any, *, source: str | None = None, owner: str | None = None,
            license: str | None = None, notes: str | None = None) -> AddResult:
        """Register one image; a second add of the same content returns ``duplicate_of``."""
        if source is None and isinstance(image, str | Path):
            source = str(image)
        ref = self._reference(image, source=source, owner=owner, license=license, notes=notes)
        return self.index.add_many([ref])[0]

    def add_many(self, items: Iterable[tuple[Any, Mapping[str, str | None]]]) -> list[AddResult | TracemarkError]:
        """Register a batch: one transaction for the good items; a bad item is returned as its
        typed error in its slot and the rest are added."""
        refs: list[NewReference] = []
        slots: list[int] = []
        out: list[AddResult | TracemarkError] = []
        for i, (image, meta) in enumerate(items):
            try:
                refs.append(self._reference(image, source=meta.get("source"), owner=meta.get("owner"),
                                            license=meta.get("license"), notes=meta.get("notes")))
                slots.append(i)
                out.append(None)  # type: ignore[arg-type]
            except TracemarkError as exc:
                out.append(exc)
        for slot, res in zip(slots, self.index.add_many(refs), strict=True):
            out[slot] = res
        return out

    def remove(self, ref_id: int) -> bool:
        return self.index.remove(ref_id)

    def commit(self, *, write_vectors: bool = True) -> None:
        """Commit (see :meth:`tracemark.index.Index.commit` for ``write_vectors``)."""
        self.index.commit(write_vectors=write_vectors)

    # --- searching -------------------------------------------------------------------

    def _query(self, image: Any) -> _Query:
        rgb = load_image(image)
        feats = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES)
        vlad = global_desc.describe_features(feats, mirror=True)
        pdq8, _quality = pdq.pdq_dihedral(rgb, packed=True)
        return _Query(features=feats.head(self.config.max_features), vlad=vlad, pdq8=pdq8)

    def search(self, image: Any, *, k: int = 5) -> list[Match]:
        """Ranked matches (best first, at most ``k``) of one query image."""
        if len(self.index) == 0:
            return []
        q = self._query(image)
        return self._search(q, k=k)

    def _search(self, q: _Query, *, k: int) -> list[Match]:
        cfg = self.config
        sims: dict[int, float] = {}
        for row_hits in self.index.search("vlad", q.vlad, cfg.candidates):
            for hit in row_hits:
                sims[hit.ref_id] = max(sims.get(hit.ref_id, -1.0), float(hit.score))
        pdq_d: dict[int, int] = {}
        for row_hits in self.index.search("pdq", q.pdq8, 3):
            for hit in row_hits:
                if hit.score <= cfg.pdq_max_distance:
                    pdq_d[hit.ref_id] = min(pdq_d.get(hit.ref_id, 257), int(hit.score))
        ranked = sorted(sims, key=lambda r: -sims[r])[: cfg.candidates]
        candidates = list(dict.fromkeys([*ranked, *sorted(pdq_d, key=lambda r: pdq_d[r])]))
        bg = self._background_level(q.vlad)
        out: list[Match] = []
        for ref_id in candidates:
            blob = self.index.blob(ref_id, "local")
            if blob is None:
                continue
            ref_feats = local.LocalFeatures.from_bytes(blob)
            v = local.verify(q.features, ref_feats)
            sim = sims.get(ref_id)
            if sim is None:
                vec = self.index.vectors(ref_id, "vlad")
                sim = float(np.max(q.vlad @ vec.T)) if vec is not None else 0.0
            raw = float(v.inliers) + 10.0 * (sim - bg)
            p = self._p_value(raw)
            decision = p <= cfg.alpha if p is not None else v.inliers >= cfg.min_inliers
            score = 1.0 - p if p is not None else 0.5 * (1.0 + math.tanh((raw - cfg.min_inliers) / 6.0))
            ref = self.index.get(ref_id)
            out.append(Match(
                ref_id=ref_id, source=ref.source, score=score, p_value=p, raw_score=raw,
                inliers=int(v.inliers), similarity=sim, pdq_distance=pdq_d.get(ref_id),
                region=None if v.region is None else np.round(v.region, 1).tolist(),
                query_region=None if v.query_region is None else np.round(v.query_region, 1).tolist(),
                flipped=bool(v.flipped), decision=bool(decision),
            ))
        out.sort(key=lambda m: (-m.raw_score, m.ref_id))
        return out[:k]

    def search_many(self, images: Sequence[Any], *, k: int = 5) -> list[QueryResult]:
        """Search a batch; a bad query gets its typed error and the batch carries on."""
        results = []
        for image in images:
            name = str(image) if isinstance(image, str | Path) else "<image>"
            t0 = time.perf_counter()
            try:
                res = QueryResult(name, self.search(image, k=k))
            except TracemarkError as exc:
                res = QueryResult(name, error=exc.to_dict())
            res.seconds = time.perf_counter() - t0
            results.append(res)
        return results

    # --- calibration -----------------------------------------------------------------

    def _background_level(self, qvlad: np.ndarray) -> float:
        if self._background is None or self._background.size == 0:
            return 0.0
        s = np.max(qvlad @ self._background.T, axis=0)  # best query row per background row
        k = min(self.config.background_k, s.size)
        return float(np.mean(np.sort(s)[-k:]))

    def _p_value(self, raw: float) -> float | None:
        """Empirical p-value against the null samples up to their median; above it, an
        exponential tail fitted to the exceedances (mean excess), so that scores beyond
        every background sample still get a graded, small p-value."""
        null = self._null
        if null is None or null.size == 0:
            return None
        n = null.size
        u = float(np.quantile(null, 0.5))
        if raw <= u:
            return float((1 + np.sum(null >= raw)) / (1 + n))
        exceed = null[null > u] - u
        lam = max(float(exceed.mean()) if exceed.size else 1.0, 0.5)
        p_u = (1 + exceed.size) / (1 + n)
        return float(max(p_u * math.exp(-(raw - u) / lam), 1e-300))

    def calibrate(self, background: Sequence[Any]) -> dict[str, Any]:
        """Learn the background from images known not to be in the collection.

        Their descriptors become the normalisation set; each is then searched like a query
        and its best raw score is one sample of the null distribution (half the images give
        the normalisation set, the other half the null samples, so a sample is never
        normalised against itself). Saved as ``calibration.npz`` beside the index.
        """
        items = list(background)
        if len(items) < 4:
            raise ConfigError("calibration needs at least 4 background images")
        descs, queries = [], []
        for i, image in enumerate(items):
            try:
                q = self._query(image)
            except TracemarkError:
                continue
            if i % 2 == 0:
                descs.append(q.vlad[: len(global_desc.REGIONS)])
            else:
                queries.append(q)
        self._background = np.vstack(descs).astype(np.float32) if descs else None
        self._null = None
        null = []
        for q in queries:
            matches = self._search(q, k=1)
            null.append(matches[0].raw_score if matches else 0.0)
        self._null = np.sort(np.array(null, np.float64))
        self._save_calibration()
        return {"background_rows": 0 if self._background is None else int(self._background.shape[0]),
                "null_samples": int(self._null.size),
                "null_quantiles": {q: float(np.quantile(self._null, q)) for q in (0.5, 0.9, 0.99, 1.0)}}

    def threshold_for_alpha(self, alpha: float) -> float | None:
        """The raw score at which the p-value falls to ``alpha`` (the decision boundary)."""
        if self._null is None or self._null.size == 0:
            return None
        lo, hi = float(self._null.min()) - 1, float(self._null.max()) + 1000.0
        for _ in range(80):
            mid = (lo + hi) / 2
            if (self._p_value(mid) or 1.0) <= alpha:
                hi = mid
            else:
                lo = mid
        return hi

    def _calibration_path(self) -> Path:
        return Path(self.index.path) / CALIBRATION_FILE

    def _save_calibration(self) -> None:
        path = self._calibration_path()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, version=np.array(CALIBRATION_VERSION), background=self._background
                 if self._background is not None else np.zeros((0, global_desc.DIM), np.float32),
                 null=self._null if self._null is not None else np.zeros(0))
        tmp.replace(path)

    def _load_calibration(self) -> None:
        path = self._calibration_path()
        if not path.exists():
            return
        with np.load(path) as data:
            if int(data["version"]) != CALIBRATION_VERSION:
                raise ConfigError(f"{path}: unsupported calibration version {int(data['version'])}")
            self._background = data["background"].astype(np.float32)
            self._null = np.sort(data["null"].astype(np.float64))

    def stats(self) -> dict[str, Any]:
        s = dict(self.index.stats())
        s["calibrated"] = self._null is not None
        s["calibration"] = None if self._null is None else {"null_samples": int(self._null.size)}
        return s
