"""FAISS plumbing for one vector set: build, validate rows, search, read and write atomically.

FAISS ids encode both the reference and the row: ``label = ref_id << ROW_BITS | row``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from tracemark.index.errors import IndexInputError
from tracemark.index.model import MAX_ROWS_PER_REFERENCE, VectorSpec

__all__ = [
    "ROW_BITS",
    "add",
    "new_index",
    "coerce_rows",
    "rows_to_bytes",
    "bytes_to_rows",
    "labels_of",
    "expected_labels",
    "search",
    "read_index",
    "write_index",
    "remove_reference",
    "StoredOnly",
]

ROW_BITS = 16
_ADD_CHUNK = 1 << 16


class StoredOnly:
    """The in-memory side of a stored-only vector set (``VectorSpec(index="none")``): the
    ids of its rows (8 bytes a row), no vectors; the database holds the rows, read per
    reference with :meth:`tracemark.index.Index.vectors`. Not searchable."""

    def __init__(self, labels: np.ndarray | None = None) -> None:
        self.ids = np.empty(0, np.int64) if labels is None else np.asarray(labels, np.int64)

    @property
    def ntotal(self) -> int:
        return int(self.ids.shape[0])

    def add_with_ids(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, np.asarray(labels, np.int64)])


def new_index(spec: VectorSpec) -> Any:
    """An empty FAISS index for ``spec``: an ID map around a flat or HNSW index
    (:class:`StoredOnly` for ``index="none"``)."""
    if spec.index == "none":
        return StoredOnly()
    if spec.kind == "binary":
        if spec.index == "flat":
            return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(spec.dim))
        inner: Any = faiss.IndexBinaryHNSW(spec.dim, spec.hnsw_m)
        inner.hnsw.efSearch = spec.hnsw_ef_search
        return faiss.IndexBinaryIDMap(inner)
    if spec.index == "flat":
        return faiss.IndexIDMap(faiss.IndexFlatIP(spec.dim))
    inner = faiss.IndexHNSWFlat(spec.dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efSearch = spec.hnsw_ef_search
    return faiss.IndexIDMap(inner)


def _inner(index: Any, spec: VectorSpec) -> Any:
    if spec.kind == "binary":
        return faiss.downcast_IndexBinary(index.index)
    return faiss.downcast_index(index.index)


def _matches(index: Any, spec: VectorSpec) -> bool:
    """True when a loaded FAISS index has the type, dimension and metric ``spec`` asks for."""
    if spec.kind == "binary":
        if not isinstance(index, faiss.IndexBinaryIDMap) or index.d != spec.dim:
            return False
        want: type = faiss.IndexBinaryFlat if spec.index == "flat" else faiss.IndexBinaryHNSW
        return isinstance(_inner(index, spec), want)
    if not isinstance(index, faiss.IndexIDMap) or index.d != spec.dim:
        return False
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return False
    want = faiss.IndexFlatIP if spec.index == "flat" else faiss.IndexHNSWFlat
    return isinstance(_inner(index, spec), want)


def coerce_rows(spec: VectorSpec, value: object, *, what: str) -> np.ndarray:
    """Validate ``value`` as rows of ``spec``; return a C-contiguous 2-D array.

    Binary sets take uint8 packed bits, shape ``(dim/8,)`` or ``(n, dim/8)``. Float sets take
    any real floating dtype (cast to float32), shape ``(dim,)`` or ``(n, dim)``, finite.
    """
    if not isinstance(value, np.ndarray):
        raise IndexInputError(f"{what} must be a numpy array, got {type(value).__name__}")
    width = spec.dim // 8 if spec.kind == "binary" else spec.dim
    if value.ndim == 1:
        value = value[None, :]
    if value.ndim != 2 or value.shape[1] != width:
        unit = "packed bytes" if spec.kind == "binary" else "floats"
        raise IndexInputError(
            f"{what} must have shape ({width},) or (n, {width}) ({unit} for a {spec.kind} "
            f"set of dim {spec.dim}), got {value.shape}"
        )
    if value.shape[0] > MAX_ROWS_PER_REFERENCE:
        raise IndexInputError(
            f"{what} has {value.shape[0]} rows; at most {MAX_ROWS_PER_REFERENCE} per reference"
        )
    if spec.kind == "binary":
        if value.dtype != np.uint8:
            raise IndexInputError(
                f"{what} must be uint8 packed bits (np.packbits), got dtype {value.dtype}"
            )
        return np.ascontiguousarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        raise IndexInputError(f"{what} must be a float array, got dtype {value.dtype}")
    rows = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise IndexInputError(f"{what} holds NaN or infinite values")
    return rows


def rows_to_bytes(spec: VectorSpec, rows: np.ndarray) -> bytes:
    """The SQLite encoding of rows: raw bytes, float32 little-endian for float sets."""
    if spec.kind == "binary":
        return rows.tobytes()
    return rows.astype("<f4", copy=False).tobytes()


def bytes_to_rows(spec: VectorSpec, data: bytes) -> np.ndarray:
    """Inverse of :func:`rows_to_bytes` (a read-only view when no conversion is needed)."""
    if spec.kind == "binary":
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, spec.dim // 8)
    return np.frombuffer(data, dtype="<f4").reshape(-1, spec.dim).astype(np.float32, copy=False)


def labels_of(index: Any) -> np.ndarray:
    """The FAISS ids held by an ID-map index, in storage order."""
    if isinstance(index, StoredOnly):
        return index.ids
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def expected_labels(ref_ids: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
    """FAISS ids for ``n_rows[i]`` rows of each reference ``ref_ids[i]``, in that order."""
    ref_ids = np.asarray(ref_ids, dtype=np.int64)
    n_rows = np.asarray(n_rows, dtype=np.int64)
    starts = np.cumsum(n_rows) - n_rows
    within = np.arange(int(n_rows.sum()), dtype=np.int64) - np.repeat(starts, n_rows)
    return (np.repeat(ref_ids, n_rows) << ROW_BITS) | within


def add(index: Any, rows: np.ndarray, labels: np.ndarray) -> None:
    """Add rows with their FAISS ids, in chunks."""
    for start in range(0, len(rows), _ADD_CHUNK):
        stop = start + _ADD_CHUNK
        index.add_with_ids(rows[start:stop], np.ascontiguousarray(labels[start:stop]))


def remove_reference(index: Any, ref_id: int) -> int:
    """Remove every row of one reference from a flat index; return how many went."""
    lo = ref_id << ROW_BITS
    if isinstance(index, StoredOnly):
        keep = (index.ids < lo) | (index.ids >= lo + (1 << ROW_BITS))
        gone = int((~keep).sum())
        index.ids = index.ids[keep]
        return gone
    return int(index.remove_ids(faiss.IDSelectorRange(lo, lo + (1 << ROW_BITS))))


def search(
    index: Any, spec: VectorSpec, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw FAISS search for ``k`` rows; the HNSW candidate list is raised to at least ``k``."""
    if spec.index == "hnsw":
        _inner(index, spec).hnsw.efSearch = max(spec.hnsw_ef_search, k)
    distances, labels = index.search(queries, k)
    return distances, labels


def read_index(path: Path, spec: VectorSpec) -> Any | None:
    """Load a FAISS file; None when it is missing, unreadable or does not match ``spec``
    (always None for a stored-only set: it has no file)."""
    if spec.index == "none" or not path.is_file():
        return None
    reader = faiss.read_index_binary if spec.kind == "binary" else faiss.read_index
    try:
        index = reader(str(path))
    except RuntimeError:
        return None
    return index if _matches(index, spec) else None


def write_index(index: Any, spec: VectorSpec, path: Path) -> None:
    """Write a FAISS file atomically: temp file, fsync, rename over ``path``, fsync the folder
    (nothing for a stored-only set)."""
    if spec.index == "none":
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = faiss.write_index_binary if spec.kind == "binary" else faiss.write_index
    try:
        writer(index, str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
