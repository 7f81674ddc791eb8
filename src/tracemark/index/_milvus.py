"""Vector sets in a Milvus server or cluster (pymilvus, the ``milvus`` extra).

:class:`MilvusVectors` implements :class:`~tracemark.index.vectors.VectorStore` for URLs
``milvus://[user:password@]host[:port][/database]``: one Milvus collection per vector set,
shared by every process that opens the same index (``shared = True``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tracemark._optional import require
from tracemark.errors import IndexInputError, IndexStoreError, VectorStoreUnavailableError
from tracemark.index.model import VectorSpec
from tracemark.index.vectors import ROW_BITS, RowSource, VectorStore, VectorStoreURL

__all__ = ["MilvusVectors", "collection_name", "MAX_K"]

MAX_K = 16384
"""The most rows one Milvus search returns per query (Milvus' ``quotaAndLimits`` topk cap);
:meth:`MilvusVectors.search` asks for at most this many."""

_INSERT_BYTES = 16 << 20
"""Bytes of vectors per insert request: well under the proxy's default gRPC receive limit
(``proxy.grpc.serverMaxRecvSize``, 64 MiB) and pymilvus' send limit."""
_INSERT_ROWS = 50_000
_SEARCH_RESULTS = 1 << 20
"""Rows (queries x k) one search request may return (the result is ~16 bytes a row)."""
_SEARCH_QUERY_BYTES = 16 << 20
_ITER_BATCH = 16_384
_NAME_MAX = 255  # Milvus' collection-name limit (proxy.maxNameLength)
_HNSW_EF_CONSTRUCTION = 200
_IVF_NLIST = 1024
"""``nlist`` of an ``index="ivf"`` set (Milvus builds the lists per sealed segment)."""
_FIELDS = ("label", "ref_id", "vec")


def collection_name(namespace: str, name: str) -> str:
    """The Milvus collection of set ``name`` in ``namespace``: ``f"{namespace}_{name}"`` when
    that is a valid Milvus name (ASCII letters, digits and ``_``, not starting with a digit,
    at most 255 characters); otherwise every other character becomes ``_`` and the first 12
    hex digits of the SHA-1 of ``namespace + "\\0" + name`` are appended, so that distinct
    sets (``a.b`` and ``a-b``) never share a collection."""
    raw = f"{namespace}_{name}"
    clean = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if clean[:1].isdigit() or not clean:
        clean = "_" + clean
    if clean == raw and len(raw) <= _NAME_MAX:
        return raw
    digest = hashlib.sha1(f"{namespace}\0{name}".encode()).hexdigest()[:12]
    return f"{clean[: _NAME_MAX - 13]}_{digest}"


class _Set:
    __slots__ = ("spec", "collection", "cname")

    def __init__(self, spec: VectorSpec, collection: Any, cname: str) -> None:
        self.spec = spec
        self.collection = collection
        self.cname = cname


class MilvusVectors(VectorStore):
    """Vector sets as Milvus collections, through pymilvus' ORM on one connection.

    **Layout.** Set ``name`` of the index whose namespace is ``ns`` (``tm_<uid>``) is the
    collection :func:`collection_name` ``(ns, name)``, with the fields ``label`` (INT64,
    primary key, given by tracemark: ``ref_id << ROW_BITS | row``), ``ref_id`` (INT64, for
    removal by reference) and ``vec``: ``BINARY_VECTOR(dim)`` of packed bits (``np.packbits``
    MSB first, ``dim/8`` uint8 bytes a row) with metric ``HAMMING`` for binary sets, or
    ``FLOAT_VECTOR(dim)`` (float32) with metric ``IP`` for float sets. The index:
    ``BIN_FLAT`` / ``FLAT`` (exact) for ``index="flat"``; ``HNSW`` (``M = spec.hnsw_m``,
    ``efConstruction`` 200, search ``ef = max(spec.hnsw_ef_search, k)``) for ``index="hnsw"``,
    binary sets included (Milvus' knowhere has a binary HNSW with the Hamming metric);
    ``IVF_FLAT`` / ``BIN_IVF_FLAT`` (``nlist`` 1024, ``nprobe = spec.ivf_nprobe``) for
    ``index="ivf"``; ``index="auto"`` is exact, as flat (Milvus shards and indexes segments
    itself as a collection grows).
    Milvus indexes sealed segments; rows still in growing segments are searched exactly.

    **Stored-only sets** (``index="none"``) are never given to a vector store: the
    :class:`~tracemark.index.Index` keeps them in the database only and skips them when it
    compares stores with the database. Given one anyway, :meth:`open_set` raises
    :class:`~tracemark.errors.IndexInputError` (no collection is created for rows nobody
    searches).

    **Consistency.** Every collection is created, and every search, query and count is run,
    at consistency level ``Strong``: a write acknowledged to one process (another client,
    another machine) is seen by the next search of every other. Writes are durable when the
    call returns (Milvus' write-ahead log); :meth:`flush` has nothing to do.

    **Writes.** :meth:`add` is an upsert (a label already present is replaced, so a re-run
    after a crash is idempotent), sent in chunks of at most 16 MiB of vectors and 50,000 rows
    (under the proxy's 64 MiB gRPC limit). :meth:`remove` deletes ``ref_id in [...]``.
    :meth:`rebuild` drops and recreates the collection, then inserts chunk by chunk.

    **Searches** return at most ``MAX_K`` (16384, Milvus' topk cap) columns: ``k`` is clamped
    to it (the :class:`~tracemark.index.Index` never asks for more). Within a query's
    results, rows are ordered best score first and, among equal scores, by label; which of
    the rows tied with the last returned score make the cut is Milvus' choice.

    **Errors.** A server that cannot be reached (at connect, or later) raises
    :class:`~tracemark.errors.VectorStoreUnavailableError` naming the redacted URL; another
    server refusal raises :class:`~tracemark.errors.IndexStoreError` with Milvus' message;
    rows of the wrong shape or dtype raise :class:`~tracemark.errors.IndexInputError`; a
    missing pymilvus raises :class:`~tracemark.errors.MissingExtraError`. Every call is
    bounded by ``timeout`` seconds (pymilvus retries an unavailable server until then).

    ``url`` is a :class:`~tracemark.index.vectors.VectorStoreURL` (``scheme == "milvus"``),
    ``namespace`` the prefix of this index's collections, ``path`` the index directory
    (unused: nothing is kept beside the database). Thread-safe: pymilvus' channel is shared.
    """

    scheme: ClassVar[str] = "milvus"
    shared: ClassVar[bool] = True

    def __init__(self, url: VectorStoreURL, *, namespace: str, path: Path | None = None,
                 timeout: float = 60.0, connect_timeout: float = 10.0) -> None:
        pymilvus = require("pymilvus", "milvus", purpose="a milvus:// vector store")
        _quiet_iterator_warning()
        if not isinstance(url, VectorStoreURL) or url.scheme != self.scheme or not url.host:
            raise IndexInputError(f"MilvusVectors needs a milvus:// VectorStoreURL, got {url!r}")
        if not isinstance(namespace, str) or not namespace:
            raise IndexInputError(f"a vector-store namespace must be a non-empty str, "
                                  f"got {namespace!r}")
        self._pm = pymilvus
        self.url = url
        self.namespace = namespace
        self.path = path
        self.timeout = float(timeout)
        self._sets: dict[str, _Set] = {}
        self._lock = threading.RLock()
        self._alias: str | None = f"tracemark-{uuid.uuid4().hex}"
        self._closed = False
        kwargs: dict[str, Any] = {"uri": f"http://{url.address}",
                                  "timeout": float(connect_timeout)}
        if url.token:
            kwargs["token"] = url.token
        if url.database:
            kwargs["db_name"] = url.database
        with self._errors("connect"):
            pymilvus.connections.connect(alias=self._alias, **kwargs)

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str, name: str | None = None) -> Iterator[None]:
        """Turn pymilvus' and gRPC's exceptions into tracemark's typed errors."""
        try:
            yield
        except (IndexStoreError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 -- pymilvus raises many unrelated types
            where = f" (set {name!r})" if name is not None else ""
            message = getattr(exc, "message", None) or str(exc)
            code = getattr(exc, "code", None)
            if _unavailable(exc):
                raise VectorStoreUnavailableError(
                    f"Milvus {what}{where} failed: server unavailable: {message}",
                    source=self.url.redacted()) from None
            raise IndexStoreError(
                f"Milvus {what}{where} failed{f' (code {code})' if code is not None else ''}: "
                f"{message}", source=self.url.redacted()) from exc

    def _check_open(self) -> str:
        if self._closed or self._alias is None:
            from tracemark.errors import IndexClosedError

            raise IndexClosedError("the Milvus vector store is closed",
                                   source=self.url.redacted())
        return self._alias

    def _set(self, name: str) -> _Set:
        self._check_open()
        try:
            return self._sets[name]
        except KeyError:
            from tracemark.errors import UnknownVectorSetError

            raise UnknownVectorSetError(f"vector set {name!r} was not opened in this store",
                                        source=self.url.redacted()) from None

    def _schema(self, spec: VectorSpec) -> Any:
        pm = self._pm
        vec_type = pm.DataType.BINARY_VECTOR if spec.kind == "binary" else pm.DataType.FLOAT_VECTOR
        return pm.CollectionSchema(
            [pm.FieldSchema("label", pm.DataType.INT64, is_primary=True, auto_id=False),
             pm.FieldSchema("ref_id", pm.DataType.INT64),
             pm.FieldSchema("vec", vec_type, dim=spec.dim)],
            description=f"tracemark vector set ({spec.kind}, dim {spec.dim}, {spec.index})",
            enable_dynamic_field=False)

    @staticmethod
    def _index_params(spec: VectorSpec) -> dict[str, Any]:
        metric = "HAMMING" if spec.kind == "binary" else "IP"
        if spec.index == "hnsw":
            return {"index_type": "HNSW", "metric_type": metric,
                    "params": {"M": spec.hnsw_m, "efConstruction": _HNSW_EF_CONSTRUCTION}}
        if spec.index == "ivf":  # Milvus trains each sealed segment's lists itself
            return {"index_type": "BIN_IVF_FLAT" if spec.kind == "binary" else "IVF_FLAT",
                    "metric_type": metric, "params": {"nlist": _IVF_NLIST}}
        return {"index_type": "BIN_FLAT" if spec.kind == "binary" else "FLAT",
                "metric_type": metric, "params": {}}

    def _create(self, name: str, spec: VectorSpec) -> _Set:
        """Open the collection of ``name`` (creating it, indexed and loaded, if absent) and
        check that its vector field matches ``spec``."""
        alias = self._check_open()
        pm = self._pm
        cname = collection_name(self.namespace, name)
        with self._errors("open_set", name):
            if pm.utility.has_collection(cname, using=alias, timeout=self.timeout):
                col = pm.Collection(cname, using=alias)
                _check_schema(col, spec, cname, self.url.redacted())
            else:
                col = pm.Collection(cname, self._schema(spec), using=alias,
                                    consistency_level="Strong", timeout=self.timeout)
            if not col.has_index(timeout=self.timeout):
                col.create_index("vec", self._index_params(spec), timeout=self.timeout)
            col.load(timeout=self.timeout)
        return _Set(spec, col, cname)

    # -- the VectorStore interface --------------------------------------------------------

    def open_set(self, name: str, spec: VectorSpec, rows: RowSource | None = None) -> None:
        """Create (empty, when absent) and load the collection of set ``name``.

        ``rows`` (the database's rows of the set) is not read: the collection is durable
        and the :class:`~tracemark.index.Index` compares :meth:`labels` with the database
        and calls :meth:`rebuild` when they differ.

        Raises :class:`~tracemark.errors.IndexInputError` for a stored-only spec
        (``index="none"``) and :class:`~tracemark.errors.IndexFormatError` when the
        collection exists with another vector type or dimension.
        """
        if not isinstance(spec, VectorSpec):
            raise IndexInputError(f"open_set needs a VectorSpec, got {type(spec).__name__}")
        if spec.index == "none":
            raise IndexInputError(
                f"vector set {name!r} is stored only (index='none'): it has no place in a "
                f"vector store", source=self.url.redacted())
        with self._lock:
            self._sets[name] = self._create(name, spec)

    def drop_set(self, name: str) -> None:
        """Drop the collection of set ``name`` (no error when it is absent)."""
        alias = self._check_open()
        cname = collection_name(self.namespace, name)
        with self._lock, self._errors("drop_set", name):
            self._sets.pop(name, None)
            if self._pm.utility.has_collection(cname, using=alias, timeout=self.timeout):
                self._pm.utility.drop_collection(cname, using=alias, timeout=self.timeout)

    def labels(self, name: str) -> np.ndarray:
        """Every label in set ``name``: int64 ``(n,)``, ascending. Read with a query iterator
        (16384 rows a page, so it holds at millions of rows) at consistency ``Strong``."""
        s = self._set(name)
        out: list[np.ndarray] = []
        with self._errors("labels", name):
            it = s.collection.query_iterator(batch_size=_ITER_BATCH, expr="",
                                             output_fields=["label"], timeout=self.timeout,
                                             consistency_level="Strong")
            try:
                while True:
                    page = it.next()
                    if not page:
                        break
                    out.append(np.fromiter((r["label"] for r in page), np.int64, len(page)))
            finally:
                it.close()
        return np.sort(np.concatenate(out)) if out else np.empty(0, np.int64)

    def add(self, name: str, labels: np.ndarray, rows: np.ndarray) -> None:
        """Upsert ``rows`` (uint8 ``(n, dim/8)`` for a binary set, float32 ``(n, dim)`` for a
        float set) under ``labels`` (int64 ``(n,)``, unique), in chunks. Raises
        :class:`~tracemark.errors.IndexInputError` for a wrong shape, dtype or duplicate
        label."""
        s = self._set(name)
        labels, rows = _coerce(s.spec, labels, rows, name)
        if not len(labels):
            return
        self._write(s, labels, rows, upsert=True)

    def _write(self, s: _Set, labels: np.ndarray, rows: np.ndarray, *, upsert: bool) -> None:
        step = max(1, min(_INSERT_ROWS, _INSERT_BYTES // max(1, rows[0].nbytes)))
        ref_ids = labels >> np.int64(ROW_BITS)
        for lo in range(0, len(labels), step):
            hi = lo + step
            if s.spec.kind == "binary":
                vecs: list[Any] = [r.tobytes() for r in rows[lo:hi]]
            else:
                vecs = rows[lo:hi].tolist()
            data = [labels[lo:hi].tolist(), ref_ids[lo:hi].tolist(), vecs]
            with self._errors("upsert" if upsert else "insert", s.cname):
                if upsert:
                    s.collection.upsert(data, timeout=self.timeout)
                else:
                    s.collection.insert(data, timeout=self.timeout)

    def remove(self, name: str, ref_ids: np.ndarray) -> None:
        """Delete every row whose ``ref_id`` is in ``ref_ids`` (int64; chunks of 10,000)."""
        s = self._set(name)
        ids = np.unique(_int64(ref_ids, "ref_ids", name))
        for lo in range(0, len(ids), 10_000):
            chunk = ",".join(str(int(i)) for i in ids[lo:lo + 10_000])
            with self._errors("remove", name):
                s.collection.delete(f"ref_id in [{chunk}]", timeout=self.timeout)

    def search(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(k, MAX_K)`` best rows per query: ``(scores, labels)``, float32 and int64
        ``(len(queries), min(k, MAX_K))``, best first (Hamming bits ascending for a binary
        set, inner product descending for a float set; ties by label), padded with score 0
        and label -1 when the set holds fewer rows. Raises
        :class:`~tracemark.errors.IndexInputError` for queries of the wrong shape or dtype
        or ``k < 1``."""
        s = self._set(name)
        spec = s.spec
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise IndexInputError(f"k must be a positive int, got {k!r}")
        k = min(int(k), MAX_K)
        q = _coerce_rows(spec, queries, name, "queries")
        nq = len(q)
        scores = np.zeros((nq, k), np.float32)
        labels = np.full((nq, k), -1, np.int64)
        if nq == 0:
            return scores, labels
        higher = spec.kind == "float"
        params: dict[str, Any] = {"metric_type": "HAMMING" if spec.kind == "binary" else "IP",
                                  "params": {}}
        if spec.index == "hnsw":
            params["params"] = {"ef": max(spec.hnsw_ef_search, k)}
        elif spec.index == "ivf":
            params["params"] = {"nprobe": min(spec.ivf_nprobe, _IVF_NLIST)}
        step = max(1, min(MAX_K, _SEARCH_RESULTS // k, _SEARCH_QUERY_BYTES // q[0].nbytes))
        for lo in range(0, nq, step):
            chunk = q[lo:lo + step]
            data = [r.tobytes() for r in chunk] if spec.kind == "binary" else chunk.tolist()
            with self._errors("search", name):
                result = s.collection.search(data, "vec", params, limit=k, expr=None,
                                             output_fields=[], consistency_level="Strong",
                                             timeout=self.timeout)
            for i, hits in enumerate(result):
                ids = np.asarray(hits.ids, np.int64)
                dist = np.asarray(hits.distances, np.float32)
                order = np.lexsort((ids, -dist if higher else dist))[:k]
                n = len(order)
                labels[lo + i, :n] = ids[order]
                scores[lo + i, :n] = dist[order]
        return scores, labels

    def count(self, name: str) -> int:
        """Rows in set ``name`` (a ``count(*)`` query at consistency ``Strong``)."""
        s = self._set(name)
        with self._errors("count", name):
            res = s.collection.query(expr="", output_fields=["count(*)"],
                                     consistency_level="Strong", timeout=self.timeout)
        return int(res[0]["count(*)"]) if res else 0

    def rebuild(self, name: str, spec: VectorSpec, rows: RowSource) -> None:
        """Replace set ``name`` by the rows ``rows()`` yields: drop the collection, create
        it, insert chunk by chunk (plain inserts: the labels are unique in the database)."""
        with self._lock:
            self.drop_set(name)
            self.open_set(name, spec)
            s = self._sets[name]
            for labels, chunk in rows():
                if len(labels):
                    lab, vec = _coerce(spec, labels, chunk, name)
                    self._write(s, lab, vec, upsert=False)

    def set_stats(self, name: str) -> dict[str, Any]:
        """``rows``, ``store`` (the redacted URL), ``collection``, ``index`` (Milvus' index
        type) and ``metric``."""
        s = self._set(name)
        p = self._index_params(s.spec)
        return {"rows": self.count(name), "store": self.url.redacted(),
                "collection": s.cname, "index": p["index_type"], "metric": p["metric_type"]}

    def close(self) -> None:
        """Release the collections and disconnect (idempotent; the collections stay loaded
        in the server for the other processes)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sets.clear()
            alias, self._alias = self._alias, None
            if alias is not None:
                try:
                    self._pm.connections.disconnect(alias)
                except Exception:  # noqa: BLE001 -- closing a dead channel must not raise
                    logging.getLogger(__name__).debug("disconnect %s failed", alias,
                                                      exc_info=True)

    def __enter__(self) -> MilvusVectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MilvusVectors({self.url.redacted()!r}, namespace={self.namespace!r})"


# -- helpers ---------------------------------------------------------------------------------


class _DropFallbackTs(logging.Filter):
    """Drops pymilvus' warning that a Milvus 2.3 server gives a query iterator no MVCC
    timestamp: the iterator then guarantees the client's current time, which is as strong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


def _quiet_iterator_warning() -> None:
    log = logging.getLogger("pymilvus.orm.iterator")
    if not any(isinstance(f, _DropFallbackTs) for f in log.filters):
        log.addFilter(_DropFallbackTs())


def _unavailable(exc: BaseException) -> bool:
    """True for a server that cannot be reached: pymilvus' connect failure (code 2), gRPC
    UNAVAILABLE / DEADLINE_EXCEEDED, or a retry loop that ran out of time."""
    text = f"{type(exc).__name__} {getattr(exc, 'message', '')} {exc}".lower()
    code = getattr(exc, "code", None)
    if code == 2 and "connect" in text:
        return True
    return any(s in text for s in ("unavailable", "deadline", "fail connecting",
                                   "connection refused", "retry timeout", "failed to connect",
                                   "connectionnotexist", "should create connection first"))


def _int64(values: Any, what: str, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise IndexInputError(f"{what} of set {name!r} must be a 1-D integer array, got "
                              f"dtype {arr.dtype} shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _coerce_rows(spec: VectorSpec, rows: Any, name: str, what: str) -> np.ndarray:
    """``rows`` as contiguous uint8 ``(n, dim/8)`` or float32 ``(n, dim)`` (one row may be
    1-D); IndexInputError otherwise (a float set accepts any float dtype, finite values)."""
    arr = np.asarray(rows)
    width = spec.dim // 8 if spec.kind == "binary" else spec.dim
    if arr.ndim == 1 and arr.size == width:
        arr = arr.reshape(1, width)
    if arr.ndim != 2 or (arr.shape[0] and arr.shape[1] != width):
        raise IndexInputError(f"{what} of {spec.kind} set {name!r} must have shape "
                              f"(n, {width}), got {arr.shape}")
    if spec.kind == "binary":
        if arr.dtype != np.uint8:
            raise IndexInputError(f"{what} of binary set {name!r} must be packed uint8, "
                                  f"got {arr.dtype}")
    else:
        if not np.issubdtype(arr.dtype, np.floating):
            raise IndexInputError(f"{what} of float set {name!r} must be float32, got {arr.dtype}")
        arr = arr.astype(np.float32, copy=False)
        if arr.size and not np.isfinite(arr).all():
            raise IndexInputError(f"{what} of float set {name!r} hold NaN or infinity")
    return np.ascontiguousarray(arr)


def _coerce(spec: VectorSpec, labels: Any, rows: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as int64 ``(n,)``, non-negative and unique, and ``rows`` as
    :func:`_coerce_rows`; IndexInputError otherwise."""
    arr = _coerce_rows(spec, rows, name, "rows")
    lab = _int64(labels, "labels", name)
    if len(lab) != len(arr):
        raise IndexInputError(f"{len(lab)} labels for {len(arr)} rows in set {name!r}")
    if len(lab) and (lab.min() < 0):
        raise IndexInputError(f"labels of set {name!r} must be >= 0")
    if len(np.unique(lab)) != len(lab):
        raise IndexInputError(f"labels of set {name!r} repeat within one add")
    return lab, arr


def _check_schema(col: Any, spec: VectorSpec, cname: str, source: str) -> None:
    """IndexFormatError when collection ``cname`` does not hold ``spec``'s vectors."""
    from tracemark.errors import IndexFormatError

    fields = {f.name: f for f in col.schema.fields}
    want = "BINARY_VECTOR" if spec.kind == "binary" else "FLOAT_VECTOR"
    vec = fields.get("vec")
    found = (f"fields {sorted(fields)}" if vec is None or set(fields) != set(_FIELDS)
             else f"{vec.dtype.name}({vec.params.get('dim')})")
    if vec is None or set(fields) != set(_FIELDS) or vec.dtype.name != want \
            or int(vec.params.get("dim", -1)) != spec.dim:
        raise IndexFormatError(
            f"Milvus collection {cname!r} holds {found}, the vector set needs "
            f"{want}({spec.dim}); it belongs to another index or an older layout",
            source=source)
