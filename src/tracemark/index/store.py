"""The persistent reference index: SQLite metadata and vectors, FAISS search caches.

An index is a directory::

    index.sqlite          metadata, raw vectors, blobs (WAL mode) -- the source of truth
    vectors/<name>.faiss  one FAISS index per vector set -- a cache, rebuilt when it disagrees
    write.lock            advisory lock held by the one writer (POSIX)

Writes go to an open SQLite transaction and to the in-memory FAISS indexes; ``commit()``
(also ``close()`` and a clean ``with`` exit) commits SQLite first, then writes each changed
FAISS file to a temp file and renames it into place. A crash between the two leaves FAISS
files that disagree with SQLite; ``Index.open`` notices (it compares the FAISS ids with the
rows in SQLite) and rebuilds them from the vectors stored in SQLite. See
``docs/index-format.md``.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from tracemark._lifecycle import Resource
from tracemark.errors import ConfigError
from tracemark.index import _faiss, _pg
from tracemark.index._schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SCHEMA,
    check_format,
    load_vector_sets,
)
from tracemark.index.errors import (
    IndexClosedError,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
    IndexNotFoundError,
    IndexReadOnlyError,
    ReferenceNotFoundError,
    UnknownVectorSetError,
)
from tracemark.index.model import (
    AddResult,
    Hit,
    NewReference,
    Reference,
    VectorSpec,
    check_set_name,
)

__all__ = ["Index", "SQLITE_NAME", "VECTORS_DIR", "LOCK_NAME"]

SQLITE_NAME = "index.sqlite"
VECTORS_DIR = "vectors"
LOCK_NAME = "write.lock"
DATABASE_NAME = "database.json"

_MAX_HASH_LEN = 512
_TEXT_FIELDS = ("source", "owner", "license", "notes")
_ROW_MASK = (1 << _faiss.ROW_BITS) - 1
_REF_COLUMNS = "id, content_hash, source, owner, license, notes, added_at"


@dataclass
class _VectorSet:
    """In-memory state of one vector set."""

    id: int
    name: str
    spec: VectorSpec
    index: Any
    max_rows: int = 0
    dirty: bool = False  # the in-memory index differs from its file
    stale: bool = False  # the in-memory index must be rebuilt from SQLite


@dataclass
class _Prepared:
    content_hash: str
    text: tuple[str | None, str | None, str | None, str | None]
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_id(ref_id: object) -> int:
    if isinstance(ref_id, bool) or not isinstance(ref_id, int | np.integer):
        raise IndexInputError(f"a reference id must be an int, got {type(ref_id).__name__}")
    if not -(2**63) <= int(ref_id) < 2**63:  # SQLite's INTEGER range
        raise IndexInputError(f"reference id out of range: {int(ref_id)}")
    return int(ref_id)


def _check_count(value: object, what: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise IndexInputError(f"{what} must be an int >= {low}, got {value!r}")
    return int(value)


def _open_pg(url: str, schema: str | None, *, source: str, read_only: bool,
             create: bool = False) -> Any:
    try:
        return _pg.connect_pg(url, str(schema), read_only=read_only, create=create)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source) from None
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(str(exc), source=source) from None


def _acquire_lock(path: Path) -> IO[bytes] | None:
    """Take the advisory writer lock (POSIX ``flock``); None where unsupported."""
    try:
        import fcntl
    except ImportError:  # Windows: no writer lock (documented)
        return None
    handle = open(path / LOCK_NAME, "a+b")  # noqa: SIM115 (held for the index's lifetime)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise IndexLockedError(
            "another Index object or process has this index open for writing", source=str(path)
        ) from None
    return handle


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    db = path / SQLITE_NAME
    if read_only:
        uri = f"{db.resolve().as_uri()}?mode=ro"
        if not os.access(path, os.W_OK):  # read-only media: WAL needs a writable -shm
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise IndexFormatError(
            f"index.sqlite is not a readable SQLite database ({exc})", source=str(path)
        ) from exc
    return conn


class Index(Resource):
    """A persistent collection of references, each with vectors in named sets, metadata and blobs.

    Build one with :meth:`create`, reopen it with :meth:`open`; use it as a context manager
    (a clean exit commits, an exception rolls back) or call :meth:`commit` and :meth:`close`.
    One writer at a time; any number of ``read_only`` readers (a reader's search sees the
    vectors as of its open or last :meth:`refresh`). Methods are serialised by a lock, so
    an object may be shared between threads.
    """

    _closed_error = IndexClosedError
    _noun = "index"

    path: Path
    read_only: bool
    _conn: sqlite3.Connection
    _lock_file: IO[bytes] | None
    _meta: dict[str, str]
    _sets: dict[str, _VectorSet]
    #: Names of the vector sets whose FAISS file was missing, unreadable or inconsistent with
    #: SQLite when last loaded, and so were rebuilt from the stored vectors.
    repaired: tuple[str, ...]

    def __init__(self) -> None:
        raise TypeError("use Index.create(path, vector_specs=...) or Index.open(path)")

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        vector_specs: Mapping[str, VectorSpec],
        database_url: str | None = None,
        schema: str | None = None,
    ) -> Index:
        """Create a new, empty index at ``path`` (a new or empty directory) and open it for writing.

        With ``database_url`` (PostgreSQL) and ``schema``, the metadata and raw vectors go to
        that schema (which must not hold an index yet) instead of ``index.sqlite``; the
        directory keeps the FAISS files, the writer lock and ``database.json`` naming the
        schema.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexExistsError("path exists and is not an empty directory", source=str(path))
        if not isinstance(vector_specs, Mapping):
            raise ConfigError(f"vector_specs must be a mapping, got {type(vector_specs).__name__}")
        for name, spec in vector_specs.items():
            check_set_name(name)
            if not isinstance(spec, VectorSpec):
                raise ConfigError(
                    f"vector_specs[{name!r}] must be a VectorSpec, got {type(spec).__name__}"
                )
        from tracemark import __version__

        if (database_url is None) != (schema is None):
            raise ConfigError("give database_url and schema together")
        existed = path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            (path / VECTORS_DIR).mkdir()
            conn: Any
            if database_url is not None:
                conn = _open_pg(database_url, schema, source=str(path), read_only=False,
                                create=True)
                if "meta" in conn.tables():
                    conn.close()
                    raise IndexExistsError(f"schema {schema!r} already holds an index",
                                           source=str(path))
                (path / DATABASE_NAME).write_text(json.dumps(
                    {"backend": "postgresql", "schema": schema}) + "\n")
            else:
                conn = sqlite3.connect(path / SQLITE_NAME, isolation_level=None)
            try:
                if database_url is not None:
                    conn.execute("BEGIN")
                    for statement in _pg.pg_schema().split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("COMMIT")
                else:
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript("BEGIN;\n" + SCHEMA + "\nCOMMIT;")
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("format", FORMAT_NAME),
                        ("format_version", str(FORMAT_VERSION)),
                        ("created_by", f"tracemark {__version__}"),
                        ("created_at", _now()),
                    ],
                )
                for name, spec in vector_specs.items():
                    _insert_set(conn, name, spec)
                conn.execute("COMMIT")
            finally:
                conn.close()
            for name, spec in vector_specs.items():
                _faiss.write_index(
                    _faiss.new_index(spec), spec, path / VECTORS_DIR / f"{name}.faiss"
                )
        except BaseException:
            for child in [
                path / DATABASE_NAME,
                path / SQLITE_NAME,
                path / f"{SQLITE_NAME}-wal",
                path / f"{SQLITE_NAME}-shm",
            ]:
                child.unlink(missing_ok=True)
            for name in vector_specs:
                (path / VECTORS_DIR / f"{name}.faiss").unlink(missing_ok=True)
            if (path / VECTORS_DIR).is_dir():
                (path / VECTORS_DIR).rmdir()
            if not existed:
                path.rmdir()
            raise
        return cls.open(path, database_url=database_url)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        database_url: str | None = None,
    ) -> Index:
        """Open an existing index; check its format and the FAISS files' consistency.

        Raises :class:`IndexNotFoundError` for a missing path, :class:`IndexFormatError` for a
        foreign, corrupt or newer-format directory, :class:`IndexLockedError` when another
        writer holds it (``read_only=False`` only).
        """
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise IndexNotFoundError("no index at this path", source=source)
        conn: Any
        db_file = path / DATABASE_NAME
        if path.is_dir() and db_file.is_file():
            try:
                where = json.loads(db_file.read_text())
                schema = str(where["schema"])
            except (ValueError, KeyError, TypeError, OSError):
                raise IndexFormatError(f"corrupt {DATABASE_NAME}", source=source) from None
            if database_url is None:
                raise IndexFormatError(
                    f"this index keeps its metadata in PostgreSQL (schema {schema!r}); "
                    "give the database URL", source=source)
            conn = _open_pg(database_url, schema, source=source, read_only=read_only)
        elif database_url is not None:
            raise IndexFormatError(f"not a PostgreSQL-backed index (no {DATABASE_NAME})",
                                   source=source)
        elif not path.is_dir() or not (path / SQLITE_NAME).is_file():
            raise IndexFormatError(f"not a tracemark index (no {SQLITE_NAME})", source=source)
        else:
            conn = _connect(path, read_only=read_only)
        lock: IO[bytes] | None = None
        try:
            meta = check_format(conn, source=source)
            specs = load_vector_sets(conn, source=source)
            if not read_only:
                lock = _acquire_lock(path)
            self = cls.__new__(cls)
            self.path = path
            self.read_only = read_only
            self.repaired = ()
            self._conn = conn
            self._lock_file = lock
            self._init_resource()
            self._meta = meta
            self._sets = {
                name: _VectorSet(id=set_id, name=name, spec=spec, index=None)
                for name, (set_id, spec) in specs.items()
            }
            self._load_sets(list(self._sets.values()))
        except BaseException:
            conn.close()
            if lock is not None:
                lock.close()
            raise
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "writable")
        return f"Index({str(self.path)!r}, {state}, sets={sorted(self._sets)})"

    # --- transactions --------------------------------------------------------------

    def commit(self, *, write_vectors: bool = True) -> None:
        """Make pending writes durable: commit the database, then write the changed FAISS
        files.

        ``write_vectors=False`` commits the database only: the writes are durable (the
        database holds the vectors), the in-memory FAISS indexes serve searches, and the
        FAISS files are written by a later commit or :meth:`close`. After a crash in
        between, :meth:`open` finds files that disagree with the database and rebuilds
        them, so adds stay cheap for a service without risking an acknowledged write.
        """
        with self._mutex:
            self._check_open()
            self._check_commit()
            self._commit(write_vectors=write_vectors)

    def _commit(self, *, write_vectors: bool = True) -> None:
        if self.read_only:
            return
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")
        if not write_vectors:
            return
        for vset in self._sets.values():
            if vset.stale:
                self._rebuild(vset)
            if vset.dirty:
                _faiss.write_index(vset.index, vset.spec, self._faiss_path(vset.name))
                vset.dirty = False

    def _rollback(self) -> None:
        """Discard writes since the last commit (database and in-memory vectors)."""
        if self.read_only:
            return
        if not self._conn.in_transaction and not any(v.stale for v in self._sets.values()):
            return  # nothing uncommitted: the in-memory sets match the database
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        specs = load_vector_sets(self._conn, source=str(self.path))
        kept = {
            name: vset
            for name, vset in self._sets.items()
            if name in specs and specs[name][0] == vset.id and not (vset.dirty or vset.stale)
        }
        fresh = [
            _VectorSet(id=set_id, name=name, spec=spec, index=None)
            for name, (set_id, spec) in specs.items()
            if name not in kept
        ]
        self._sets = {**kept, **{v.name: v for v in fresh}}
        self._load_sets(fresh)

    def _release(self) -> None:
        self._conn.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def _closed_source(self) -> str:
        return str(self.path)

    @property
    def in_transaction(self) -> bool:
        """Whether this handle holds database writes not yet committed (always False for a
        read-only or closed handle). What a cache derived from the database, such as the
        copy-detection inverted file, checks before it writes itself to disk."""
        return not self.read_only and not self._closed and bool(self._conn.in_transaction)

    def refresh(self) -> None:
        """Reload the vector sets from disk (a reader picks up the writer's commits)."""
        with self._mutex:
            self._check_open()
            if not self.read_only and (self._conn.in_transaction or self._any_dirty()):
                raise IndexInputError("commit or roll back before refresh()", source=str(self.path))
            specs = load_vector_sets(self._conn, source=str(self.path))
            self._sets = {
                name: _VectorSet(id=set_id, name=name, spec=spec, index=None)
                for name, (set_id, spec) in specs.items()
            }
            self._load_sets(list(self._sets.values()))

    # --- writes --------------------------------------------------------------------

    def add(
        self,
        *,
        content_hash: str,
        vectors: Mapping[str, np.ndarray],
        source: str | None = None,
        owner: str | None = None,
        license: str | None = None,
        notes: str | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> AddResult:
        """Add one reference; a known ``content_hash`` adds nothing and returns ``duplicate_of``."""
        item = NewReference(
            content_hash=content_hash,
            vectors=vectors,
            source=source,
            owner=owner,
            license=license,
            notes=notes,
            blobs=blobs if blobs is not None else {},
        )
        return self.add_many([item])[0]

    def add_many(self, items: Iterable[NewReference]) -> builtins.list[AddResult]:
        """Add references in one transaction; all are validated first, so it adds all or none.

        Duplicates (a content hash already stored, or repeated within ``items``) are not
        added again; their result carries ``duplicate_of``.
        """
        with self._mutex:
            self._check_writable()
            prepared = [self._prepare(item, i) for i, item in enumerate(items)]
            if not prepared:
                return []
            self._begin()
            conn = self._conn
            conn.execute("SAVEPOINT add_many")
            try:
                results, new_rows = self._insert(prepared)
                conn.execute("RELEASE add_many")
            except BaseException:
                conn.execute("ROLLBACK TO add_many")
                conn.execute("RELEASE add_many")
                raise
            for name, parts in new_rows.items():
                vset = self._sets[name]
                try:
                    rows = np.concatenate([r for _, r in parts])
                    labels = _faiss.expected_labels(
                        np.array([rid for rid, _ in parts]), np.array([len(r) for _, r in parts])
                    )
                    _faiss.add(vset.index, rows, labels)
                except BaseException:
                    vset.stale = True
                    raise
                finally:
                    vset.dirty = True
                vset.max_rows = max(vset.max_rows, max(len(r) for _, r in parts))
            return results

    def remove(self, ref_id: int) -> bool:
        """Remove a reference (metadata, vectors, blobs); False when the id is unknown."""
        with self._mutex:
            self._check_writable()
            rid = _check_id(ref_id)
            conn = self._conn
            if conn.execute("SELECT 1 FROM refs WHERE id = ?", (rid,)).fetchone() is None:
                return False
            self._begin()
            set_ids = {
                r[0] for r in conn.execute("SELECT set_id FROM vectors WHERE ref_id = ?", (rid,))
            }
            conn.execute("DELETE FROM vectors WHERE ref_id = ?", (rid,))
            conn.execute("DELETE FROM blobs WHERE ref_id = ?", (rid,))
            conn.execute("DELETE FROM refs WHERE id = ?", (rid,))
            for vset in self._sets.values():
                if vset.id not in set_ids:
                    continue
                vset.dirty = True
                if vset.spec.index in ("flat", "none") and not vset.stale:
                    _faiss.remove_reference(vset.index, rid)
                else:  # HNSW cannot remove: rebuild before the next search or commit
                    vset.stale = True
            return True

    def add_vector_set(self, name: str, spec: VectorSpec) -> None:
        """Add a new, empty vector set (existing references have no rows in it)."""
        with self._mutex:
            self._check_writable()
            check_set_name(name)
            if not isinstance(spec, VectorSpec):
                raise ConfigError(f"spec must be a VectorSpec, got {type(spec).__name__}")
            if name in self._sets:
                raise ConfigError(f"vector set {name!r} already exists", source=str(self.path))
            self._begin()
            set_id = _insert_set(self._conn, name, spec)
            self._sets[name] = _VectorSet(
                id=set_id, name=name, spec=spec, index=_faiss.new_index(spec), dirty=True
            )

    # --- reads ---------------------------------------------------------------------

    @property
    def vector_specs(self) -> dict[str, VectorSpec]:
        """The vector sets of this index, by name."""
        return {name: vset.spec for name, vset in self._sets.items()}

    def __len__(self) -> int:
        with self._mutex:
            self._check_open()
            return int(self._conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])

    def __contains__(self, ref_id: object) -> bool:
        with self._mutex:
            self._check_open()
            if isinstance(ref_id, bool) or not isinstance(ref_id, int | np.integer):
                return False
            row = self._conn.execute("SELECT 1 FROM refs WHERE id = ?", (int(ref_id),)).fetchone()
            return row is not None

    def get(self, ref_id: int) -> Reference:
        """The metadata of one reference; :class:`ReferenceNotFoundError` when unknown."""
        with self._mutex:
            self._check_open()
            rid = _check_id(ref_id)
            row = self._conn.execute(
                f"SELECT {_REF_COLUMNS} FROM refs WHERE id = ?", (rid,)
            ).fetchone()
            if row is None:
                raise ReferenceNotFoundError(f"no reference with id {rid}", source=str(self.path))
            return Reference(*row)

    def find(self, content_hash: str) -> int | None:
        """The id of the reference with this content hash, or None."""
        with self._mutex:
            self._check_open()
            row = self._conn.execute(
                "SELECT id FROM refs WHERE content_hash = ?", (str(content_hash),)
            ).fetchone()
            return None if row is None else int(row[0])

    def list(self, limit: int = 100, offset: int = 0) -> builtins.list[Reference]:
        """References in id order, ``limit`` at a time from ``offset``."""
        with self._mutex:
            self._check_open()
            limit = _check_count(limit, "limit", low=0)
            offset = _check_count(offset, "offset", low=0)
            rows = self._conn.execute(
                f"SELECT {_REF_COLUMNS} FROM refs ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
            return [Reference(*row) for row in rows]

    def blob(self, ref_id: int, name: str) -> bytes | None:
        """A reference's blob ``name``, or None when it has none of that name."""
        with self._mutex:
            self._check_open()
            rid = self._require(ref_id)
            row = self._conn.execute(
                "SELECT data FROM blobs WHERE ref_id = ? AND name = ?", (rid, name)
            ).fetchone()
            return None if row is None else bytes(row[0])

    def blob_ids(self, name: str) -> np.ndarray:
        """Ids (sorted int64) of the references that have a blob ``name``."""
        with self._mutex:
            self._check_open()
            rows = self._conn.execute(
                "SELECT ref_id FROM blobs WHERE name = ? ORDER BY ref_id", (name,)
            ).fetchall()
            return np.array([r[0] for r in rows], np.int64)

    def iter_blobs(self, name: str, ref_ids: Sequence[int] | None = None,
                   batch: int = 2000) -> Iterator[tuple[int, bytes]]:
        """``(ref_id, data)`` of every blob ``name`` (or of those of ``ref_ids``), by id.

        Reads in batches of ``batch`` references, each under the lock; a write between
        batches may or may not be seen."""
        ids = self.blob_ids(name) if ref_ids is None else np.asarray(list(ref_ids), np.int64)
        for start in range(0, len(ids), batch):
            chunk = [int(i) for i in ids[start:start + batch]]
            marks = ", ".join("?" * len(chunk))
            with self._mutex:
                self._check_open()
                rows = self._conn.execute(
                    f"SELECT ref_id, data FROM blobs WHERE name = ? AND ref_id IN ({marks}) "
                    "ORDER BY ref_id", (name, *chunk)).fetchall()
            for rid, data in rows:
                yield int(rid), bytes(data)

    def put_blob(self, ref_id: int, name: str, data: bytes) -> None:
        """Set (add or replace) a reference's blob ``name``; part of the open transaction."""
        with self._mutex:
            self._check_writable()
            rid = self._require(ref_id)
            if not isinstance(name, str) or not name or not isinstance(data, bytes | bytearray):
                raise IndexInputError("put_blob takes a non-empty str name and bytes data")
            self._begin()
            self._conn.execute("DELETE FROM blobs WHERE ref_id = ? AND name = ?", (rid, name))
            self._conn.execute("INSERT INTO blobs(ref_id, name, data) VALUES (?, ?, ?)",
                               (rid, name, bytes(data)))

    def vectors(self, ref_id: int, name: str) -> np.ndarray | None:
        """The stored rows of a reference in vector set ``name``, or None when it has none."""
        with self._mutex:
            self._check_open()
            vset = self._set(name)
            rid = self._require(ref_id)
            row = self._conn.execute(
                "SELECT data FROM vectors WHERE ref_id = ? AND set_id = ?", (rid, vset.id)
            ).fetchone()
            return None if row is None else _faiss.bytes_to_rows(vset.spec, row[0]).copy()

    def search(self, name: str, queries: np.ndarray, k: int) -> builtins.list[builtins.list[Hit]]:
        """The ``k`` best references per query row in vector set ``name``, best first.

        Each reference appears once, scored by its best row (``Hit.row`` says which). A 1-D
        ``queries`` is one query. Flat sets are exact; ties are broken by reference id.
        """
        with self._mutex:
            self._check_open()
            vset = self._set(name)
            if vset.spec.index == "none":
                raise IndexInputError(
                    f"vector set {name!r} is stored only (index='none'): it cannot be searched",
                    source=str(self.path))
            q = _faiss.coerce_rows(vset.spec, queries, what=f"queries for {name!r}")
            k = _check_count(k, "k", low=1)
            if vset.stale:
                self._rebuild(vset)
            total = int(vset.index.ntotal)
            if total == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            # k references need at most k * max_rows rows (each reference has <= max_rows rows)
            want = min(total, k * max(1, vset.max_rows))
            scores, labels = _faiss.search(vset.index, vset.spec, q, want)
        higher = vset.spec.higher_is_better
        out: builtins.list[builtins.list[Hit]] = []
        for score_row, label_row in zip(scores.tolist(), labels.tolist(), strict=True):
            best: dict[int, Hit] = {}
            for score, label in zip(score_row, label_row, strict=True):
                if label < 0:
                    break
                rid = label >> _faiss.ROW_BITS
                if rid not in best:
                    best[rid] = Hit(ref_id=rid, score=float(score), row=label & _ROW_MASK)
            hits = sorted(best.values(), key=lambda h: (-h.score if higher else h.score, h.ref_id))
            out.append(hits[:k])
        return out

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: references, rows and bytes per vector set, blobs, disk use."""
        with self._mutex:
            self._check_open()
            count = len(self)
            sets: dict[str, Any] = {}
            for name, vset in self._sets.items():
                rows = int(vset.index.ntotal)
                file = self._faiss_path(name)
                sets[name] = {
                    "kind": vset.spec.kind,
                    "dim": vset.spec.dim,
                    "metric": vset.spec.metric,
                    "index": vset.spec.index,
                    "rows": rows,
                    "vector_bytes": rows * vset.spec.row_bytes,
                    "id_bytes": rows * 8,
                    "file_bytes": _size(file),
                }
            n_blobs, blob_bytes = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM blobs"
            ).fetchone()
            disk = sum(_size(f) for f in self.path.rglob("*"))
            return {
                "count": count,
                "format_version": int(self._meta["format_version"]),
                "vector_sets": sets,
                "blobs": {"count": int(n_blobs), "bytes": int(blob_bytes)},
                "disk_bytes": disk,
                "bytes_per_reference": disk / count if count else None,
            }

    # --- internals -----------------------------------------------------------------

    def _faiss_path(self, name: str) -> Path:
        return self.path / VECTORS_DIR / f"{name}.faiss"

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise IndexReadOnlyError("the index was opened read-only", source=str(self.path))

    def _any_dirty(self) -> bool:
        return any(v.dirty or v.stale for v in self._sets.values())

    def _begin(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")

    def _set(self, name: str) -> _VectorSet:
        vset = self._sets.get(name) if isinstance(name, str) else None
        if vset is None:
            raise UnknownVectorSetError(
                f"no vector set {name!r}; this index has {sorted(self._sets)}",
                source=str(self.path),
            )
        return vset

    def _require(self, ref_id: object) -> int:
        rid = _check_id(ref_id)
        if self._conn.execute("SELECT 1 FROM refs WHERE id = ?", (rid,)).fetchone() is None:
            raise ReferenceNotFoundError(f"no reference with id {rid}", source=str(self.path))
        return rid

    def _prepare(self, item: object, position: int) -> _Prepared:
        """Validate one item before anything is written."""
        where = f"item {position}"
        if not isinstance(item, NewReference):
            raise IndexInputError(f"{where}: expected a NewReference, got {type(item).__name__}")
        content_hash = item.content_hash
        if not isinstance(content_hash, str) or not 0 < len(content_hash) <= _MAX_HASH_LEN:
            raise IndexInputError(
                f"{where}: content_hash must be a non-empty str of at most {_MAX_HASH_LEN} characters"
            )
        text = tuple(getattr(item, f) for f in _TEXT_FIELDS)
        for field_name, value in zip(_TEXT_FIELDS, text, strict=True):
            if value is not None and not isinstance(value, str):
                raise IndexInputError(
                    f"{where}: {field_name} must be a str or None, got {type(value).__name__}"
                )
        out = _Prepared(content_hash=content_hash, text=text)  # type: ignore[arg-type]
        if not isinstance(item.vectors, Mapping):
            raise IndexInputError(f"{where}: vectors must be a mapping of vector-set name to array")
        for name, value in item.vectors.items():
            vset = self._set(name)
            rows = _faiss.coerce_rows(vset.spec, value, what=f"{where}: vectors[{name!r}]")
            if len(rows):
                out.rows[name] = rows
        if not isinstance(item.blobs, Mapping):
            raise IndexInputError(f"{where}: blobs must be a mapping of name to bytes")
        for name, data in item.blobs.items():
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise IndexInputError(
                    f"{where}: a blob name must be a non-empty str of <= 128 characters"
                )
            if not isinstance(data, bytes | bytearray | memoryview):
                raise IndexInputError(
                    f"{where}: blob {name!r} must be bytes, got {type(data).__name__}"
                )
            out.blobs[name] = bytes(data)
        return out

    def _insert(
        self, prepared: builtins.list[_Prepared]
    ) -> tuple[builtins.list[AddResult], dict[str, builtins.list[tuple[int, np.ndarray]]]]:
        conn = self._conn
        now = _now()
        results: builtins.list[AddResult] = []
        new_rows: dict[str, builtins.list[tuple[int, np.ndarray]]] = {}
        vector_rows: builtins.list[tuple[int, int, int, bytes]] = []
        blob_rows: builtins.list[tuple[int, str, bytes]] = []
        known = self._known_hashes([p.content_hash for p in prepared])
        for p in prepared:
            existing = known.get(p.content_hash)
            if existing is not None:
                results.append(AddResult(id=existing, duplicate_of=existing))
                continue
            cur = conn.execute(
                "INSERT INTO refs(content_hash, source, owner, license, notes, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (p.content_hash, *p.text, now),
            )
            rid = int(cur.lastrowid)  # type: ignore[arg-type]
            known[p.content_hash] = rid
            results.append(AddResult(id=rid))
            for name, rows in p.rows.items():
                vset = self._sets[name]
                vector_rows.append((rid, vset.id, len(rows), _faiss.rows_to_bytes(vset.spec, rows)))
                new_rows.setdefault(name, []).append((rid, rows))
            blob_rows.extend((rid, name, data) for name, data in p.blobs.items())
        conn.executemany(
            "INSERT INTO vectors(ref_id, set_id, n_rows, data) VALUES (?, ?, ?, ?)", vector_rows
        )
        conn.executemany("INSERT INTO blobs(ref_id, name, data) VALUES (?, ?, ?)", blob_rows)
        return results, new_rows

    def _known_hashes(self, hashes: builtins.list[str]) -> dict[str, int]:
        """``content_hash -> id`` for those of ``hashes`` already stored."""
        unique = sorted(set(hashes))
        known: dict[str, int] = {}
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT content_hash, id FROM refs WHERE content_hash IN ({marks})"
            known.update((h, int(i)) for h, i in self._conn.execute(query, chunk))
        return known

    def _stored(self, vset: _VectorSet) -> tuple[np.ndarray, np.ndarray]:
        """``(ref_ids, n_rows)`` of a vector set in SQLite, by reference id."""
        rows = self._conn.execute(
            "SELECT ref_id, n_rows FROM vectors WHERE set_id = ? ORDER BY ref_id", (vset.id,)
        ).fetchall()
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def _rebuild(self, vset: _VectorSet) -> None:
        """Rebuild a vector set's FAISS index from the vectors stored in SQLite."""
        if vset.spec.index == "none":  # ids only: no vector is read
            ref_ids, counts = self._stored(vset)
            vset.index = _faiss.StoredOnly(_faiss.expected_labels(ref_ids, counts))
            vset.max_rows = int(counts.max(initial=0))
            vset.stale = vset.dirty = False
            return
        index = _faiss.new_index(vset.spec)
        ref_ids: builtins.list[int] = []
        counts: builtins.list[int] = []
        chunks: builtins.list[np.ndarray] = []
        cursor = self._conn.execute(
            "SELECT ref_id, n_rows, data FROM vectors WHERE set_id = ? ORDER BY ref_id", (vset.id,)
        )
        for rid, n_rows, data in cursor:
            rows = _faiss.bytes_to_rows(vset.spec, data)
            if len(rows) != n_rows:
                raise IndexFormatError(
                    f"corrupt vectors of reference {rid} in set {vset.name!r}",
                    source=str(self.path),
                )
            ref_ids.append(rid)
            counts.append(n_rows)
            chunks.append(rows)
        if chunks:
            _faiss.add(
                index,
                np.concatenate(chunks),
                _faiss.expected_labels(np.array(ref_ids), np.array(counts)),
            )
        vset.index = index
        vset.max_rows = max(counts, default=0)
        vset.stale = False
        vset.dirty = True

    def _load_sets(self, sets: builtins.list[_VectorSet]) -> None:
        """Load FAISS files and check them against SQLite; rebuild (and rewrite) on mismatch."""
        repaired: builtins.list[str] = []
        with self._mutex:
            self._conn.execute("BEGIN")  # one snapshot for the checks and any rebuild
            try:
                for vset in sets:
                    if vset.spec.index == "none":  # nothing to check: ids from the database
                        self._rebuild(vset)
                        continue
                    ref_ids, counts = self._stored(vset)
                    index = _faiss.read_index(self._faiss_path(vset.name), vset.spec)
                    expected = _faiss.expected_labels(ref_ids, counts)
                    if index is not None and np.array_equal(
                        np.sort(_faiss.labels_of(index)), expected
                    ):
                        vset.index = index
                        vset.max_rows = int(counts.max(initial=0))
                        vset.stale = vset.dirty = False
                    else:
                        self._rebuild(vset)
                        repaired.append(vset.name)
            finally:
                self._conn.execute("COMMIT")
            if not self.read_only:
                for vset in sets:
                    if vset.dirty:
                        _faiss.write_index(vset.index, vset.spec, self._faiss_path(vset.name))
                        vset.dirty = False
        self.repaired = tuple(repaired)


def _size(path: Path) -> int:
    """Size of a regular file, 0 for anything else, or when it vanished meanwhile (a
    writer's temporary file renamed between the listing and the stat)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _insert_set(conn: sqlite3.Connection, name: str, spec: VectorSpec) -> int:
    cur = conn.execute(
        "INSERT INTO vector_sets(name, kind, dim, metric, index_type, params) VALUES (?, ?, ?, ?, ?, ?)",
        (
            name,
            spec.kind,
            spec.dim,
            spec.metric,
            spec.index,
            json.dumps(spec.to_params(), sort_keys=True),
        ),
    )
    return int(cur.lastrowid)  # type: ignore[arg-type]
