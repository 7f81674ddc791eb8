"""Value types of the reference index: vector-set specs, references, hits, add results."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tracemark.errors import ConfigError

__all__ = ["VectorSpec", "NewReference", "Reference", "AddResult", "Hit", "MAX_ROWS_PER_REFERENCE"]

#: Rows one reference may hold in one vector set (FAISS ids are ``ref_id << 16 | row``).
MAX_ROWS_PER_REFERENCE = 1 << 16
#: Fewest rows an IVF set is trained on: 39 points per centroid of the 256-centroid PQ
#: codebooks (FAISS's guideline), rounded up; an ``ivf`` set with fewer rows is flat.
IVF_MIN_ROWS = 10_000

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_METRIC_OF_KIND = {"binary": "hamming", "float": "ip"}


def check_set_name(name: object) -> str:
    """Return ``name`` if it is a valid vector-set name (it becomes a file name), else raise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"a vector-set name must match {_NAME.pattern} (lower-case, digits, '_.-'), got {name!r}"
        )
    return name


@dataclass(frozen=True)
class VectorSpec:
    """The fixed shape of one vector set (one FAISS index per fingerprint name).

    ``kind="binary"``: rows are packed bits (``np.packbits``, MSB first), ``dim`` is the number
    of bits (a multiple of 8) and the metric is ``"hamming"``; a hit's score is the Hamming
    distance in bits (lower is better). ``kind="float"``: rows are float32 of length ``dim``,
    the metric is ``"ip"`` (inner product; L2-normalise the rows for cosine similarity); a hit's
    score is the inner product (higher is better).

    ``index="flat"`` (default) searches exactly. ``index="hnsw"`` uses an HNSW graph
    (``hnsw_m`` links per node, ``hnsw_ef_search`` candidates, raised to the number of rows a
    search asks for): approximate, for sets well beyond ~100k rows where flat search gets slow.
    Removing from an HNSW set rebuilds it. ``index="ivf"``: an inverted file (IVF-PQ for
    float sets: 8-bit codes of ``dim / 8`` sub-vectors, so 32 bytes a 256-D row instead of
    1 KB; IVF with exact Hamming distances for binary sets), trained on the stored rows
    (``nlist = 4 * sqrt(rows)`` lists, ``ivf_nprobe`` searched), retrained when the set
    has grown fourfold; below :data:`IVF_MIN_ROWS` rows it stays flat (too few rows to
    train). ``index="auto"``: flat up to ``auto_rows`` rows, IVF beyond -- for collections
    that start small and grow.
    ``index="none"`` keeps the rows in the database only (read per reference with
    :meth:`~tracemark.index.Index.vectors`; 8 bytes of memory a row): not searchable, for
    vectors a pipeline reads for its candidates but never searches (at a million references
    a flat set of six 256-D rows a reference would hold 6 GB in memory).
    """

    kind: Literal["binary", "float"]
    dim: int
    metric: Literal["hamming", "ip"] | None = None
    index: Literal["flat", "hnsw", "ivf", "auto", "none"] = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nprobe: int = 32
    auto_rows: int = 200_000

    def __post_init__(self) -> None:
        if self.kind not in _METRIC_OF_KIND:
            raise ConfigError(f"VectorSpec.kind must be 'binary' or 'float', got {self.kind!r}")
        expected = _METRIC_OF_KIND[self.kind]
        if self.metric is None:
            object.__setattr__(self, "metric", expected)
        elif self.metric != expected:
            raise ConfigError(
                f"a {self.kind} vector set uses metric {expected!r}, got {self.metric!r}"
            )
        if isinstance(self.dim, bool) or not isinstance(self.dim, int | np.integer):
            raise ConfigError(f"VectorSpec.dim must be an int, got {type(self.dim).__name__}")
        object.__setattr__(self, "dim", int(self.dim))
        if not 1 <= self.dim <= 65536:
            raise ConfigError(f"VectorSpec.dim must be in [1, 65536], got {self.dim}")
        if self.kind == "binary" and self.dim % 8:
            raise ConfigError(f"a binary vector set needs dim a multiple of 8 bits, got {self.dim}")
        if self.index not in ("flat", "hnsw", "ivf", "auto", "none"):
            raise ConfigError("VectorSpec.index must be 'flat', 'hnsw', 'ivf', 'auto' or "
                              f"'none', got {self.index!r}")
        if self.index in ("ivf", "auto") and self.kind == "float" and self.dim % 8:
            raise ConfigError(f"an IVF float set needs dim a multiple of 8 (PQ sub-vectors), "
                              f"got {self.dim}")
        value = self.auto_rows
        if isinstance(value, bool) or not isinstance(value, int) or value < IVF_MIN_ROWS:
            raise ConfigError(f"VectorSpec.auto_rows must be an int >= {IVF_MIN_ROWS}, "
                              f"got {value!r}")
        for attr, low in (("hnsw_m", 4), ("hnsw_ef_search", 1), ("ivf_nprobe", 1)):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 4096:
                raise ConfigError(
                    f"VectorSpec.{attr} must be an int in [{low}, 4096], got {value!r}"
                )

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row (``dim / 8`` for binary, ``4 * dim`` for float)."""
        return self.dim // 8 if self.kind == "binary" else 4 * self.dim

    @property
    def higher_is_better(self) -> bool:
        """True for similarities (``ip``), False for distances (``hamming``)."""
        return self.metric == "ip"

    def to_params(self) -> dict[str, Any]:
        """The index-structure parameters, as stored in the ``vector_sets.params`` JSON."""
        out: dict[str, Any] = {"hnsw_m": self.hnsw_m, "hnsw_ef_search": self.hnsw_ef_search}
        if self.index in ("ivf", "auto"):
            out.update(ivf_nprobe=self.ivf_nprobe, auto_rows=self.auto_rows)
        return out

    def ivf_from(self) -> int | None:
        """Rows from which the set is held as an inverted file (None: never)."""
        if self.index == "ivf":
            return IVF_MIN_ROWS
        return self.auto_rows if self.index == "auto" else None


@dataclass(frozen=True)
class NewReference:
    """One reference to add: its content hash, vectors per vector set, metadata and blobs.

    ``vectors[name]`` holds one row (1-D) or several rows (2-D, e.g. 8 PDQ orientations or
    several region descriptors) for the vector set ``name``; a set may be left out.
    """

    content_hash: str
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    source: str | None = None
    owner: str | None = None
    license: str | None = None
    notes: str | None = None
    blobs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """The stored metadata of one reference; ``added_at`` is UTC ISO 8601."""

    id: int
    content_hash: str
    source: str | None
    owner: str | None
    license: str | None
    notes: str | None
    added_at: str


@dataclass(frozen=True)
class AddResult:
    """The outcome of one add: the reference's id, and ``duplicate_of`` when nothing was added.

    When the content hash is already in the index, nothing is stored; ``id`` and
    ``duplicate_of`` are both the id of the existing reference.
    """

    id: int
    duplicate_of: int | None = None

    @property
    def added(self) -> bool:
        """True when a new reference was stored."""
        return self.duplicate_of is None


@dataclass(frozen=True)
class Hit:
    """One search result: the reference, its best row's score, and which of its rows matched.

    ``score`` is a Hamming distance in bits for binary sets (lower is better) and an inner
    product for float sets (higher is better).
    """

    ref_id: int
    score: float
    row: int = 0
