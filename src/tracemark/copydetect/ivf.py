"""An inverted file over visual words with Hamming embedding and weak geometric consistency.

The retrieval stage of copy detection v2 (H. Jégou, M. Douze and C. Schmid, "Hamming
embedding and weak geometric consistency for large scale image search", ECCV 2008; and
"On the burstiness of visual elements", CVPR 2009, for the weighting). Every reference's
features (:class:`tracemark.fingerprint.words.Words`) are posted under their word; a query
feature votes for the references posted under its word whose signature lies within
``max_distance`` bits of its own, with weight ``idf(word)^2 * exp(-d^2 / sigma^2)``. Weak
geometric consistency: the votes of a reference are histogrammed by orientation
difference (16 bins) and by scale ratio (31 half-octave bins); its score is the smaller of
the two histograms' peaks, so a reference whose matches do not agree on one rotation and
one zoom scores low (a copy's true matches do agree). The query's mirrored features are
voted separately and each reference keeps its better score (flipped copies).

Memory: 9 bytes per posting (reference id uint32, signature uint32, geometry uint8) plus
8 bytes per word; a million references of 200 features take 1.8 GB. Voting touches only
the postings of the query's words: with 65,536 words and 200 features a reference, about
3,000 postings per word at a million references.

:class:`InvertedFile` is an in-memory structure built from ``(ref_id, Words)`` pairs; new
references go to a small pending part (searched too) merged into the main arrays when it
grows; removed references are filtered out until the next rebuild. :meth:`save` and
:meth:`load` keep it in one file, checked against a fingerprint of the reference ids it
holds (the caller rebuilds from its source of truth when they disagree), its exact size
and a CRC-32 of its arrays: a truncated, damaged or foreign file is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from tracemark.errors import ConfigError
from tracemark.fingerprint.words import ANGLE_BINS, N_WORDS, SCALE_BINS, Words

__all__ = ["InvertedFile", "VoteConfig", "ids_fingerprint"]

_MAGIC: Final = b"TMIVF002"  # 002: CRC-32 of the arrays in the metadata
_HEADER: Final = struct.Struct("<8sQQQ")  # magic, n_refs, n_postings, json length
_MERGE_SHARE: Final = 0.05  # merge pending postings into the main arrays beyond this share
_MERGE_MIN: Final = 200_000
_SHORTLIST: Final = 2000  # references whose votes are histogrammed for consistency
_STOP_FLOOR: Final = 1000  # never call a word a stop word below this many postings


@dataclass(frozen=True)
class VoteConfig:
    """Voting parameters (after Jégou et al. 2008/2009, rescaled to 32-bit codes)."""

    max_distance: int = 8
    """Hamming threshold on the 32-bit signatures (Jégou et al.: 24 of 64 bits). 8 to 10
    find the same share of true references at 100k references (0.87,
    ``bench_words_scale.py``), 11 and 12 fewer at rank 1; 8 is the fastest (4.4 ms)."""
    sigma: float = 5.0
    """Width of the Gaussian weight on the Hamming distance, in bits."""
    stop_share: float = 0.002
    """Words holding more than this share of all postings (and over 20 x the mean, and over
    1,000 postings) are skipped: they carry almost no information and dominate the cost."""

    clear_ratio: float = 4.0
    """The mirrored query is not voted when the unmirrored one's best score is at least
    this many times the second best (a clear winner: the copy is not flipped); 0 always
    votes both."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= 32 or self.sigma <= 0 or not 0 < self.stop_share <= 1 \
                or self.clear_ratio < 0:
            raise ConfigError(f"invalid vote configuration: {self}")


def _check_ref_id(ref_id: object) -> int:
    if isinstance(ref_id, bool) or not isinstance(ref_id, int | np.integer) \
            or not 0 <= int(ref_id) < 2**32:
        raise ConfigError(f"reference id must be an int in [0, 2**32), got {ref_id!r}")
    return int(ref_id)


def _part_of(items: list[tuple[int, Words]]) -> _Part:
    """Postings of ``(ref_id, words)`` pairs, sorted by word."""
    if not items:
        return _Part.empty()
    for rid, _ in items:
        _check_ref_id(rid)
    words = np.concatenate([w.words for _, w in items])
    refs = np.concatenate([np.full(len(w), rid, np.uint32) for rid, w in items])
    sigs = np.concatenate([w.signatures for _, w in items])
    geom = np.concatenate([w.geometry for _, w in items])
    return _Part.build(words, refs, sigs, geom)


def _clear_winner(best: dict[int, float], removed: set[int], ratio: float) -> bool:
    """Whether the best score is at least ``ratio`` times the second (removed ids aside)."""
    if ratio <= 0 or not best:
        return False
    top = sorted((s for r, s in best.items() if r not in removed), reverse=True)[:2]
    if not top:
        return False
    return len(top) == 1 or top[0] >= ratio * top[1]


