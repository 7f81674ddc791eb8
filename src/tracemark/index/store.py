"""The persistent reference index: metadata and vectors in a database (SQLite or PostgreSQL,
through SQLAlchemy Core), search structures in a vector store (FAISS files or Milvus).

An index is a directory::

    index.sqlite          metadata, raw vectors, blobs, documents (WAL mode) -- the truth
                          (absent when the metadata lives in PostgreSQL: database.json names
                          the schema)
    vectors/<name>.faiss  one FAISS index per vector set -- a cache, rebuilt when it disagrees
                          (absent when the vectors live in Milvus)
    write.lock            advisory lock held by the one writer (POSIX; not taken when both
                          metadata and vectors live on servers: replicas then write at once)

Writes go to an open database transaction and to the vector store; ``commit()`` (also
``close()`` and a clean ``with`` exit) commits the database first, then flushes the store
(FAISS writes each changed file to a temp file and renames it into place; Milvus is durable
on each write). A crash between the two leaves a store that disagrees with the database;
``Index.open`` notices (it compares the store's labels with the rows in the database) and
rebuilds the sets that disagree from the stored vectors. A rollback puts the store's rows of
every reference the transaction touched back to what the database holds. See
``docs/index-format.md``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import stat
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import sqlalchemy as sa

from tracemark._lifecycle import Resource
from tracemark.errors import ConfigError
from tracemark.index import _faiss
from tracemark.index._schema import (
    DB_ERRORS,
    FORMAT_NAME,
    FORMAT_VERSION,
    _db_name,
    _reason,
    blobs,
    changes,
    check_format,
    create_tables,
    documents,
    load_vector_sets,
    meta,
    migrate,
    refs,
    vector_sets,
    vectors,
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
from tracemark.index.vectors import (
    ROW_BITS,
    VectorStore,
    VectorStoreURL,
    open_vector_store,
    parse_vector_url,
)

__all__ = ["Index", "SQLITE_NAME", "VECTORS_DIR", "LOCK_NAME"]

SQLITE_NAME = "index.sqlite"
VECTORS_DIR = "vectors"
LOCK_NAME = "write.lock"
DATABASE_NAME = "database.json"

_MAX_HASH_LEN = 512
_TEXT_FIELDS = ("source", "owner", "license", "notes")
_ROW_MASK = (1 << ROW_BITS) - 1
_REF_COLUMNS = (refs.c.id, refs.c.content_hash, refs.c.source, refs.c.owner, refs.c.license,
                refs.c.notes, refs.c.added_at)
_MAX_SEARCH_ROWS = 16384
"""Rows one search asks a server store for at most (Milvus' topk limit)."""


@dataclass
class _VectorSet:
    """What the index knows of one vector set (its rows are in the database and the store)."""

    id: int
    name: str
    spec: VectorSpec
    max_rows: int = 0
    rows: int = 0  # stored-only sets: rows in the database


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


MAX_DOCUMENT_NAME = 256
"""The longest document name, characters (was 128 before the guard's concept documents,
``guard.concept.<id>`` with ids of up to 120; the column is unbounded text)."""


def _check_document_name(name: object) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_DOCUMENT_NAME or "\x00" in name:
        raise IndexInputError(f"a document name must be a non-empty str of <= "
                              f"{MAX_DOCUMENT_NAME} characters, without NUL")


def _check_count(value: object, what: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise IndexInputError(f"{what} must be an int >= {low}, got {value!r}")
    return int(value)


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


def _sqlite_engine(path: Path, *, read_only: bool) -> sa.Engine:
    """The engine of ``index.sqlite``: autocommit at the driver, explicit ``BEGIN`` from
    SQLAlchemy (``BEGIN IMMEDIATE`` on a writer's connections, so a write transaction
    holds SQLite's write lock from its start), WAL with synchronous=FULL for a writer,
    ``mode=ro`` (and ``immutable=1`` on read-only media) for a reader."""
    import sqlite3

    db = path / SQLITE_NAME

    def connect() -> sqlite3.Connection:
        if read_only:
            uri = f"{db.resolve().as_uri()}?mode=ro"
            if not os.access(path, os.W_OK):  # read-only media: WAL needs a writable -shm
                uri += "&immutable=1"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        return conn

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool,
                              pool_size=2, max_overflow=8)

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("tracemark_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _pg_engine(url: str, schema: str, *, read_only: bool, create: bool = False) -> sa.Engine:
    """An engine whose unqualified tables live in PostgreSQL schema ``schema`` (created when
    ``create``); read-only sessions for a reader."""
    from tracemark._db import _SCHEMA_RE
    from tracemark._optional import require

    require("psycopg", "service", purpose="a PostgreSQL index")
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise ConfigError(f"not a usable schema name: {schema!r}")
    args = {"options": "-c default_transaction_read_only=on"} if read_only else {}
    try:
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"unusable database URL: {exc}") from None
    if engine.dialect.name != "postgresql":
        raise ConfigError(f"an index database URL must be PostgreSQL, got {engine.dialect.name!r}")
    if create:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    return engine.execution_options(schema_translate_map={None: schema})


class Index(Resource):
    """A persistent collection of references, each with vectors in named sets, metadata and blobs.

    Build one with :meth:`create`, reopen it with :meth:`open`; use it as a context manager
    (a clean exit commits, an exception rolls back) or call :meth:`commit` and :meth:`close`.
    One writer at a time (processes sharing PostgreSQL and Milvus excepted: their write
    transactions are serialised by the database); any number of ``read_only`` readers (a
    FAISS reader's search sees the vectors as of its open or last :meth:`refresh`; a Milvus
    reader's sees every commit). Methods are serialised by a lock, so an object may be shared
    between threads.
    """

    _closed_error = IndexClosedError
    _noun = "index"

    path: Path
    read_only: bool
    backend: str
    vector_url: VectorStoreURL
    _engine: sa.Engine
    _wconn: sa.Connection | None
    _snap: sa.Connection | None
    _vstore: VectorStore
    _lock_file: IO[bytes] | None
    _meta: dict[str, str]
    _sets: dict[str, _VectorSet]
    _touched: dict[str, set[int]]
    _new_sets: set[str]
    _seen_change: int
    _after: int
    #: Names of the vector sets whose store copy was missing, unreadable or inconsistent with
    #: the database when last loaded, and so were rebuilt from the stored vectors.
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
        vectors: str | None = None,
    ) -> Index:
        """Create a new, empty index at ``path`` (a new or empty directory) and open it for writing.

        With ``database_url`` (PostgreSQL) and ``schema``, the metadata and raw vectors go to
        that schema (which must not hold an index yet) instead of ``index.sqlite``; the
        directory keeps the FAISS files, the writer lock and ``database.json`` naming the
        schema. ``vectors`` is a vector-store URL (:func:`~tracemark.index.vectors.parse_vector_url`:
        ``None``/``"faiss"`` for FAISS files in the directory, ``milvus://host:port`` for a
        Milvus server); the index records it (without credentials) in its metadata.
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
        url = parse_vector_url(vectors)
        uid = uuid.uuid4().hex
        existed = path.exists()
        path.mkdir(parents=True, exist_ok=True)
        engine: sa.Engine | None = None
        try:
            (path / VECTORS_DIR).mkdir()
            if database_url is not None:
                engine = _pg_engine(database_url, str(schema), read_only=False, create=True)
                with engine.connect() as conn:
                    if sa.inspect(conn).has_table("meta", schema=schema):
                        raise IndexExistsError(f"schema {schema!r} already holds an index",
                                               source=str(path))
                (path / DATABASE_NAME).write_text(json.dumps(
                    {"backend": "postgresql", "schema": schema}) + "\n")
            else:
                engine = _sqlite_engine(path, read_only=False)
            with engine.begin() as conn:
                create_tables(conn)
                conn.execute(meta.insert(), [
                    {"key": k, "value": v} for k, v in [
                        ("format", FORMAT_NAME),
                        ("format_version", str(FORMAT_VERSION)),
                        ("created_by", f"tracemark {__version__}"),
                        ("created_at", _now()),
                        ("uid", uid),
                        ("vector_store", url.redacted()),
                    ]])
                for name, spec in vector_specs.items():
                    _insert_set(conn, name, spec)
            store = open_vector_store(url, namespace=_namespace(uid), path=path)
            try:
                for name, spec in vector_specs.items():
                    if spec.index != "none":
                        store.open_set(name, spec)
                store.flush()
            finally:
                store.close()
        except BaseException:
            if engine is not None:
                engine.dispose()
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
        engine.dispose()
        return cls.open(path, database_url=database_url, vectors=vectors)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        database_url: str | None = None,
        vectors: str | None = None,
    ) -> Index:
        """Open an existing index; check its format and its vector store's consistency.

        ``vectors`` overrides the vector-store URL the index recorded (to pass credentials
        or another address of the same server; the scheme must match). Raises
        :class:`IndexNotFoundError` for a missing path, :class:`IndexFormatError` for a
        foreign, corrupt or newer-format directory or an unreachable database,
        :class:`IndexLockedError` when another writer holds it (``read_only=False`` only),
        :class:`~tracemark.errors.ConfigError` for a vector-store URL of another kind than
        the recorded one.
        """
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise IndexNotFoundError("no index at this path", source=source)
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
            engine = _pg_engine(database_url, schema, read_only=read_only)
            backend = "postgresql"
        elif database_url is not None:
            raise IndexFormatError(f"not a PostgreSQL-backed index (no {DATABASE_NAME})",
                                   source=source)
        elif not path.is_dir() or not (path / SQLITE_NAME).is_file():
            raise IndexFormatError(f"not a tracemark index (no {SQLITE_NAME})", source=source)
        else:
            engine = _sqlite_engine(path, read_only=read_only)
            backend = "sqlite"
        lock: IO[bytes] | None = None
        store: VectorStore | None = None
        wconn: sa.Connection | None = None
        try:
            try:
                with engine.connect() as conn:
                    found = check_format(conn, source=source)
                    specs = load_vector_sets(conn, source=source)
            except DB_ERRORS as exc:
                if backend == "postgresql" and isinstance(exc, sa.exc.OperationalError):
                    raise IndexFormatError(f"cannot connect to PostgreSQL ({_reason(exc)})",
                                           source=source) from exc
                raise IndexFormatError(f"the index's {_db_name(engine)} database is not "
                                       f"readable ({_reason(exc)})", source=source) from exc
            recorded = parse_vector_url(found.get("vector_store", "faiss"))
            url = recorded if vectors is None else parse_vector_url(vectors)
            if url.scheme != recorded.scheme:
                raise ConfigError(
                    f"this index keeps its vectors in {recorded.redacted()}, not "
                    f"{url.redacted()}", source=source)
            if url.scheme != "faiss" and "uid" not in found:
                raise IndexFormatError("corrupt index: no uid for its vector-store namespace",
                                       source=source)
            store = open_vector_store(url, namespace=_namespace(found.get("uid", "")),
                                      path=path)
            shared_writers = store.shared and backend == "postgresql"
            if not read_only and not shared_writers:
                lock = _acquire_lock(path)
            if not read_only:
                wconn = engine.connect().execution_options(tracemark_write=True)
                try:
                    with wconn.begin():
                        if backend == "postgresql":
                            _pg_serialise(wconn)
                        found = migrate(wconn, found)
                        if "uid" not in found:  # format-1 indexes had none
                            found["uid"] = uuid.uuid4().hex
                            wconn.execute(meta.insert().values(key="uid", value=found["uid"]))
                except DB_ERRORS as exc:
                    raise IndexFormatError(f"cannot write the index database ({_reason(exc)})",
                                           source=source) from exc
            self = cls.__new__(cls)
            self.path = path
            self.read_only = read_only
            self.backend = backend
            self.vector_url = url
            self.repaired = ()
            self._engine = engine
            self._wconn = wconn
            self._snap = None
            self._vstore = store
            self._lock_file = lock
            self._init_resource()
            self._meta = found
            self._touched = {}
            self._new_sets = set()
            self._sets = {
                name: _VectorSet(id=set_id, name=name, spec=spec)
                for name, (set_id, spec) in specs.items()
            }
            self._seen_change, self._after = self._log_tail()
            self._load_sets(list(self._sets.values()))
        except BaseException:
            if wconn is not None:
                wconn.close()
            if store is not None:
                store.close()
            engine.dispose()
            if lock is not None:
                lock.close()
            raise
        return self

    @classmethod
    def attach(cls, path: str | os.PathLike[str], *, schema: str) -> Path:
        """Make ``path`` (a missing or empty directory) the local directory of an index whose
        metadata already lives in PostgreSQL schema ``schema`` (created elsewhere, by another
        replica): it writes ``database.json`` naming the schema, and the folder of FAISS
        files (used only when the index keeps its vectors in FAISS). Open it with
        :meth:`open` and the database URL. Raises :class:`IndexExistsError` for a directory
        that is not empty, :class:`~tracemark.errors.ConfigError` for a bad schema name."""
        from tracemark._db import _SCHEMA_RE

        path = Path(path)
        if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
            raise ConfigError(f"not a usable schema name: {schema!r}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise IndexExistsError("path exists and is not an empty directory", source=str(path))
        (path / VECTORS_DIR).mkdir(parents=True, exist_ok=True)
        (path / DATABASE_NAME).write_text(json.dumps(
            {"backend": "postgresql", "schema": schema}) + "\n")
        return path

    @classmethod
    def drop_vectors(cls, path: str | os.PathLike[str], *, database_url: str | None = None,
                     vectors: str | None = None) -> None:
        """Delete the sets of the (closed) index at ``path`` from its vector store -- the
        Milvus collections; nothing for FAISS, whose files are in the directory -- before
        the index itself (directory, database schema) is deleted. The database is only
        read. Raises what :meth:`open` raises for an index it cannot read."""
        handle = cls.open(path, read_only=True, database_url=database_url, vectors=vectors)
        try:
            for name in list(handle._sets):
                handle._vstore.drop_set(name)
        finally:
            handle.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("read-only" if self.read_only else "writable")
        return f"Index({str(self.path)!r}, {state}, sets={sorted(self._sets)})"

    @property
    def uid(self) -> str:
        """The index's unique id (its namespace in a shared vector store)."""
        return self._meta.get("uid", "")

    @property
    def shared(self) -> bool:
        """True when the vectors live in a server store (Milvus): every search sees what
        other processes committed (the database is asked which hits are committed
        references, and which references were added or removed since). With the metadata in
        PostgreSQL too, other processes may also write at the same time (no writer lock)."""
        return self._vstore.shared

    # --- transactions --------------------------------------------------------------

    def commit(self, *, write_vectors: bool = True) -> None:
        """Make pending writes durable: commit the database, then flush the vector store.

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
        assert self._wconn is not None
        if self._wconn.in_transaction():
            try:
                self._wconn.commit()
            except DB_ERRORS as exc:
                self._rollback()
                raise IndexFormatError(f"the database refused the commit ({_reason(exc)}); "
                                       "nothing was written", source=str(self.path)) from exc
        self._touched = {}
        self._new_sets = set()
        if write_vectors:
            self._vstore.flush()

    def _rollback(self) -> None:
        """Discard writes since the last commit (database, and the store's rows of every
        reference the transaction touched)."""
        if self.read_only:
            return
        assert self._wconn is not None
        if self._wconn.in_transaction():
            self._wconn.rollback()
        touched, self._touched = self._touched, {}
        new_sets, self._new_sets = self._new_sets, set()
        for name in new_sets:
            self._sets.pop(name, None)
            self._vstore.drop_set(name)
        specs = self._read_specs()
        for name in [n for n in self._sets if n not in specs]:
            del self._sets[name]
        for name, ids in touched.items():
            vset = self._sets.get(name)
            if vset is None or vset.spec.index == "none" or not ids:
                continue
            self._resync(vset, np.fromiter(ids, np.int64, len(ids)))
        for vset in self._sets.values():
            if vset.spec.index == "none":
                vset.rows = self._stored_rows(vset)

    def _release(self) -> None:
        try:
            self._vstore.close()
        finally:
            if self._wconn is not None:
                self._wconn.close()
            self._engine.dispose()
            if self._lock_file is not None:
                self._lock_file.close()

    def _closed_source(self) -> str:
        return str(self.path)

    @property
    def in_transaction(self) -> bool:
        """Whether this handle holds database writes not yet committed (always False for a
        read-only or closed handle). What a cache derived from the database, such as the
        copy-detection inverted file, checks before it writes itself to disk."""
        return (not self.read_only and not self._closed and self._wconn is not None
                and self._wconn.in_transaction())

    def refresh(self) -> None:
        """Reload the vector sets (a FAISS reader picks up the writer's flushed commits)."""
        with self._mutex:
            self._check_open()
            if self.in_transaction or self._touched:
                raise IndexInputError("commit or roll back before refresh()", source=str(self.path))
            specs = self._read_specs()
            self._sets = {
                name: _VectorSet(id=set_id, name=name, spec=spec)
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
        added again; their result carries ``duplicate_of``. Raises
        :class:`~tracemark.errors.IndexStoreError` (a subclass) when the vector store
        refuses the rows; the database writes of the call are then undone.
        """
        with self._mutex:
            self._check_writable()
            prepared = [self._prepare(item, i) for i, item in enumerate(items)]
            if not prepared:
                return []
            conn = self._begin()
            for attempt in (0, 1):
                savepoint = conn.begin_nested()
                try:
                    results, new_rows = self._insert(conn, prepared)
                    savepoint.commit()
                    break
                except sa.exc.IntegrityError as exc:
                    savepoint.rollback()  # a concurrent writer registered one of the hashes
                    if attempt:
                        raise IndexInputError(f"the database refused the references "
                                              f"({_reason(exc)})", source=str(self.path)) from exc
                except BaseException:
                    savepoint.rollback()
                    raise
            for name, parts in new_rows.items():
                vset = self._sets[name]
                ids = np.array([rid for rid, _ in parts], np.int64)
                vset.max_rows = max(vset.max_rows, max(len(r) for _, r in parts))
                if vset.spec.index == "none":
                    vset.rows += sum(len(r) for _, r in parts)
                    continue
                self._touched.setdefault(name, set()).update(ids.tolist())
                rows = np.concatenate([r for _, r in parts])
                labels = _faiss.expected_labels(ids, np.array([len(r) for _, r in parts]))
                self._vstore.add(name, labels, rows)
            added = [r.id for r in results if r.duplicate_of is None]
            if added:  # logged after the store's writes: their token says what to wait for
                token = self._vstore.write_token()
                conn.execute(changes.insert(), [{"ref_id": rid, "op": "add", "ts": token}
                                                for rid in added])
            return results

    def remove(self, ref_id: int) -> bool:
        """Remove a reference (metadata, vectors, blobs); False when the id is unknown."""
        with self._mutex:
            self._check_writable()
            rid = _check_id(ref_id)
            conn = self._begin()
            if conn.execute(sa.select(refs.c.id).where(refs.c.id == rid)).first() is None:
                return False
            set_ids = {r[0] for r in conn.execute(
                sa.select(vectors.c.set_id).where(vectors.c.ref_id == rid))}
            conn.execute(vectors.delete().where(vectors.c.ref_id == rid))
            conn.execute(blobs.delete().where(blobs.c.ref_id == rid))
            conn.execute(refs.delete().where(refs.c.id == rid))
            for vset in self._sets.values():
                if vset.id not in set_ids:
                    continue
                if vset.spec.index == "none":
                    vset.rows = self._stored_rows(vset)
                    continue
                self._touched.setdefault(vset.name, set()).add(rid)
                self._vstore.remove(vset.name, np.array([rid], np.int64))
            conn.execute(changes.insert().values(ref_id=rid, op="remove",
                                                 ts=self._vstore.write_token()))
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
            conn = self._begin()
            set_id = _insert_set(conn, name, spec)
            vset = _VectorSet(id=set_id, name=name, spec=spec)
            self._sets[name] = vset
            self._new_sets.add(name)
            if spec.index != "none":
                self._vstore.drop_set(name)  # a set of that name left by a crashed writer
                self._vstore.open_set(name, spec, self._row_source(vset))

    def put_document(self, name: str, data: bytes) -> None:
        """Set (add or replace) the document ``name`` kept with the metadata (e.g. the
        copy-detection calibration); part of the open transaction. Raises
        :class:`IndexInputError` for a name that is not a non-empty str of at most
        :data:`MAX_DOCUMENT_NAME` characters without NUL, or data that is not bytes."""
        with self._mutex:
            self._check_writable()
            _check_document_name(name)
            if not isinstance(data, bytes | bytearray):
                raise IndexInputError(f"document {name!r} must be bytes, got "
                                      f"{type(data).__name__}")
            conn = self._begin()
            conn.execute(documents.delete().where(documents.c.name == name))
            conn.execute(documents.insert().values(name=name, data=bytes(data),
                                                   updated_at=_now()))

    def delete_document(self, name: str) -> bool:
        """Delete the document ``name``; whether there was one. Part of the open
        transaction (a rollback brings it back). Raises :class:`IndexInputError` for a bad
        name (as :meth:`put_document`), :class:`IndexReadOnlyError` on a read-only index."""
        with self._mutex:
            self._check_writable()
            _check_document_name(name)
            conn = self._begin()
            return conn.execute(documents.delete().where(documents.c.name == name)).rowcount > 0

    # --- reads ---------------------------------------------------------------------

    @property
    def vector_specs(self) -> dict[str, VectorSpec]:
        """The vector sets of this index, by name."""
        return {name: vset.spec for name, vset in self._sets.items()}

    def __len__(self) -> int:
        with self._mutex:
            self._check_open()
            with self._read() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(refs)).scalar_one())

    def __contains__(self, ref_id: object) -> bool:
        with self._mutex:
            self._check_open()
            if isinstance(ref_id, bool) or not isinstance(ref_id, int | np.integer):
                return False
            if not -(2**63) <= int(ref_id) < 2**63:
                return False
            with self._read() as conn:
                return conn.execute(sa.select(refs.c.id).where(
                    refs.c.id == int(ref_id))).first() is not None

    def get(self, ref_id: int) -> Reference:
        """The metadata of one reference; :class:`ReferenceNotFoundError` when unknown."""
        with self._mutex:
            self._check_open()
            rid = _check_id(ref_id)
            with self._read() as conn:
                row = conn.execute(sa.select(*_REF_COLUMNS).where(refs.c.id == rid)).first()
            if row is None:
                raise ReferenceNotFoundError(f"no reference with id {rid}", source=str(self.path))
            return Reference(*row)

    def registered(self, ref_ids: Iterable[int]) -> set[int]:
        """Those of ``ref_ids`` that are references of this index (the open transaction's
        own writes included), in queries of at most 5,000 ids. Raises
        :class:`IndexInputError` for an id that is not an int in int64 range."""
        with self._mutex:
            self._check_open()
            ids = sorted({_check_id(r) for r in ref_ids})
            out: set[int] = set()
            with self._read() as conn:
                for start in range(0, len(ids), 5000):
                    out |= {int(r[0]) for r in conn.execute(sa.select(refs.c.id).where(
                        refs.c.id.in_(ids[start:start + 5000])))}
            return out

    def find(self, content_hash: str) -> int | None:
        """The id of the reference with this content hash, or None."""
        with self._mutex:
            self._check_open()
            if "\x00" in str(content_hash):  # never stored (PostgreSQL text cannot hold it)
                return None
            with self._read() as conn:
                row = conn.execute(sa.select(refs.c.id).where(
                    refs.c.content_hash == str(content_hash))).first()
            return None if row is None else int(row[0])

    def list(self, limit: int = 100, offset: int = 0) -> builtins.list[Reference]:
        """References in id order, ``limit`` at a time from ``offset``."""
        with self._mutex:
            self._check_open()
            limit = _check_count(limit, "limit", low=0)
            offset = _check_count(offset, "offset", low=0)
            with self._read() as conn:
                rows = conn.execute(sa.select(*_REF_COLUMNS).order_by(refs.c.id)
                                    .limit(limit).offset(offset)).all()
            return [Reference(*row) for row in rows]

    def blob(self, ref_id: int, name: str) -> bytes | None:
        """A reference's blob ``name``, or None when it has none of that name."""
        with self._mutex:
            self._check_open()
            with self._read() as conn:
                rid = self._require(conn, ref_id)
                if "\x00" in str(name):  # never stored
                    return None
                row = conn.execute(sa.select(blobs.c.data).where(
                    blobs.c.ref_id == rid, blobs.c.name == str(name))).first()
            return None if row is None else bytes(row[0])

    def blob_ids(self, name: str) -> np.ndarray:
        """Ids (sorted int64) of the references that have a blob ``name``."""
        with self._mutex:
            self._check_open()
            if not isinstance(name, str) or "\x00" in name:  # never stored
                return np.empty(0, np.int64)
            with self._read() as conn:
                rows = conn.execute(sa.select(blobs.c.ref_id).where(blobs.c.name == name)
                                    .order_by(blobs.c.ref_id)).all()
            return np.array([r[0] for r in rows], np.int64)

    def iter_blobs(self, name: str, ref_ids: Sequence[int] | None = None,
                   batch: int = 2000) -> Iterator[tuple[int, bytes]]:
        """``(ref_id, data)`` of every blob ``name`` (or of those of ``ref_ids``), by id.

        Reads in batches of ``batch`` references, each under the lock; a write between
        batches may or may not be seen."""
        ids = self.blob_ids(name) if ref_ids is None else np.asarray(list(ref_ids), np.int64)
        for start in range(0, len(ids), batch):
            chunk = [int(i) for i in ids[start:start + batch]]
            with self._mutex:
                self._check_open()
                with self._read() as conn:
                    rows = conn.execute(
                        sa.select(blobs.c.ref_id, blobs.c.data)
                        .where(blobs.c.name == name, blobs.c.ref_id.in_(chunk))
                        .order_by(blobs.c.ref_id)).all()
            for rid, data in rows:
                yield int(rid), bytes(data)

    def put_blob(self, ref_id: int, name: str, data: bytes) -> None:
        """Set (add or replace) a reference's blob ``name``; part of the open transaction."""
        with self._mutex:
            self._check_writable()
            if not isinstance(name, str) or not 0 < len(name) <= 128 or "\x00" in name \
                    or not isinstance(data, bytes | bytearray):
                raise IndexInputError("put_blob takes a non-empty str name of <= 128 "
                                      "characters, without NUL, and bytes data")
            conn = self._begin()
            rid = self._require(conn, ref_id)
            conn.execute(blobs.delete().where(blobs.c.ref_id == rid, blobs.c.name == name))
            conn.execute(blobs.insert().values(ref_id=rid, name=name, data=bytes(data)))

    def document(self, name: str) -> bytes | None:
        """The document ``name`` kept with the metadata, or None (also for a format-1 index
        opened read-only, which has no documents)."""
        with self._mutex:
            self._check_open()
            if int(self._meta["format_version"]) < 2 or "\x00" in str(name):
                return None
            with self._read() as conn:
                row = conn.execute(sa.select(documents.c.data).where(
                    documents.c.name == str(name))).first()
            return None if row is None else bytes(row[0])

    def document_names(self, prefix: str = "") -> builtins.list[str]:
        """The names of the documents that start with ``prefix`` (compared code point by
        code point, case-sensitive), sorted; the open transaction's own writes included.
        Empty for a format-1 index opened read-only. Raises :class:`IndexInputError` when
        ``prefix`` is not a str."""
        return builtins.list(self._documents(prefix, data=False))

    def documents(self, prefix: str = "") -> dict[str, bytes]:
        """``{name: data}`` of the documents whose names start with ``prefix``, in name
        order, read in one query (as :meth:`document_names`)."""
        return self._documents(prefix, data=True)

    def _documents(self, prefix: str, *, data: bool) -> dict[str, bytes]:
        with self._mutex:
            self._check_open()
            if not isinstance(prefix, str):
                raise IndexInputError(f"a document prefix must be a str, got "
                                      f"{type(prefix).__name__}")
            if int(self._meta["format_version"]) < 2 or "\x00" in prefix:
                return {}
            cols = (documents.c.name, documents.c.data) if data else (documents.c.name,)
            query = sa.select(*cols)
            if prefix:  # substr, not LIKE: no wildcard in a name needs escaping
                query = query.where(sa.func.substr(documents.c.name, 1, len(prefix)) == prefix)
            with self._read() as conn:
                rows = [(str(r[0]), bytes(r[1]) if data else b"") for r in conn.execute(query)]
            return dict(sorted(r for r in rows if r[0].startswith(prefix)))

    def changes(self, since: int, limit: int = 100_000) -> builtins.list[tuple[int, int, str]]:
        """Committed changes after sequence number ``since``: ``(seq, ref_id, op)`` with op
        ``"add"`` or ``"remove"``, oldest first, at most ``limit``. Writers are serialised,
        so sequence numbers appear in commit order: a process that remembers the last
        ``seq`` it applied misses nothing. Empty for a format-1 index opened read-only.
        Raises :class:`IndexInputError` when ``since`` or ``limit`` is not an int >= 0."""
        with self._mutex:
            self._check_open()
            since = _check_count(since, "since", low=0)
            limit = _check_count(limit, "limit", low=0)
            return [(seq, rid, op) for seq, rid, op, _ in self._change_rows(since, limit)]

    def last_change(self) -> int:
        """The sequence number of the last committed change (0 when none)."""
        with self._mutex:
            self._check_open()
            return self._last_change()

    def store_labels(self, name: str) -> np.ndarray:
        """The labels (``ref_id << 16 | row``, int64, any order) the vector store holds for
        set ``name`` -- what a consistency check compares with the database (a stored-only
        set's come from the database)."""
        with self._mutex:
            self._check_open()
            vset = self._set(name)
            if vset.spec.index == "none":
                return _faiss.expected_labels(*self._stored(vset))
            return self._vstore.labels(name)

    def vectors(self, ref_id: int, name: str) -> np.ndarray | None:
        """The stored rows of a reference in vector set ``name``, or None when it has none."""
        with self._mutex:
            self._check_open()
            vset = self._set(name)
            with self._read() as conn:
                rid = self._require(conn, ref_id)
                row = conn.execute(sa.select(vectors.c.data).where(
                    vectors.c.ref_id == rid, vectors.c.set_id == vset.id)).first()
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
            if len(q) == 0:
                return []
            live: set[int] | None = None
            if not self.shared:
                total = self._vstore.count(name)
                if total == 0:
                    return [[] for _ in range(len(q))]
                # k references need at most k * max_rows rows (each has <= max_rows rows)
                want = min(total, k * max(1, vset.max_rows))
                scores, labels = self._vstore.search(name, q, want)
            else:
                self._follow_changes()
                want = min(_MAX_SEARCH_ROWS, k * max(1, vset.max_rows))
                after = self._after
        if self.shared:
            # a server store is searched without the lock (its client is thread-safe), so
            # one process serves several searches at once; it sees at least every write
            # the change log has shown this handle (after)
            scores, labels = self._vstore.search(name, q, want, after=after)
            with self._mutex:
                self._check_open()
                # rows of references another process added but has not committed
                found = {int(lab) >> ROW_BITS for lab in labels.ravel() if lab >= 0}
                live = self._existing(found)
        higher = vset.spec.higher_is_better
        out: builtins.list[builtins.list[Hit]] = []
        for score_row, label_row in zip(scores.tolist(), labels.tolist(), strict=True):
            best: dict[int, Hit] = {}
            for score, label in zip(score_row, label_row, strict=True):
                if label < 0:
                    break
                rid = label >> ROW_BITS
                if rid not in best and (live is None or rid in live):
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
                if vset.spec.index == "none":
                    figures: dict[str, Any] = {"rows": vset.rows, "file_bytes": 0}
                else:
                    figures = self._vstore.set_stats(name)
                rows = int(figures["rows"])
                sets[name] = {
                    "kind": vset.spec.kind,
                    "dim": vset.spec.dim,
                    "metric": vset.spec.metric,
                    "index": vset.spec.index,
                    "rows": rows,
                    "vector_bytes": rows * vset.spec.row_bytes,
                    "id_bytes": rows * 8,
                    "file_bytes": int(figures.get("file_bytes", 0)),
                }
            with self._read() as conn:
                n_blobs, blob_bytes = conn.execute(
                    sa.select(sa.func.count(), sa.func.coalesce(
                        sa.func.sum(sa.func.length(blobs.c.data)), 0))).one()
            disk = sum(_size(f) for f in self.path.rglob("*"))
            return {
                "count": count,
                "format_version": int(self._meta["format_version"]),
                "metadata": self.backend,
                "vector_store": self.vector_url.redacted(),
                "vector_sets": sets,
                "blobs": {"count": int(n_blobs), "bytes": int(blob_bytes)},
                "disk_bytes": disk,
                "bytes_per_reference": disk / count if count else None,
            }

    # --- internals -----------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """The connection a read uses: the open write transaction's (it sees its own
        writes), the snapshot of :meth:`_load_sets`, or a pooled connection whose read
        transaction ends with the block (so it sees the latest commits)."""
        if self._snap is not None:
            yield self._snap
        elif self._wconn is not None and self._wconn.in_transaction():
            yield self._wconn
        else:
            with self._engine.connect() as conn:
                yield conn

    def _begin(self) -> sa.Connection:
        """The write connection inside a transaction (opened now when none is)."""
        conn = self._wconn
        assert conn is not None
        if not conn.in_transaction():
            conn.begin()
            if self.backend == "postgresql":
                _pg_serialise(conn)
        return conn

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise IndexReadOnlyError("the index was opened read-only", source=str(self.path))

    def _set(self, name: str) -> _VectorSet:
        vset = self._sets.get(name) if isinstance(name, str) else None
        if vset is None:
            raise UnknownVectorSetError(
                f"no vector set {name!r}; this index has {sorted(self._sets)}",
                source=str(self.path),
            )
        return vset

    def _require(self, conn: sa.Connection, ref_id: object) -> int:
        rid = _check_id(ref_id)
        if conn.execute(sa.select(refs.c.id).where(refs.c.id == rid)).first() is None:
            raise ReferenceNotFoundError(f"no reference with id {rid}", source=str(self.path))
        return rid

    def _read_specs(self) -> dict[str, tuple[int, VectorSpec]]:
        with self._read() as conn:
            return load_vector_sets(conn, source=str(self.path))

    def _change_rows(self, since: int, limit: int) -> builtins.list[tuple[int, int, str, Any]]:
        """``(seq, ref_id, op, ts)`` of the committed changes after ``since``, oldest first."""
        if int(self._meta["format_version"]) < 2:
            return []
        with self._read() as conn:
            rows = conn.execute(sa.select(changes.c.seq, changes.c.ref_id, changes.c.op,
                                          changes.c.ts)
                                .where(changes.c.seq > int(since))
                                .order_by(changes.c.seq).limit(int(limit))).all()
        return [(int(q), int(r), str(o), t) for q, r, o, t in rows]

    def _log_tail(self) -> tuple[int, int]:
        """``(last seq, largest vector-store write token)`` of the change log ((0, 0) when
        empty, or for a format-1 index)."""
        if int(self._meta["format_version"]) < 2:
            return 0, 0
        with self._read() as conn:
            seq, ts = conn.execute(sa.select(sa.func.coalesce(sa.func.max(changes.c.seq), 0),
                                             sa.func.coalesce(sa.func.max(changes.c.ts), 0))
                                   ).one()
        return int(seq), int(ts)

    def _last_change(self) -> int:
        return self._log_tail()[0]

    def _existing(self, ids: set[int]) -> set[int]:
        """Those of ``ids`` that are committed references."""
        if not ids:
            return set()
        with self._read() as conn:
            rows = conn.execute(sa.select(refs.c.id).where(refs.c.id.in_(sorted(ids)))).all()
        return {int(r[0]) for r in rows}

    def _follow_changes(self) -> None:
        """Raise the sets' ``max_rows`` for references other processes added since the last
        look (a shared index: the rows a search must ask for depend on it)."""
        new = self._change_rows(self._seen_change, 100_000)
        if not new:
            return
        self._seen_change = new[-1][0]
        self._after = max([self._after] + [int(ts) for *_, ts in new if ts is not None])
        new = [(seq, rid, op) for seq, rid, op, _ in new]
        added = sorted({rid for _, rid, op in new if op == "add"})
        if not added:
            return
        with self._read() as conn:
            rows = conn.execute(sa.select(vectors.c.set_id, sa.func.max(vectors.c.n_rows))
                                .where(vectors.c.ref_id.in_(added))
                                .group_by(vectors.c.set_id)).all()
        by_id = {v.id: v for v in self._sets.values()}
        for set_id, most in rows:
            if set_id in by_id:
                by_id[set_id].max_rows = max(by_id[set_id].max_rows, int(most))

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
            if isinstance(value, str) and "\x00" in value:
                raise IndexInputError(f"{where}: {field_name} holds a NUL character")
        if "\x00" in content_hash:
            raise IndexInputError(f"{where}: content_hash holds a NUL character")
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
            if not isinstance(name, str) or not 0 < len(name) <= 128 or "\x00" in name:
                raise IndexInputError(
                    f"{where}: a blob name must be a non-empty str of <= 128 characters, "
                    "without NUL"
                )
            if not isinstance(data, bytes | bytearray | memoryview):
                raise IndexInputError(
                    f"{where}: blob {name!r} must be bytes, got {type(data).__name__}"
                )
            out.blobs[name] = bytes(data)
        return out

    def _insert(
        self, conn: sa.Connection, prepared: builtins.list[_Prepared]
    ) -> tuple[builtins.list[AddResult], dict[str, builtins.list[tuple[int, np.ndarray]]]]:
        now = _now()
        results: builtins.list[AddResult] = []
        new_rows: dict[str, builtins.list[tuple[int, np.ndarray]]] = {}
        known = self._known_hashes(conn, [p.content_hash for p in prepared])
        fresh: builtins.list[_Prepared] = []
        seen: set[str] = set()
        for p in prepared:
            if p.content_hash not in known and p.content_hash not in seen:
                seen.add(p.content_hash)
                fresh.append(p)
        if fresh:
            # one executemany, then the ids by hash (an INSERT ... RETURNING in parameter
            # order runs one statement a row on SQLite)
            conn.execute(refs.insert(), [
                {"content_hash": p.content_hash, "source": p.text[0], "owner": p.text[1],
                 "license": p.text[2], "notes": p.text[3], "added_at": now} for p in fresh])
            known.update(self._known_hashes(conn, [p.content_hash for p in fresh]))
        vector_rows: builtins.list[dict[str, Any]] = []
        blob_rows: builtins.list[dict[str, Any]] = []
        added: set[str] = set()
        for p in prepared:
            rid = known[p.content_hash]
            if p.content_hash not in seen or p.content_hash in added:
                results.append(AddResult(id=rid, duplicate_of=rid))
                continue
            added.add(p.content_hash)
            results.append(AddResult(id=rid))
            for name, rows in p.rows.items():
                vset = self._sets[name]
                vector_rows.append({"ref_id": rid, "set_id": vset.id, "n_rows": len(rows),
                                    "data": _faiss.rows_to_bytes(vset.spec, rows)})
                new_rows.setdefault(name, []).append((rid, rows))
            blob_rows.extend({"ref_id": rid, "name": name, "data": data}
                             for name, data in p.blobs.items())
        if vector_rows:
            conn.execute(vectors.insert(), vector_rows)
        if blob_rows:
            conn.execute(blobs.insert(), blob_rows)
        return results, new_rows

    def _known_hashes(self, conn: sa.Connection, hashes: builtins.list[str]) -> dict[str, int]:
        """``content_hash -> id`` for those of ``hashes`` already stored."""
        unique = sorted(set(hashes))
        known: dict[str, int] = {}
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = conn.execute(sa.select(refs.c.content_hash, refs.c.id)
                                .where(refs.c.content_hash.in_(chunk)))
            known.update((h, int(i)) for h, i in rows)
        return known

    def _stored(self, vset: _VectorSet) -> tuple[np.ndarray, np.ndarray]:
        """``(ref_ids, n_rows)`` of a vector set in the database, by reference id."""
        with self._read() as conn:
            rows = conn.execute(sa.select(vectors.c.ref_id, vectors.c.n_rows)
                                .where(vectors.c.set_id == vset.id)
                                .order_by(vectors.c.ref_id)).all()
        # plain tuples: numpy probing SQLAlchemy Rows for array attributes costs 10 us a row
        arr = np.array([tuple(r) for r in rows], dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def _stored_rows(self, vset: _VectorSet) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(vectors.c.n_rows), 0))
                                    .where(vectors.c.set_id == vset.id)).scalar_one())

    def _row_source(self, vset: _VectorSet, ref_ids: np.ndarray | None = None,
                    ) -> Any:
        """A :data:`~tracemark.index.vectors.RowSource` over the database rows of ``vset``
        (of ``ref_ids`` only, when given), 4,096 references a chunk."""

        def rows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            query = (sa.select(vectors.c.ref_id, vectors.c.n_rows, vectors.c.data)
                     .where(vectors.c.set_id == vset.id).order_by(vectors.c.ref_id))
            batches: Iterable[Any]
            if ref_ids is None:
                batches = [query]
            else:
                ids = [int(i) for i in ref_ids]
                batches = [query.where(vectors.c.ref_id.in_(ids[i:i + 4096]))
                           for i in range(0, len(ids), 4096)]
            for q in batches:
                with self._read() as conn:
                    result = conn.execute(q, execution_options={"yield_per": 4096})
                    for part in result.partitions():
                        chunk_ids, counts, chunks = [], [], []
                        for rid, n_rows, data in part:
                            block = _faiss.bytes_to_rows(vset.spec, data)
                            if len(block) != n_rows:
                                raise IndexFormatError(
                                    f"corrupt vectors of reference {rid} in set {vset.name!r}",
                                    source=str(self.path))
                            chunk_ids.append(rid)
                            counts.append(n_rows)
                            chunks.append(block)
                        if chunks:
                            yield (_faiss.expected_labels(np.array(chunk_ids), np.array(counts)),
                                   np.concatenate(chunks))

        return rows

    def _resync(self, vset: _VectorSet, ref_ids: np.ndarray) -> None:
        """Put the store's rows of ``ref_ids`` back to what the database holds."""
        self._vstore.remove(vset.name, ref_ids)
        for labels, rows in self._row_source(vset, np.sort(ref_ids))():
            self._vstore.add(vset.name, labels, rows)

    def _load_sets(self, sets: builtins.list[_VectorSet]) -> None:
        """Open each set in the vector store and check it against the database (one
        snapshot); repair the sets that disagree (and flush). A read-only handle on a
        shared store trusts it (searches drop rows of references the database lacks).

        FAISS sets that disagree are rebuilt. A shared store (Milvus) is repaired row by
        row, never dropped (other processes search it meanwhile): rows the database has
        and the store lacks are added again; rows the store has and the database lacks
        are removed only when no other writer can hold them uncommitted -- with the
        metadata in PostgreSQL, only when this handle gets the writers' advisory lock
        without waiting; otherwise they are left (searches skip them) for a later check.
        """
        repaired: builtins.list[str] = []
        exclusive = True
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._mutex)
            if self._vstore.shared and not self.read_only and self.backend == "postgresql":
                assert self._wconn is not None
                snap = self._wconn
                stack.enter_context(snap.begin())  # ends (commits a read) with the block
                exclusive = _pg_serialise(snap, wait=False)
            else:
                snap = stack.enter_context(self._engine.connect())
            self._snap = snap
            try:
                for vset in sets:
                    ref_ids, counts = self._stored(vset)
                    vset.max_rows = int(counts.max(initial=0))
                    if vset.spec.index == "none":
                        vset.rows = int(counts.sum())
                        continue
                    source = self._row_source(vset)
                    if (self.read_only and self._vstore.shared and len(ref_ids)
                            and not self._vstore.has_set(vset.name)):
                        raise IndexFormatError(
                            f"the vector store {self.vector_url.redacted()} has no set "
                            f"{vset.name!r} for this index, which holds {len(ref_ids)} "
                            "references in it: another server or database than the one the "
                            "index was built on? (a writable open rebuilds the set there)",
                            source=str(self.path))
                    self._vstore.open_set(vset.name, vset.spec, source)
                    if self.read_only and self._vstore.shared:
                        continue
                    expected = _faiss.expected_labels(ref_ids, counts)
                    got = np.sort(self._vstore.labels(vset.name))
                    if np.array_equal(got, expected):
                        continue
                    if not self._vstore.shared:
                        self._vstore.rebuild(vset.name, vset.spec, source)
                        repaired.append(vset.name)
                        continue
                    extra = np.unique(np.setdiff1d(got, expected) >> ROW_BITS)
                    missing = np.unique(np.setdiff1d(expected, got) >> ROW_BITS)
                    if exclusive and len(extra):
                        self._vstore.remove(vset.name, extra)
                    readd = np.union1d(missing, extra) if exclusive else missing
                    for labels, rows in self._row_source(vset, readd)():
                        self._vstore.add(vset.name, labels, rows)
                    if len(readd) or (exclusive and len(extra)):
                        repaired.append(vset.name)
            finally:
                self._snap = None
        if not self.read_only:
            self._vstore.flush()
        self.repaired = tuple(repaired)


