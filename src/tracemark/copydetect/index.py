"""The copy-detection collection: retrieve candidates, verify them geometrically, decide.

A :class:`CopyIndex` is a persistent :class:`tracemark.index.Index` with two vector sets
and blobs per reference (described by :mod:`tracemark.copydetect.describe`):

* ``pdq`` — the 256-bit PDQ hash (one row; queries search their 8 dihedral hashes);
* ``vlad`` — region descriptors (whole image, centre and four corner windows) for
  retrieval that survives crops, insets, rotations and colour changes;
* blob ``local`` — the reference's SIFT features for verification (and ``words``, its
  visual words for the inverted file);
* blob ``preview`` — a JPEG of the reference, long side at most 256 px, for people
  (:meth:`CopyIndex.preview`; references added before it existed have none).

:meth:`CopyIndex.search` takes the union of the best ``candidates`` references by
descriptor similarity and the PDQ hits within ``pdq_max_distance``, verifies each with
RANSAC on local features (asymmetric: the query may be a small crop of the reference or
contain it as an inset), scores it and decides with :mod:`tracemark.copydetect.decide`
(a p-value against the background learnt by :meth:`CopyIndex.calibrate`, or an inlier
count when uncalibrated).

Lifecycle (:class:`tracemark._lifecycle.Resource`, shared with :class:`~tracemark.index.Index`
and the credential store): ``with CopyIndex.open(...) as ci:`` commits on a clean exit and
rolls back the uncommitted writes when the block raises; :meth:`close` commits and is
idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tracemark._lifecycle import Resource
from tracemark.copydetect.decide import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_INLIERS,
    PDQ_MATCH_DISTANCE,
    PDQ_MIN_QUALITY,
    DecisionRule,
    NullModel,
    raw_score,
)
from tracemark.copydetect.describe import (
    DEFAULT_MAX_FEATURES,
    PREVIEW_BLOB,
    QueryDescriptors,
    content_hash,
    describe_query,
    describe_reference,
    reference_preview,
    reference_words,
)
from tracemark.copydetect.ivf import InvertedFile, ids_fingerprint
from tracemark.errors import (
    ConfigError,
    FingerprintError,
    IndexClosedError,
    ReferenceNotFoundError,
    TracemarkError,
)
from tracemark.fingerprint import global_desc, local
from tracemark.fingerprint.words import Words, WordsError
from tracemark.index import AddResult, Index, NewReference, VectorSpec

__all__ = ["MatchConfig", "Match", "QueryResult", "CopyIndex", "CALIBRATION_DOC", "CALIBRATION_FILE", "GLOBAL_INDEXES",
           "new_reference"]

CALIBRATION_DOC = "copydetect.calibration"
"""The index document (:meth:`tracemark.index.Index.document`) holding the calibration."""
CALIBRATION_FILE = "calibration.npz"
"""Where indexes made before format 2 kept the calibration, beside the database: still
read when the index holds no calibration document."""
GLOBAL_INDEXES = ("flat", "hnsw", "ivf", "auto", "none")
WORDS_BLOB = "words"
IVF_FILE = "words.ivf"


def new_reference(image: Any, *, max_features: int = DEFAULT_MAX_FEATURES,
                  source: str | None = None, owner: str | None = None,
                  license: str | None = None, notes: str | None = None
                  ) -> tuple[NewReference, Words]:
    """What :meth:`CopyIndex.add` stores for ``image``: the :class:`NewReference` (content
    hash, ``pdq`` and ``vlad`` rows, ``local``, ``words`` and ``preview`` blobs, metadata)
    and the words it posts in the inverted file. Raises the loader's typed errors for bad
    input."""
    d = describe_reference(image, max_features=max_features)
    ref = NewReference(
        content_hash=content_hash(d.rgb),
        vectors={"pdq": d.pdq, "vlad": d.vlad},
        source=source, owner=owner, license=license, notes=notes,
        blobs={"local": d.features.to_bytes(), WORDS_BLOB: d.words.to_bytes(),
               PREVIEW_BLOB: reference_preview(d.rgb)},
    )
    return ref, d.words


@dataclass(frozen=True)
class MatchConfig:
    candidates: int = 25
    """References verified per query, by descriptor similarity."""
    pdq_max_distance: int = 64
    """PDQ hits within this Hamming distance (any of 8 orientations) are verified too."""
    min_inliers: int = DEFAULT_MIN_INLIERS
    """Decision threshold on inliers when the index is not calibrated."""
    alpha: float = DEFAULT_ALPHA
    """Decision: empirical p-value against the background at most this (calibrated index)."""
    max_features: int = DEFAULT_MAX_FEATURES
    """SIFT features per image kept for verification."""
    background_k: int = 3
    retrieval: str = "v2"
    """Candidate retrieval: ``"v2"`` (default: the ``candidates`` best references of the
    inverted file over visual words with Hamming embedding, the PDQ hits, and the
    ``global_candidates`` best by VLAD similarity) or ``"v1"`` (the previous version's
    ``candidates`` best by VLAD + PDQ hits; kept for comparison)."""
    global_candidates: int = 5
    """v2: references verified by VLAD similarity besides the inverted file's."""
    early_stop: bool = True
    """v2: once a candidate is verified beyond doubt (decided a copy with at least
    ``sure_inliers`` inliers), skip the remaining candidates whose inverted-file vote is
    below ``stop_vote_share`` of its vote and the VLAD-only ones. A query holding two works of very
    unequal size may then report only the larger; set False to verify every candidate."""
    sure_inliers: int = 40
    stop_vote_share: float = 0.1
    """See ``early_stop``: at a million references the candidates after a sure match are
    mostly look-alikes voting at a few percent of its vote."""

    def __post_init__(self) -> None:
        """Raises :class:`~tracemark.errors.ConfigError` naming the first bad field."""
        if self.retrieval not in ("v1", "v2"):
            raise ConfigError(f"retrieval must be 'v1' or 'v2', got {self.retrieval!r}")
        ints = {"candidates": (1, None), "pdq_max_distance": (0, 256), "min_inliers": (1, None),
                "max_features": (10, None), "background_k": (1, None),
                "global_candidates": (0, None), "sure_inliers": (1, None)}
        for name, (low, high) in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) \
                    or value < low or (high is not None and value > high):
                span = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ConfigError(f"MatchConfig.{name} must be an int {span}, got {value!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float | np.floating) \
                or not 0 < self.alpha < 1:
            raise ConfigError(f"MatchConfig.alpha must be a number in (0, 1), got {self.alpha!r}")
        if not isinstance(self.early_stop, bool | np.bool_):
            raise ConfigError(f"MatchConfig.early_stop must be a bool, got {self.early_stop!r}")
        if isinstance(self.stop_vote_share, bool) \
                or not isinstance(self.stop_vote_share, int | float | np.floating) \
                or not 0 <= self.stop_vote_share <= 1:
            raise ConfigError("MatchConfig.stop_vote_share must be a number in [0, 1], "
                              f"got {self.stop_vote_share!r}")

    @property
    def rule(self) -> DecisionRule:
        """The decision rule these settings give (v2 also decides an uncalibrated copy by a
        PDQ distance <= :data:`~tracemark.copydetect.decide.PDQ_MATCH_DISTANCE`)."""
        return DecisionRule(alpha=self.alpha, min_inliers=self.min_inliers,
                            pdq_max_distance=PDQ_MATCH_DISTANCE if self.retrieval == "v2" else None)


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
    transform: list[list[float]] | None = None
    """3x3 transform (row-major) from query pixels to reference pixels, flips included,
    for aligning the query to the reference (:attr:`tracemark.fingerprint.local.
    Verification.alignment`: a homography where it explains nearly as many matches as the
    verified similarity)."""
    reference_size: list[int] | None = None
    """The reference's ``[width, height]`` in pixels (the frame ``transform`` maps into)."""

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


class CopyIndex(Resource):
    """A persistent collection of protected works and the copy-detection pipeline over it.

    Lifecycle of :class:`tracemark._lifecycle.Resource`: a clean ``with`` exit commits, an
    exception rolls back; :meth:`close` commits and is idempotent; use after close raises
    :class:`~tracemark.errors.IndexClosedError`.
    """

    _closed_error = IndexClosedError
    _noun = "index"

    def __init__(self, index: Index, config: MatchConfig | None = None) -> None:
        self._init_resource()
        self.index = index
        self.config = config or MatchConfig()
        self._model: NullModel | None = self._load_model(self.config.retrieval)
        self._adopt_legacy_calibration()
        self._ivf: InvertedFile | None = None  # loaded at the first v2 search
        self._ivf_seq = 0  # the last change of a shared index applied to it
        self._damaged: dict[int, str] = {}  # references whose stored features are unreadable
        self._ivf_unsaved = False

    # --- lifecycle -----------------------------------------------------------------

    @staticmethod
    def vector_specs(global_index: str = "flat") -> dict[str, VectorSpec]:
        """The vector sets of a collection: ``pdq`` (binary flat) and ``vlad`` (float,
        searched with ``global_index``: see :meth:`create`)."""
        if global_index not in GLOBAL_INDEXES:
            raise ConfigError(f"global_index must be one of {GLOBAL_INDEXES}, got {global_index!r}")
        return {"pdq": VectorSpec("binary", 256),
                "vlad": VectorSpec("float", global_desc.DIM, index=global_index)}  # type: ignore[arg-type]

    @classmethod
    def create(cls, path: str | Path, config: MatchConfig | None = None, *,
               database_url: str | None = None, schema: str | None = None,
               global_index: str = "flat", vectors: str | None = None) -> CopyIndex:
        """A new collection at ``path``; with ``database_url`` and ``schema`` its metadata
        and vectors live in that (PostgreSQL) schema, FAISS files in ``path``; with
        ``vectors`` (a vector-store URL such as ``milvus://host:19530``) the search
        structures live in that store instead of FAISS files
        (:func:`tracemark.index.vectors.parse_vector_url`).

        ``global_index``: how the VLAD region rows (6 x 1 KB a reference) are held:
        ``"flat"`` (default: exact search in memory, 6 KB of RAM a reference), ``"hnsw"``
        (approximate, ~7.5 KB), ``"ivf"`` (IVF-PQ once trained: ~0.3 KB a reference),
        ``"auto"`` (flat up to 200,000 rows, IVF-PQ beyond) or ``"none"`` (in the database only, read for the verified
        candidates; retrieval v2 then takes its candidates from the inverted file and PDQ
        alone, and retrieval v1 is unavailable): for collections of millions of references,
        where six rows a reference would not fit in memory (6 GB at a million).
        """
        return cls(Index.create(path, vector_specs=cls.vector_specs(global_index),
                                database_url=database_url, schema=schema, vectors=vectors),
                   config)

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, config: MatchConfig | None = None,
             database_url: str | None = None, vectors: str | None = None) -> CopyIndex:
        """Open the collection at ``path`` (``vectors`` overrides the vector-store URL it
        recorded: see :meth:`tracemark.index.Index.open`)."""
        return cls(Index.open(path, read_only=read_only, database_url=database_url,
                              vectors=vectors), config)

    @classmethod
    def open_or_create(cls, path: str | Path, config: MatchConfig | None = None) -> CopyIndex:
        p = Path(path)
        if p.exists() and any(p.iterdir()):
            return cls.open(p, config=config)
        return cls.create(p, config)

    def _commit(self, *, write_vectors: bool = True) -> None:
        self.index.commit(write_vectors=write_vectors)

    def _rollback(self) -> None:
        self.index.rollback()
        self._ivf = None  # rebuilt from the database at the next search
        self._ivf_unsaved = False

    def _release(self) -> None:
        if self._ivf is not None and self._ivf_unsaved:
            self._save_ivf(self._ivf)
        self._ivf = None
        self.index._shutdown(commit=False)  # committed (or rolled back) just before

    def refresh(self) -> None:
        """Pick up another handle's commits (vector sets and inverted file)."""
        with self._mutex:
            self._check_open()
            self.index.refresh()
            if self._ivf is not None:
                self._sync_ivf(self._ivf)

    def _closed_source(self) -> str:
        return str(self.index.path)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def null_model(self) -> NullModel | None:
        """What calibration learnt, or None (uncalibrated)."""
        return self._model

    def decision_rule(self) -> dict[str, Any]:
        """How ``decision`` is taken now (:meth:`DecisionRule.describe`); with a
        ``"recalibrate"`` message when the calibration holds null samples of another score
        version only (an index calibrated by a version before copy detection v2)."""
        out = self.config.rule.describe(self._model)
        note = self.calibration_note()
        if note is not None:
            out["recalibrate"] = note
        return out

    def calibration_note(self) -> str | None:
        """Why this handle is uncalibrated although the index was calibrated, or None."""
        if self._model is not None and self._model.calibrated:
            return None
        others = NullModel.versions_of(self._calibration_raw()[0])
        if not others:
            return None
        return (f"the calibration holds null samples for score version {', '.join(others)} "
                f"only (written by an earlier tracemark); p-values of retrieval "
                f"{self.config.retrieval!r} need a new one: run `tracemark index calibrate "
                f"BACKGROUND_DIR --store {self.index.path}`")

    # --- registering -------------------------------------------------------------------

    def _reference(self, image: Any, *, source: str | None, owner: str | None, license: str | None,
                   notes: str | None) -> tuple[NewReference, Words]:
        return new_reference(image, max_features=self.config.max_features, source=source,
                             owner=owner, license=license, notes=notes)

    def _post(self, words: Sequence[Words], results: Sequence[AddResult]) -> None:
        """Post newly added references in the loaded inverted file (if loaded)."""
        if self._ivf is None:
            return
        for w, res in zip(words, results, strict=True):
            if res.added:
                self._ivf.add(res.id, w)
                self._ivf_unsaved = True

    def add(self, image: Any, *, source: str | None = None, owner: str | None = None,
            license: str | None = None, notes: str | None = None) -> AddResult:
        """Register one image; a second add of the same content returns ``duplicate_of``."""
        if source is None and isinstance(image, str | Path):
            source = str(image)
        ref, words = self._reference(image, source=source, owner=owner, license=license,
                                     notes=notes)
        with self._mutex:
            result = self.index.add_many([ref])
            self._post([words], result)
        return result[0]

    def add_many(self, items: Iterable[tuple[Any, Mapping[str, str | None]]]) -> list[AddResult | TracemarkError]:
        """Register a batch: one transaction for the good items; a bad item is returned as its
        typed error in its slot and the rest are added."""
        refs: list[NewReference] = []
        posted: list[Words] = []
        slots: list[int] = []
        out: list[AddResult | TracemarkError] = []
        for i, (image, meta) in enumerate(items):
            try:
                ref, words = self._reference(image, source=meta.get("source"),
                                             owner=meta.get("owner"), license=meta.get("license"),
                                             notes=meta.get("notes"))
                refs.append(ref)
                posted.append(words)
                slots.append(i)
                out.append(None)  # type: ignore[arg-type]
            except TracemarkError as exc:
                out.append(exc)
        with self._mutex:
            results = self.index.add_many(refs)
            self._post(posted, results)
        for slot, res in zip(slots, results, strict=True):
            out[slot] = res
        return out

    def add_described(self, items: Sequence[tuple[NewReference, Words]]) -> list[AddResult]:
        """Register references already described by :func:`new_reference` (elsewhere: a
        batch job describes images on other processes or machines, and one writer adds
        them here): one result per item, in order; a content hash already in the index
        gives ``duplicate_of`` and stores nothing. Uncommitted until :meth:`commit`.

        The descriptors must come from :func:`new_reference` with this index's
        ``MatchConfig.max_features`` for searches to verify them as they would an
        :meth:`add`. Raises the store's :class:`~tracemark.errors.IndexStoreError`
        subclasses (a read-only or closed index; a vector of the wrong shape)."""
        refs = [ref for ref, _ in items]
        with self._mutex:
            self._check_open()
            results = self.index.add_many(refs)
            self._post([w for _, w in items], results)
        return results

    def preview(self, ref_id: int) -> bytes | None:
        """The reference's preview: JPEG bytes (:func:`~tracemark.copydetect.describe.
        reference_preview`: long side at most
        :data:`~tracemark.copydetect.describe.PREVIEW_MAX_SIDE` px), kept in the index's
        database with the reference (so every process sharing the database sees it, and
        :meth:`remove` removes it); None for a reference added before previews were kept.
        Raises :class:`~tracemark.errors.ReferenceNotFoundError` for an unknown id."""
        return self.index.blob(ref_id, PREVIEW_BLOB)

    def remove(self, ref_id: int) -> bool:
        with self._mutex:
            removed = self.index.remove(ref_id)
            if removed and self._ivf is not None:
                self._ivf.remove(ref_id)
                self._ivf_unsaved = True
            return removed

    # --- the inverted file ---------------------------------------------------------------

    def _ivf_path(self) -> Path:
        return Path(self.index.path) / "vectors" / IVF_FILE

    def inverted_file(self) -> InvertedFile:
        """The inverted file over every reference's visual words (v2 retrieval), loaded from
        its cache file when that holds exactly the references of the database, else built
        from the database's ``words`` blobs (and, for references added by a version before
        the inverted file, from their stored SIFT features: the index is migrated in place
        when writable, in memory when read-only)."""
        with self._mutex:
            self._check_open()
            if self._ivf is None:
                self._ivf_seq = self.index.last_change() if self.index.shared else 0
                self._ivf = self._load_ivf()
            if self.index.shared:
                self._follow_changes(self._ivf)
            return self._ivf

    def _derive_words(self, ref_ids: Sequence[int]) -> list[tuple[int, Words]]:
        """The words of ``ref_ids`` derived from their SIFT blobs (how an index of the
        previous version is migrated, and how an unreadable ``words`` blob is repaired),
        written as their ``words`` blobs when the handle is writable (in the open
        transaction). A reference whose SIFT blob cannot be read either is left out: it is
        not retrieved by the inverted file, and verification skips it (listed by
        :meth:`damaged_references`)."""
        out = []
        for rid, data in self.index.iter_blobs("local", ref_ids):
            try:
                words = reference_words(local.LocalFeatures.from_bytes(data))
            except FingerprintError:
                continue
            if not self.index.read_only:
                self.index.put_blob(rid, WORDS_BLOB, words.to_bytes())
            out.append((rid, words))
        return out

    def _read_words(self, ref_ids: Sequence[int] | None = None) -> list[tuple[int, Words]]:
        """``(ref_id, Words)`` of the ``words`` blobs (all, or those of ``ref_ids``); a blob
        that cannot be read is derived again (:meth:`_derive_words`)."""
        items, unreadable = [], []
        for rid, data in self.index.iter_blobs(WORDS_BLOB, ref_ids):
            try:
                items.append((rid, Words.from_bytes(data)))
            except WordsError:
                unreadable.append(rid)
        return items + self._derive_words(unreadable) if unreadable else items

    def _load_ivf(self) -> InvertedFile:
        ids = self.index.blob_ids(WORDS_BLOB)
        have = set(ids.tolist())
        # references added before the inverted file existed have SIFT blobs but no words:
        # migrated in place (in the open transaction: durable with the next commit, undone
        # by a rollback) when writable, derived in memory when read-only
        legacy = [i for i in self.index.blob_ids("local").tolist() if i not in have]
        if legacy and not self.index.read_only:
            self._derive_words(legacy)
            legacy, ids = [], self.index.blob_ids(WORDS_BLOB)
        if not legacy:
            cached = InvertedFile.load(self._ivf_path(), ids_fingerprint(ids))
            if cached is not None:
                return cached
        items = self._read_words() + self._derive_words(legacy)
        ivf = InvertedFile.build(items)
        if not self.index.read_only and not legacy:
            self._ivf_unsaved = not self._save_ivf(ivf)
        return ivf

    def _save_ivf(self, ivf: InvertedFile) -> bool:
        """Write the cache file when it can describe committed references only: never from a
        read-only handle, nor while writes are uncommitted (a rolled-back or crashed
        transaction gives its ids to other images later, and a cache naming the same ids
        would then be trusted). The cache is a cache: a failed write (a full disk, a folder
        in its place) is skipped; the next open rebuilds it. True when written."""
        if self.index.read_only or self.index.in_transaction:
            return False
        try:
            ivf.save(self._ivf_path())
        except OSError:
            return False
        return True

    def _follow_changes(self, ivf: InvertedFile) -> None:
        """Apply the adds and removals other processes committed since the last look (a
        shared index: replicas on PostgreSQL and Milvus); one indexed query when nothing
        changed."""
        new = self.index.changes(self._ivf_seq)
        if not new:
            return
        self._ivf_seq = new[-1][0]
        final: dict[int, str] = {}
        for _, rid, op in new:
            final[rid] = op
        for rid, op in final.items():
            if op == "remove":
                ivf.remove(rid)
        added = sorted(rid for rid, op in final.items() if op == "add" and rid not in ivf)
        for rid, words in self._read_words(added):
            ivf.add(rid, words)

    def _sync_ivf(self, ivf: InvertedFile) -> None:
        """Bring a loaded inverted file to the database's references (after refresh)."""
        stored = set(self.index.blob_ids(WORDS_BLOB).tolist())
        held = set(ivf.ref_ids.tolist())
        for rid in held - stored:
            ivf.remove(rid)
        for rid, words in self._read_words(sorted(stored - held)):
            ivf.add(rid, words)

    def commit(self, *, write_vectors: bool = True) -> None:
        """Commit (see :meth:`tracemark.index.Index.commit` for ``write_vectors``)."""
        with self._mutex:
            self._check_open()
            self._check_commit()
            self._commit(write_vectors=write_vectors)

    # --- searching -------------------------------------------------------------------

    def _query(self, image: Any) -> QueryDescriptors:
        return describe_query(image, max_features=self.config.max_features)

    def search(self, image: Any, *, k: int = 5) -> list[Match]:
        """Ranked matches (best first, at most ``k``) of one query image.

        With ``MatchConfig.early_stop`` (v2, default) a copy verified beyond doubt ends the
        verification of the candidates voting far below it: those are not listed, so fewer
        than ``k`` matches may come back although more references were retrieved.

        The query is described first, whatever the index holds, so that an image the
        pipeline cannot describe raises its typed error (a 1x1 image:
        :class:`~tracemark.errors.ImageTooSmallError`, PDQ's 5 px minimum) on an empty
        index too, not only once references exist."""
        q = self._query(image)
        if len(self.index) == 0:
            return []
        return self._search(q, k=k)

    def describe_query(self, image: Any) -> QueryDescriptors:
        """What :meth:`search` computes of a query before it looks at the index
        (:func:`tracemark.copydetect.describe.describe_query` with this index's
        ``max_features``): a batch job computes it on other processes or machines and
        hands it to :meth:`search_described`. Raises the loader's typed errors."""
        return self._query(image)

    def search_described(self, q: QueryDescriptors, *, k: int = 5) -> list[Match]:
        """:meth:`search` of a query already described (:meth:`describe_query`, or
        :func:`~tracemark.copydetect.describe.describe_query` with the same
        ``max_features``): the same matches."""
        if len(self.index) == 0:
            return []
        return self._search(q, k=k)

    def _search(self, q: QueryDescriptors, *, k: int) -> list[Match]:
        return self._search_with(q, k=k, cfg=self.config, model=self._model)

    def _search_with(self, q: QueryDescriptors, *, k: int, cfg: MatchConfig,
                     model: NullModel | None) -> list[Match]:
        """Search with the given settings and null model (calibration searches with the
        version it calibrates and a background-only model)."""
        v2 = cfg.retrieval == "v2"
        words_hits: list[int] = []  # the inverted file's candidates, best vote first
        votes: dict[int, float] = {}  # their votes
        mirrored_vote: dict[int, bool] = {}  # whether the mirrored query gave the vote
        if v2 and q.words is not None:
            try:
                ivf = self.inverted_file()
            except WordsError as exc:
                raise TracemarkError(f"the inverted file cannot be built: {exc}",
                                     source=str(self.index.path)) from exc
            oriented = ivf.search_oriented(q.words, mirror=q.words_mirror, top=cfg.candidates)
            words_hits = [r for r, _, _ in oriented]
            votes = {r: v for r, v, _ in oriented}
            mirrored_vote = {r: f for r, _, f in oriented}
        n_global = cfg.global_candidates if v2 else cfg.candidates
        sims: dict[int, float] = {}
        if self.index.vector_specs["vlad"].index == "none":
            if not v2:
                raise ConfigError("retrieval 'v1' searches the VLAD rows, which this index keeps "
                                  "unsearchable (global_index='none'): use retrieval 'v2'",
                                  source=str(self.index.path))
            n_global = 0
        for row_hits in (self.index.search("vlad", q.vlad, n_global) if n_global > 0 else []):
            for hit in row_hits:
                sims[hit.ref_id] = max(sims.get(hit.ref_id, -1.0), float(hit.score))
        pdq_d: dict[int, int] = {}
        for row_hits in self.index.search("pdq", q.pdq8, 3):
            for hit in row_hits:
                if hit.score <= cfg.pdq_max_distance:
                    pdq_d[hit.ref_id] = min(pdq_d.get(hit.ref_id, 257), int(hit.score))
        ranked = sorted(sims, key=lambda r: -sims[r])[: n_global if n_global > 0 else 0]
        by_pdq = sorted(pdq_d, key=lambda r: (pdq_d[r], r))
        candidates = list(dict.fromkeys(
            [*words_hits, *by_pdq, *ranked] if v2 else [*ranked, *by_pdq]))
        bg = model.background_level(q.vlad, cfg.background_k) if model is not None else 0.0
        rule = cfg.rule
        out: list[Match] = []
        sure_vote: float | None = None  # the vote of a candidate verified beyond doubt
        for ref_id in candidates:
            if sure_vote is not None and ref_id not in pdq_d \
                    and votes.get(ref_id, 0.0) < sure_vote * cfg.stop_vote_share:
                continue  # early stop (MatchConfig.early_stop)
            try:
                ref = self.index.get(ref_id)
                blob = self.index.blob(ref_id, "local")
            except ReferenceNotFoundError:
                continue  # removed by another handle since this one's last refresh()
            if blob is None:
                continue
            try:
                ref_feats = local.LocalFeatures.from_bytes(blob)
            except FingerprintError as exc:
                # one damaged reference must not take every query down: skip it, and say
                # so in damaged_references() / stats()
                self._damaged[ref_id] = (
                    f"reference {ref_id}'s stored local features cannot be read ({exc.message}): "
                    f"remove it (`tracemark index remove {ref_id} --store {self.index.path}`) "
                    "and add its image again")
                continue
            # the inverted file says which side voted: an unmirrored winner is verified
            # unmirrored only (half the matching); others try both sides
            v = local.verify(q.features, ref_feats,
                             flips=mirrored_vote.get(ref_id, True) or ref_id in pdq_d)
            sim = sims.get(ref_id)
            if sim is None:
                vec = self._vectors_if_kept(ref_id, "vlad")
                sim = float(np.max(q.vlad @ vec.T)) if vec is not None else 0.0
            if v2 and ref_id not in pdq_d:
                rows = self._vectors_if_kept(ref_id, "pdq")
                if rows is not None:
                    pdq_d[ref_id] = int(np.bitwise_count(q.pdq8[:, None, :] ^ rows[None, :, :])
                                        .sum(axis=2).min())
            d = pdq_d.get(ref_id) if v2 else None
            raw = raw_score(v.inliers, sim, bg, d)
            p = model.p_value(raw) if model is not None else None
            decision = rule.decide(p_value=p, inliers=int(v.inliers),
                                   pdq_distance=d if q.pdq_quality >= PDQ_MIN_QUALITY else None)
            score = rule.score(p_value=p, raw=raw)
            if v2 and cfg.early_stop and decision and v.inliers >= cfg.sure_inliers \
                    and ref_id in votes:
                sure_vote = max(sure_vote or 0.0, votes[ref_id])
            out.append(Match(
                ref_id=ref_id, source=ref.source, score=score, p_value=p, raw_score=raw,
                inliers=int(v.inliers), similarity=sim, pdq_distance=pdq_d.get(ref_id),
                region=None if v.region is None else np.round(v.region, 1).tolist(),
                query_region=None if v.query_region is None else np.round(v.query_region, 1).tolist(),
                flipped=bool(v.flipped), decision=bool(decision),
                transform=None if v.alignment is None else np.asarray(v.alignment).tolist(),
                reference_size=[int(ref_feats.width), int(ref_feats.height)],
            ))
        out.sort(key=lambda m: (-m.raw_score, m.ref_id))
        return out[:k]

    def _vectors_if_kept(self, ref_id: int, name: str) -> np.ndarray | None:
        """A candidate's stored rows, or None when another handle removed it meanwhile."""
        try:
            return self.index.vectors(ref_id, name)
        except ReferenceNotFoundError:
            return None

    def search_many(self, images: Sequence[Any], *, k: int = 5) -> list[QueryResult]:
        """Search a batch; a bad query gets its typed error and the batch carries on."""
        results = []
        for image in images:
            name = str(image) if isinstance(image, str | Path) else "<image>"
            t0 = time.perf_counter()
            try:
                res = QueryResult(name, self.search(image, k=k))
            except TracemarkError as exc:
                error = exc.to_dict()
                error["source"] = error.get("source") or name  # errors raised on pixels have none
                res = QueryResult(name, error=error)
            res.seconds = time.perf_counter() - t0
            results.append(res)
        return results

    # --- calibration -----------------------------------------------------------------

    def calibrate(self, background: Sequence[Any], *, retrieval: str | None = None) -> dict[str, Any]:
        """Learn the background from images known not to be in the collection.

        Their descriptors become the normalisation set; each is then searched like a query
        and its best raw score is one sample of the null distribution (half the images give
        the normalisation set, the other half the null samples, so a sample is never
        normalised against itself). Saved with the index metadata (the document
        :data:`CALIBRATION_DOC`, committed at once, with any other pending write of this
        handle), one null sample per score version: ``retrieval`` (``"v1"`` or ``"v2"``; default this handle's)
        says which version to calibrate; the other version's sample is kept when the
        background is the same images, dropped otherwise.
        """
        cfg = self.config if retrieval is None else replace(self.config, retrieval=retrieval)
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
        background = np.vstack(descs).astype(np.float32) if descs else None
        version = cfg.retrieval
        normalise = NullModel(background, None, version)  # s_norm only: no p-values yet
        null = []
        for q in queries:
            matches = self._search_with(q, k=1, cfg=cfg, model=normalise)
            null.append(matches[0].raw_score if matches else 0.0)
        learnt = NullModel(background, np.array(null, np.float64), version)
        try:
            previous = self._calibration_raw()[0]
        except ConfigError:
            previous = None  # an unreadable calibration is replaced
        self.index.put_document(CALIBRATION_DOC, learnt.encode(previous))
        self.commit()
        # this handle decides with its own version's sample (another version's may have
        # been dropped by a new background)
        self._model = (learnt if version == self.config.retrieval
                       else self._load_model(self.config.retrieval))
        return learnt.summary()

    def threshold_for_alpha(self, alpha: float) -> float | None:
        """The raw score at which the p-value falls to ``alpha`` (None when uncalibrated)."""
        return None if self._model is None else self._model.threshold_for_alpha(alpha)

    def _calibration_raw(self) -> tuple[bytes | None, str, str]:
        """The calibration archive (the index document, else a format-1 index's file), where
        it was read from, and how to replace it."""
        fix = (f"run `tracemark index calibrate BACKGROUND_DIR --store {self.index.path}` to "
               "write a new one")
        raw = self.index.document(CALIBRATION_DOC)
        if raw is not None:
            return raw, f"the calibration of {self.index.path}", fix
        legacy = Path(self.index.path) / CALIBRATION_FILE
        try:
            return legacy.read_bytes(), str(legacy), f"remove it and {fix}"
        except FileNotFoundError:
            return None, str(legacy), fix
        except OSError as exc:
            raise ConfigError(f"{legacy}: unreadable calibration file ({exc}): remove it "
                              f"and {fix}") from exc

    def _adopt_legacy_calibration(self) -> None:
        """Copy a format-1 index's readable :data:`CALIBRATION_FILE` into the index document
        :data:`CALIBRATION_DOC` (committed at once) when the index is opened for writing
        and has none, so that the calibration lives with the metadata: every process on a
        shared database (replicas) then reads the same one. The file is left in place
        (the document wins from now on)."""
        if self.index.read_only or self.index.in_transaction \
                or self.index.document(CALIBRATION_DOC) is not None:
            return
        raw, where, _fix = self._calibration_raw()
        if raw is None or where != str(Path(self.index.path) / CALIBRATION_FILE):
            return
        self.index.put_document(CALIBRATION_DOC, raw)
        self.index.commit(write_vectors=False)

    def _load_model(self, score_version: str) -> NullModel | None:
        raw, where, fix = self._calibration_raw()
        return NullModel.decode(raw, score_version, where=where, fix=fix)

    def stats(self) -> dict[str, Any]:
        s = dict(self.index.stats())
        calibrated = self._model is not None and self._model.calibrated
        s["calibrated"] = calibrated
        s["calibration"] = ({"null_samples": int(self._model.null.size)}  # type: ignore[union-attr]
                            if calibrated else None)
        note = self.calibration_note()
        if note is not None:
            s["recalibrate"] = note
        s["retrieval"] = self.config.retrieval
        if self._damaged:
            s["damaged_references"] = {str(k): v for k, v in sorted(self._damaged.items())}
        return s

    def damaged_references(self) -> dict[int, str]:
        """References this handle met whose stored features cannot be read: ``{ref_id:
        message}`` (the message names the command that removes it). Searches skip them
        instead of failing; they are found when a query's candidates include them."""
        return dict(self._damaged)
