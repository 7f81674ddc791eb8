"""FAISS plumbing: build, validate rows, search, read and write atomically; and
:class:`FaissVectors`, the default :class:`~tracemark.index.vectors.VectorStore` (FAISS
indexes in memory, one file per vector set in the index directory's ``vectors/``).

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
from tracemark.index.vectors import ROW_BITS, RowSource, VectorStore, VectorStoreURL

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
    "FaissVectors",
]

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


def is_ivf(index: Any) -> bool:
    """True for an inverted-file index (it holds its ids itself: no ID map around it)."""
    return isinstance(index, faiss.IndexIVF | faiss.IndexBinaryIVF)


def new_index(spec: VectorSpec) -> Any:
    """An empty FAISS index for ``spec``: an ID map around a flat or HNSW index
    (:class:`StoredOnly` for ``index="none"``; an ``ivf``/``auto`` set starts flat and
    becomes an inverted file when :func:`build_ivf` has rows enough to train)."""
    if spec.index == "none":
        return StoredOnly()
    if spec.kind == "binary":
        if spec.index in ("flat", "ivf", "auto"):
            return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(spec.dim))
        inner: Any = faiss.IndexBinaryHNSW(spec.dim, spec.hnsw_m)
        inner.hnsw.efSearch = spec.hnsw_ef_search
        return faiss.IndexBinaryIDMap(inner)
    if spec.index in ("flat", "ivf", "auto"):
        return faiss.IndexIDMap(faiss.IndexFlatIP(spec.dim))
    inner = faiss.IndexHNSWFlat(spec.dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efSearch = spec.hnsw_ef_search
    return faiss.IndexIDMap(inner)


def _inner(index: Any, spec: VectorSpec) -> Any:
    if spec.kind == "binary":
        return faiss.downcast_IndexBinary(index.index)
    return faiss.downcast_index(index.index)


def nlist_for(rows: int) -> int:
    """Inverted lists of an IVF set of ``rows`` rows: ``4 * sqrt(rows)`` (FAISS's guideline
    of 4 to 16 sqrt(N)), at least 16, at most ``rows / 39`` (39 training points a list)."""
    return int(max(16, min(4 * np.sqrt(rows), rows // 39)))


def build_ivf(spec: VectorSpec, rows: Any) -> Any:
    """An inverted-file index of the rows ``rows()`` yields (``(labels, rows)`` chunks),
    trained on a sample of them: IVF-PQ (inner product, ``dim / 8`` sub-quantizers of 8
    bits; Jegou et al., "Product quantization for nearest neighbor search", TPAMI 2011) for
    float sets, IVF over exact Hamming distances for binary sets."""
    total = sum(len(lab) for lab, _ in rows())
    nlist = nlist_for(total)
    want = min(total, max(256 * 39, 64 * nlist))
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(total, size=want, replace=False)) if want < total else None
    sample, seen = [], 0
    for lab, chunk in rows():
        if keep is None:
            sample.append(chunk)
        else:
            lo = np.searchsorted(keep, seen)
            hi = np.searchsorted(keep, seen + len(lab))
            sample.append(chunk[keep[lo:hi] - seen])
        seen += len(lab)
    train = np.ascontiguousarray(np.concatenate(sample))
    if spec.kind == "binary":
        index: Any = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(spec.dim), spec.dim, nlist)
    else:
        quantizer = faiss.IndexFlatIP(spec.dim)
        index = faiss.IndexIVFPQ(quantizer, spec.dim, nlist, spec.dim // 8, 8,
                                 faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
    index.train(train)
    index.nprobe = spec.ivf_nprobe
    for lab, chunk in rows():
        if len(lab):
            add(index, chunk, lab)
    return index


def _matches(index: Any, spec: VectorSpec) -> bool:
    """True when a loaded FAISS index has the type, dimension and metric ``spec`` asks for."""
    if spec.index in ("ivf", "auto") and is_ivf(index):
        if index.d != spec.dim:
            return False
        if spec.kind == "binary":
            return isinstance(index, faiss.IndexBinaryIVF)
        return isinstance(index, faiss.IndexIVFPQ) and \
            index.metric_type == faiss.METRIC_INNER_PRODUCT
    if spec.kind == "binary":
        if not isinstance(index, faiss.IndexBinaryIDMap) or index.d != spec.dim:
            return False
        want: type = (faiss.IndexBinaryHNSW if spec.index == "hnsw"
                      else faiss.IndexBinaryFlat)
        return isinstance(_inner(index, spec), want)
    if not isinstance(index, faiss.IndexIDMap) or index.d != spec.dim:
        return False
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return False
    want = faiss.IndexHNSWFlat if spec.index == "hnsw" else faiss.IndexFlatIP
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
    if is_ivf(index):
        lists = index.invlists
        parts = [np.zeros(0, np.int64)]
        for i in range(index.nlist):
            n = lists.list_size(i)
            if n:
                parts.append(faiss.rev_swig_ptr(lists.get_ids(i), n).astype(np.int64))
        return np.concatenate(parts)
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
    elif is_ivf(index):
        index.nprobe = spec.ivf_nprobe
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


def remove_references(index: Any, ref_ids: np.ndarray) -> int:
    """Remove every row of the references ``ref_ids`` from a flat index; how many went."""
    ref_ids = np.unique(np.asarray(ref_ids, np.int64))
    if len(ref_ids) == 1:
        return remove_reference(index, int(ref_ids[0]))
    labels = labels_of(index)
    gone = labels[np.isin(labels >> ROW_BITS, ref_ids)]
    if not len(gone):
        return 0
    if isinstance(index, StoredOnly):
        index.ids = labels[~np.isin(labels, gone)]
        return len(gone)
    return int(index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(gone))))


class FaissVectors(VectorStore):
    """FAISS indexes in memory, each written to ``<path>/vectors/<set>.faiss`` by
    :meth:`flush` (atomically: temp file, fsync, rename). One writer process: the index
    directory's writer lock guards it.

    Flat sets remove rows in place; an HNSW set cannot, so a removal marks it stale and it is
    rebuilt from the database rows (the ``rows`` source given to :meth:`open_set`) before
    the next search or flush.
    """

    scheme = "faiss"
    shared = False

    def __init__(self, url: VectorStoreURL | None = None, *, namespace: str = "",
                 path: Path) -> None:
        self.folder = Path(path) / "vectors"
        self._sets: dict[str, _FaissSet] = {}

    def file(self, name: str) -> Path:
        """The FAISS file of set ``name``."""
        return self.folder / f"{name}.faiss"

    def open_set(self, name: str, spec: VectorSpec, rows: RowSource | None = None) -> None:
        index = read_index(self.file(name), spec)
        self._sets[name] = _FaissSet(spec, new_index(spec) if index is None else index, rows,
                                     dirty=index is None and spec.index != "none")

    def drop_set(self, name: str) -> None:
        self._sets.pop(name, None)

    def labels(self, name: str) -> np.ndarray:
        return labels_of(self._fresh(name).index)

    def add(self, name: str, labels: np.ndarray, rows: np.ndarray) -> None:
        fs = self._sets[name]
        try:
            add(fs.index, rows, np.asarray(labels, np.int64))
        except BaseException:
            fs.stale = True
            raise
        finally:
            fs.dirty = True

    def remove(self, name: str, ref_ids: np.ndarray) -> None:
        fs = self._sets[name]
        fs.dirty = True
        if fs.spec.index != "hnsw" and not fs.stale:
            remove_references(fs.index, ref_ids)
        else:  # HNSW cannot remove: rebuilt before the next search or flush
            fs.stale = True

    def search(self, name: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        fs = self._fresh(name)
        k = min(int(k), max(1, int(fs.index.ntotal)))
        return search(fs.index, fs.spec, queries, k)

    def count(self, name: str) -> int:
        return int(self._fresh(name).index.ntotal)

    def rebuild(self, name: str, spec: VectorSpec, rows: RowSource) -> None:
        start = spec.ivf_from()
        if start is not None and sum(len(lab) for lab, _ in rows()) >= start:
            index = build_ivf(spec, rows)
        else:
            index = new_index(spec)
            for labels, chunk in rows():
                if len(labels):
                    add(index, chunk, labels)
        old = self._sets.get(name)
        self._sets[name] = _FaissSet(spec, index, rows if old is None else old.rows, dirty=True)

    def discard(self, name: str) -> None:
        """Forget the in-memory changes of set ``name``: reload its file (the state of the
        last flush)."""
        fs = self._sets[name]
        self.open_set(name, fs.spec, fs.rows)

    def flush(self) -> None:
        for name, fs in list(self._sets.items()):
            if fs.stale or self._outgrown(fs):
                fs.stale = True
                self._fresh(name)
                fs = self._sets[name]
            if fs.dirty:
                write_index(fs.index, fs.spec, self.file(name))
                fs.dirty = False

    def close(self) -> None:
        self._sets.clear()

    def set_stats(self, name: str) -> dict[str, Any]:
        file = self.file(name)
        try:
            size = file.stat().st_size
        except OSError:
            size = 0
        return {"rows": self.count(name), "file_bytes": size}

    @staticmethod
    def _outgrown(fs: _FaissSet) -> bool:
        """An ``ivf``/``auto`` set to (re)build as an inverted file: flat with rows enough
        to train, or an inverted file whose rows have grown fourfold since its training
        (``nlist`` now half of what its size asks for)."""
        start = fs.spec.ivf_from()
        if start is None or fs.rows is None:
            return False
        n = int(fs.index.ntotal)
        if is_ivf(fs.index):
            return nlist_for(n) >= 2 * fs.index.nlist
        return n >= start

    def _fresh(self, name: str) -> _FaissSet:
        fs = self._sets[name]
        if fs.stale:
            if fs.rows is None:
                raise RuntimeError(f"vector set {name!r} is stale and has no row source")
            self.rebuild(name, fs.spec, fs.rows)
            fs = self._sets[name]
        return fs


class _FaissSet:
    __slots__ = ("spec", "index", "rows", "dirty", "stale")

    def __init__(self, spec: VectorSpec, index: Any, rows: RowSource | None, *,
                 dirty: bool = False) -> None:
        self.spec, self.index, self.rows = spec, index, rows
        self.dirty = dirty  # the in-memory index differs from its file
        self.stale = False  # must be rebuilt from the database rows