def _namespace(uid: str) -> str:
    """The name prefix of an index's sets in a shared vector store."""
    return f"tm_{uid}"


def _pg_serialise(conn: sa.Connection, *, wait: bool = True) -> bool:
    """Serialise the write transactions of every process on this PostgreSQL schema (a
    transaction-level advisory lock, released at commit or rollback), so that change
    sequence numbers appear in commit order and ``content_hash`` checks do not race.
    ``wait=False`` tries once; returns whether the lock is held."""
    schema = conn.get_execution_options().get("schema_translate_map", {}).get(None, "")
    key = zlib.crc32(f"tracemark-index:{schema}".encode()) - (1 << 31)
    if wait:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        return True
    return bool(conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"),
                             {"k": key}).scalar_one())


def _size(path: Path) -> int:
    """Size of a regular file, 0 for anything else, or when it vanished meanwhile (a
    writer's temporary file renamed between the listing and the stat)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _insert_set(conn: sa.Connection, name: str, spec: VectorSpec) -> int:
    return int(conn.execute(
        vector_sets.insert().returning(vector_sets.c.id),
        {"name": name, "kind": spec.kind, "dim": spec.dim, "metric": spec.metric,
         "index_type": spec.index, "params": json.dumps(spec.to_params(), sort_keys=True)},
    ).scalar_one())
