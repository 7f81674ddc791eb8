"""Copy detection: describe, retrieve, verify, calibrate, decide.

* :mod:`~tracemark.copydetect.describe` — the one recipe that describes references and
  queries (PDQ, VLAD regions, SIFT features) and the content hash;
* :mod:`~tracemark.copydetect.decide` — the null model learnt by calibration, the raw
  score and the one decision rule (p-value <= alpha, or inliers >= min_inliers);
* :mod:`~tracemark.copydetect.index` — :class:`CopyIndex`, a persistent collection of
  protected works (references) searched with query images;
* :mod:`~tracemark.copydetect.dedup` — near-duplicate groups within a folder or a
  collection (:class:`Deduper`, :func:`find_duplicates`), with this matcher.

See docs/copydetect.md.
"""

from tracemark.copydetect.decide import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_INLIERS,
    DecisionRule,
    NullModel,
    raw_score,
    recommended_background,
)
from tracemark.copydetect.dedup import (
    Deduper,
    DedupGroup,
    DedupItem,
    DedupMember,
    DedupPair,
    DedupReport,
    find_duplicates,
)
from tracemark.copydetect.describe import (
    QueryDescriptors,
    ReferenceDescriptors,
    content_hash,
    describe_query,
    describe_reference,
)
from tracemark.copydetect.index import CopyIndex, Match, MatchConfig, QueryResult

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_INLIERS",
    "CopyIndex",
    "DecisionRule",
    "DedupGroup",
    "DedupItem",
    "DedupMember",
    "DedupPair",
    "DedupReport",
    "Deduper",
    "Match",
    "MatchConfig",
    "NullModel",
    "recommended_background",
    "QueryDescriptors",
    "QueryResult",
    "ReferenceDescriptors",
    "content_hash",
    "describe_query",
    "describe_reference",
    "find_duplicates",
    "raw_score",
]