def ids_fingerprint(ref_ids: np.ndarray) -> str:
    """SHA-256 of the sorted reference ids (int64): what a saved inverted file holds."""
    ids = np.sort(np.asarray(ref_ids, np.int64))
    return hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()


class _Part:
    """Postings sorted by word: ``offsets`` (N_WORDS + 1,) int64 into ``refs`` (uint32),
    ``sigs`` (uint32), ``geom`` (uint8)."""

    __slots__ = ("offsets", "refs", "sigs", "geom")

    def __init__(self, offsets: np.ndarray, refs: np.ndarray, sigs: np.ndarray, geom: np.ndarray):
        self.offsets, self.refs, self.sigs, self.geom = offsets, refs, sigs, geom

    @classmethod
    def build(cls, words: np.ndarray, refs: np.ndarray, sigs: np.ndarray, geom: np.ndarray) -> _Part:
        order = np.argsort(words, kind="stable")  # radix sort for uint16
        counts = np.bincount(words, minlength=N_WORDS)
        offsets = np.zeros(N_WORDS + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, refs[order], sigs[order], geom[order])

    @classmethod
    def empty(cls) -> _Part:
        return cls(np.zeros(N_WORDS + 1, np.int64), np.empty(0, np.uint32),
                   np.empty(0, np.uint32), np.empty(0, np.uint8))

    def __len__(self) -> int:
        return int(self.refs.shape[0])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class InvertedFile:
    """Postings of every reference's words; see the module docstring.

    Not thread-safe by itself: the owner (:class:`tracemark.copydetect.CopyIndex`) holds
    its lock around calls.
    """

    def __init__(self) -> None:
        self._main = _Part.empty()
        self._pending: list[tuple[int, Words]] = []
        self._pending_part: _Part | None = None
        self._removed: set[int] = set()
        self._features: dict[int, int] = {}

    # --- building ----------------------------------------------------------------------

    @classmethod
    def build(cls, items: Iterable[tuple[int, Words]]) -> InvertedFile:
        """An inverted file over ``(ref_id, words)`` pairs (ids are uint32-sized ints)."""
        ivf = cls()
        items = list(items)
        ivf._main = _part_of(items)
        ivf._features = {int(rid): len(w) for rid, w in items}
        return ivf

    @classmethod
    def from_postings(cls, ref_ids: np.ndarray, words: np.ndarray, signatures: np.ndarray,
                      geometry: np.ndarray) -> InvertedFile:
        """An inverted file from flat posting arrays (for bulk builds): ``ref_ids`` (P,)
        uint32, ``words`` (P,) uint16, ``signatures`` (P,) uint32, ``geometry`` (P,) uint8."""
        refs = np.asarray(ref_ids, np.uint32)
        ivf = cls()
        ivf._main = _Part.build(np.asarray(words, np.uint16), refs,
                                np.asarray(signatures, np.uint32), np.asarray(geometry, np.uint8))
        ids, counts = np.unique(refs, return_counts=True)
        ivf._features = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        return ivf

    def add(self, ref_id: int, words: Words) -> None:
        """Post one reference (searched at once; merged into the main arrays later)."""
        rid = _check_ref_id(ref_id)
        self._removed.discard(rid)
        self._pending.append((rid, words))
        self._features[rid] = len(words)
        self._pending_part = None
        if sum(len(w) for _, w in self._pending) > max(_MERGE_MIN, _MERGE_SHARE * len(self._main)):
            self.merge()

    def remove(self, ref_id: int) -> None:
        """Stop returning ``ref_id`` (its postings stay until the next :meth:`merge`)."""
        rid = int(ref_id)
        self._pending = [(r, w) for r, w in self._pending if r != rid]
        self._pending_part = None
        if rid in self._features:
            self._removed.add(rid)
            del self._features[rid]

    def merge(self) -> None:
        """Fold pending references into the main arrays and drop removed ones."""
        main = self._main
        extra = self._pending_part_now()
        keep = None
        if self._removed:
            removed = np.fromiter(self._removed, np.uint32)
            keep = ~np.isin(main.refs, removed)
        words = np.repeat(np.arange(N_WORDS, dtype=np.uint16), main.lengths())
        parts = [(words, main.refs, main.sigs, main.geom)]
        if keep is not None:
            parts = [(words[keep], main.refs[keep], main.sigs[keep], main.geom[keep])]
        if len(extra):
            parts.append((np.repeat(np.arange(N_WORDS, dtype=np.uint16), extra.lengths()),
                          extra.refs, extra.sigs, extra.geom))
        self._main = _Part.build(*(np.concatenate(x) for x in zip(*parts, strict=True)))
        self._pending, self._pending_part, self._removed = [], None, set()

    def _pending_part_now(self) -> _Part:
        if self._pending_part is None:
            self._pending_part = _part_of(self._pending)
        return self._pending_part
    # --- facts ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, ref_id: object) -> bool:
        return ref_id in self._features

    @property
    def ref_ids(self) -> np.ndarray:
        """The reference ids held (sorted int64)."""
        return np.array(sorted(self._features), np.int64)

    @property
    def n_postings(self) -> int:
        return len(self._main) + sum(len(w) for _, w in self._pending)

    def nbytes(self) -> int:
        """Bytes of the arrays held in memory."""
        parts = [self._main] + ([self._pending_part] if self._pending_part is not None else [])
        return sum(p.offsets.nbytes + p.refs.nbytes + p.sigs.nbytes + p.geom.nbytes for p in parts)

    # --- searching ---------------------------------------------------------------------------

    def search(self, query: Words, *, mirror: Words | None = None, top: int = 25,
               config: VoteConfig | None = None) -> list[tuple[int, float]]:
        """The ``top`` references by vote score, best first: ``[(ref_id, score), ...]``.

        ``query``: the query's :class:`Words`; ``mirror``: those of the mirrored query
        (scored separately; a reference keeps its better score). Scores are >= 0, in units
        of ``idf^2``; references without a consistent vote are not returned.
        """
        return [(r, s) for r, s, _ in self.search_oriented(query, mirror=mirror, top=top,
                                                            config=config)]

    def search_oriented(self, query: Words, *, mirror: Words | None = None, top: int = 25,
                        config: VoteConfig | None = None) -> list[tuple[int, float, bool]]:
        """As :meth:`search`, each hit with whether its best vote came from the mirrored
        query: ``[(ref_id, score, mirrored), ...]`` (verification then knows the side)."""
        cfg = config or VoteConfig()
        if len(self._features) == 0:
            return []
        best: dict[int, tuple[float, bool]] = {}
        for q in (query, mirror):
            if q is None or len(q) == 0:
                continue
            if q is mirror and _clear_winner({r: v[0] for r, v in best.items()},
                                             self._removed, cfg.clear_ratio):
                break  # the unmirrored query already singles out one reference
            ids, scores = self._vote(q, cfg)
            flipped = q is mirror
            for rid, s in zip(ids.tolist(), scores.tolist(), strict=True):
                if s > best.get(rid, (0.0, False))[0]:
                    best[rid] = (s, flipped)
        for rid in self._removed:
            best.pop(rid, None)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [(r, s, f) for r, (s, f) in ranked[:top]]

    def _vote(self, q: Words, cfg: VoteConfig) -> tuple[np.ndarray, np.ndarray]:
        total = self.n_postings
        parts = [self._main]
        if self._pending:
            parts.append(self._pending_part_now())
        lengths_all = sum(p.lengths() for p in parts)
        stop = max(cfg.stop_share * total, 20.0 * total / N_WORDS, _STOP_FLOOR)
        qw = q.words.astype(np.int64)
        df = lengths_all[qw].astype(np.float64)
        usable = (df > 0) & (df <= stop)
        idf = np.log(np.maximum(1.0, total / np.maximum(df, 1.0)) + 1.0)
        out_refs, out_w, out_key_a, out_key_s = [], [], [], []
        for part in parts:
            starts = part.offsets[qw[usable]]
            lens = part.offsets[qw[usable] + 1] - starts
            n = int(lens.sum())
            if n == 0:
                continue
            qi = np.repeat(np.flatnonzero(usable), lens)
            base = np.repeat(starts - (np.cumsum(lens) - lens), lens)
            idx = base + np.arange(n, dtype=np.int64)
            d = np.bitwise_count(part.sigs[idx] ^ q.signatures[qi])
            hit = d <= cfg.max_distance
            if not hit.any():
                continue
            idx, qi, d = idx[hit], qi[hit], d[hit].astype(np.float64)
            out_refs.append(part.refs[idx])
            out_w.append(idf[qi] ** 2 * np.exp(-(d * d) / (cfg.sigma**2)))
            rg, qg = part.geom[idx].astype(np.int64), q.geometry[qi].astype(np.int64)
            out_key_a.append(((rg >> 4) - (qg >> 4)) % ANGLE_BINS)
            out_key_s.append((rg & 15) - (qg & 15) + SCALE_BINS - 1)
        if not out_refs:
            return np.empty(0, np.int64), np.empty(0)
        refs = np.concatenate(out_refs)
        w = np.concatenate(out_w)
        key_a, key_s = np.concatenate(out_key_a), np.concatenate(out_key_s)
        if len(refs) > _SHORTLIST:
            # only references whose total vote is among the _SHORTLIST best can win the
            # geometric-consistency score (it is at most the total): histogram those only
            total_vote = np.bincount(refs, weights=w)
            voted = total_vote[total_vote > 0]
            if len(voted) > _SHORTLIST:
                floor = np.partition(voted, -_SHORTLIST)[-_SHORTLIST]
                keep = total_vote[refs] >= floor
                refs, w, key_a, key_s = refs[keep], w[keep], key_a[keep], key_s[keep]
        uniq, inv = np.unique(refs, return_inverse=True)
        a = np.bincount(inv * ANGLE_BINS + key_a, weights=w,
                        minlength=len(uniq) * ANGLE_BINS).reshape(len(uniq), ANGLE_BINS)
        sb = 2 * SCALE_BINS - 1
        s = np.bincount(inv * sb + key_s, weights=w,
                        minlength=len(uniq) * sb).reshape(len(uniq), sb)
        # a true copy's matches spread over neighbouring bins: take the best pair of bins
        a_peak = (a + np.roll(a, 1, axis=1)).max(axis=1)
        s_peak = (s[:, 1:] + s[:, :-1]).max(axis=1)
        score = np.minimum(a_peak, s_peak)
        return uniq.astype(np.int64), score

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Merge, then write atomically (temp file, fsync, rename).

        Layout: header ``<8sQQQ`` (``b"TMIVF002"``, references R, postings P, metadata
        length M), M bytes of JSON metadata (``ids_sha256``: :func:`ids_fingerprint`;
        ``crc32``: of the arrays that follow), then little-endian arrays: ids (R,) int64,
        features (R,) uint32, offsets (N_WORDS + 1,) int64, refs (P,) uint32, sigs (P,)
        uint32, geometry (P,) uint8. Raises OSError when the file cannot be written."""
        if self._pending or self._removed:
            self.merge()
        ids = self.ref_ids
        m = self._main
        feats = np.array([self._features[int(r)] for r in ids], np.uint32)
        arrays = [np.ascontiguousarray(a) for a in (
            ids.astype("<i8"), feats.astype("<u4"), m.offsets.astype("<i8"), m.refs.astype("<u4"),
            m.sigs.astype("<u4"), m.geom.astype(np.uint8))]
        crc = 0
        for arr in arrays:
            crc = zlib.crc32(memoryview(arr).cast("B"), crc)
        meta = json.dumps({"ids_sha256": ids_fingerprint(ids), "crc32": crc}).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, len(ids), len(m), len(meta)))
                f.write(meta)
                for arr in arrays:
                    f.write(memoryview(arr).cast("B"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, expected_ids_sha256: str) -> InvertedFile | None:
        """Read a saved file; None when it is missing or unreadable, when its size, CRC or
        layout is not that of :meth:`save`, or when it does not hold exactly the references
        whose :func:`ids_fingerprint` is ``expected_ids_sha256``. Never raises for a bad
        file (the caller rebuilds from its source of truth)."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(_HEADER.size)
                if len(head) != _HEADER.size:
                    return None
                magic, n_refs, n_post, n_meta = _HEADER.unpack(head)
                body_size = 12 * n_refs + 8 * (N_WORDS + 1) + 9 * n_post
                if magic != _MAGIC or _HEADER.size + n_meta + body_size != size:
                    return None  # foreign, truncated or grown: sizes checked before any read
                meta = json.loads(f.read(n_meta))
                if not isinstance(meta, dict) or meta.get("ids_sha256") != expected_ids_sha256:
                    return None
                body = bytearray(body_size)  # writable arrays without a copy
                if f.readinto(body) != body_size:
                    return None
        except (OSError, ValueError):
            return None
        if zlib.crc32(body) != meta.get("crc32"):
            return None
        pos = 0

        def take(dtype: str, n: int) -> np.ndarray:
            nonlocal pos
            arr = np.frombuffer(body, dtype, n, pos)
            pos += arr.nbytes
            return arr

        ids, feats = take("<i8", n_refs), take("<u4", n_refs)
        offsets = take("<i8", N_WORDS + 1)
        refs, sigs, geom = take("<u4", n_post), take("<u4", n_post), take("u1", n_post)
        if offsets[0] != 0 or offsets[-1] != n_post or np.any(np.diff(offsets) < 0) \
                or ids_fingerprint(ids) != expected_ids_sha256:
            return None
        ivf = cls()
        ivf._main = _Part(offsets.astype(np.int64, copy=False), refs.astype(np.uint32, copy=False),
                          sigs.astype(np.uint32, copy=False), geom)
        ivf._features = dict(zip(ids.tolist(), feats.tolist(), strict=True))
        return ivf
