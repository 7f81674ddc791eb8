"""The vector-store seam: where an index's vector sets are searched.

The metadata database (SQLite or PostgreSQL) holds every row of every vector set and is the
source of truth. A :class:`VectorStore` holds the search structures built from those rows:

* ``faiss`` (default) -- FAISS indexes in memory, cached as files in the index directory
  (:mod:`tracemark.index._faiss`); one writer process.
* ``milvus://host:port`` -- a Milvus server or cluster (pymilvus, the ``milvus`` extra),
  one Milvus collection per vector set; any number of processes read and write it.

Rows are addressed by *labels*: ``label = ref_id << ROW_BITS | row`` (int64), so a label names
the reference and the row within it, in every store alike. An index opens its store with
:func:`open_vector_store` from a URL (``None`` or ``"faiss"``: FAISS in the directory).

A store is checked against the database when the index opens
(:meth:`VectorStore.labels` compared with the labels the database implies) and the sets that
disagree are rebuilt from the stored rows; so a crash between a database commit and the
store's write is repaired on the next open, whichever store it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

from tracemark.errors import ConfigError
from tracemark.index.model import VectorSpec

__all__ = ["VectorStore", "VectorStoreURL", "parse_vector_url", "open_vector_store",
           "register_vector_store", "ROW_BITS"]

ROW_BITS = 16
"""Bits of a label that number the row within its reference (``MAX_ROWS_PER_REFERENCE``)."""

RowSource = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
"""A callable that yields ``(labels, rows)`` chunks of one vector set from the database
(labels int64 ``(n,)``; rows uint8 ``(n, dim/8)`` or float32 ``(n, dim)``), by label."""


@dataclass(frozen=True)
class VectorStoreURL:
    """A parsed vector-store URL: ``scheme`` (``faiss`` or ``milvus``), and for a server,
    ``host``, ``port``, an optional ``token`` (``user:password`` or an API key) and
    ``database`` (Milvus database name, default ``default``)."""

    scheme: str
    host: str | None = None
    port: int | None = None
    token: str | None = None
    database: str | None = None

    @property
    def address(self) -> str:
        """``host:port``, an IPv6 host in brackets (``[::1]:19530``), as a URL writes it."""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted(self) -> str:
        """The URL without its credentials (for logs, stats and ``database.json``); it
        parses back to this URL less its token."""
        if self.scheme == "faiss":
            return "faiss"
        db = f"/{self.database}" if self.database else ""
        return f"{self.scheme}://{self.address}{db}"


def parse_vector_url(url: str | None) -> VectorStoreURL:
    """Parse ``None``/``"faiss"`` or ``milvus://[user:password@]host[:port][/database]``.

    Raises :class:`~tracemark.errors.ConfigError` for another scheme or a malformed URL.
    """
    if url is None or url in ("faiss", "faiss://", ""):
        return VectorStoreURL("faiss")
    if not isinstance(url, str):
        raise ConfigError(f"a vector-store URL must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _STORES or scheme == "faiss":
        known = ", ".join(sorted(_STORES))
        raise ConfigError(f"unknown vector store {url.split('://')[0]!r} in {url!r} "
                          f"(known: {known}; e.g. milvus://127.0.0.1:19530)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in vector-store URL {url!r}") from None
    if port == 0:
        raise ConfigError(f"bad port in vector-store URL {url!r} (0)")
    port = 19530 if port is None else port
    if not parts.hostname:
        raise ConfigError(f"no host in vector-store URL {url!r}")
    token = None
    if parts.username is not None:
        token = parts.username + (f":{parts.password}" if parts.password is not None else "")
    database = parts.path.strip("/") or None
    return VectorStoreURL(scheme, parts.hostname, port, token, database)


class VectorStore(ABC):
    """The search structures of one index's vector sets (the seam FAISS and Milvus implement).

    Every method takes the set's ``name``; :meth:`open_set` must have been called for it.
    Scores follow :class:`~tracemark.index.model.VectorSpec`: Hamming distance in bits for
    binary sets (lower is better), inner product for float sets (higher is better).
    """

    scheme: ClassVar[str]
    shared: ClassVar[bool] = False
    """True when several processes may write the store at once (no directory writer lock)."""

    @abstractmethod
    def open_set(self, name: str, spec: VectorSpec, rows: RowSource | None = None) -> None:
        """Make set ``name`` usable (create it, empty, when the store lacks it). ``rows``
        reads the set's rows from the database, for a store that rebuilds by itself (FAISS
        after removals from an HNSW set); a server store may ignore it. Stored-only sets
        (``spec.index == "none"``) are never given to a store."""

    @abstractmethod
    def drop_set(self, name: str) -> None:
        """Delete set ``name`` and its rows from the store (no error when it is absent)."""

    @abstractmethod
    def labels(self, name: str) -> np.ndarray:
        """Every label held in set ``name`` (int64, any order)."""

    @abstractmethod
    def add(self, name: str, labels: np.ndarray, rows: np.ndarray) -> None:
        """Add ``rows`` (``(n, width)``, see :data:`RowSource`) under ``labels`` (int64 ``(n,)``).
        A label already present is replaced."""

    @abstractmethod
    def remove(self, name: str, ref_ids: np.ndarray) -> None:
        """Remove every row of the references ``ref_ids`` (int64)."""

    @abstractmethod
    def search(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest rows per query: ``(scores, labels)``, both
        ``(len(queries), m)`` with ``m <= k`` (float32, int64), best first, padded with label
        -1 when fewer rows exist (a server store may cap ``k``: Milvus at 16,384)."""

    @abstractmethod
    def count(self, name: str) -> int:
        """Rows in set ``name``."""

    def rebuild(self, name: str, spec: VectorSpec, rows: RowSource) -> None:
        """Replace set ``name``'s contents by the rows ``rows()`` yields (default: drop,
        open, add chunk by chunk)."""
        self.drop_set(name)
        self.open_set(name, spec)
        for labels, chunk in rows():
            if len(labels):
                self.add(name, labels, chunk)

    def flush(self) -> None:  # noqa: B027 -- optional hook
        """Make the store's writes durable after the database committed (FAISS writes its
        files; a server store is durable on each call)."""

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Release connections and memory (idempotent)."""

    def set_stats(self, name: str) -> dict[str, Any]:
        """Figures for ``index stats``: at least ``rows``."""
        return {"rows": self.count(name)}


_STORES: dict[str, Callable[..., VectorStore] | None] = {"faiss": None, "milvus": None}


def register_vector_store(scheme: str, factory: Callable[..., VectorStore]) -> None:
    """Register ``factory(url: VectorStoreURL, *, namespace: str, path: Path)`` for URLs of
    ``scheme`` (the plugin seam; FAISS and Milvus are built in)."""
    _STORES[scheme] = factory


def open_vector_store(url: VectorStoreURL, *, namespace: str, path: Path) -> VectorStore:
    """The store for ``url``. ``namespace`` names this index's sets in a shared server (a
    Milvus collection is ``<namespace>_<set>``); ``path`` is the index directory.

    Raises :class:`~tracemark.errors.ConfigError` for an unknown scheme,
    :class:`~tracemark.errors.MissingExtraError` when its extra is not installed, and
    :class:`~tracemark.index.errors.IndexStoreError` when the server cannot be reached.
    """
    factory = _STORES.get(url.scheme)
    if factory is None:
        if url.scheme == "milvus":
            from tracemark.index._milvus import MilvusVectors

            factory = MilvusVectors
        elif url.scheme == "faiss":
            from tracemark.index._faiss import FaissVectors

            factory = FaissVectors
        else:
            raise ConfigError(f"unknown vector store {url.scheme!r}")
    return factory(url, namespace=namespace, path=path)
