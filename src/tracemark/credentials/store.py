"""The manifest store: signed C2PA manifests, findable by identifier and by fingerprint.

A store is a directory::

    credentials.sqlite   store metadata and one row per manifest (SQLAlchemy Core; the
                         metadata may live in another database given by URL)
    secret.key           32 random bytes, mode 0600: the store's watermark key
    index/               a copy-detection index (:class:`tracemark.copydetect.CopyIndex`) of
                         every signed image, for recovery by fingerprint

Each manifest gets an integer identifier when signing starts (state ``pending``); the
watermark embedded in the image carries it, joined to the store's 24-bit tag (a keyed hash
of the secret, so that a mark of another store never names one of ours)::

    payload (64 bits) = tag (24 bits) << 40 | manifest id (40 bits)

A ``signings`` row beside each manifest records who signs it (``host:pid`` of the signing
process), the SHA-256 of the input it was signed from (so that a re-run skips inputs
already signed) and the *mark id*: the manifest id the image's watermark carries. A fresh
image gets its own id; an image that already carries this store's mark keeps it (a second
mark would stack and break the first), so its new manifest shares the earlier one's mark
id, and :meth:`CredentialStore.resolve_mark` returns the newest manifest of that lineage.
The table was added to version 1 stores without a version change: a store made before it
gains it on its first writable open; a read-only open of such a store sees no signings.
The ``source_type`` column of ``manifests`` (the IPTC digital source type of a *create*
signing, e.g. ``digitalCapture``; NULL for an *edit*) was added the same way: a writable
open adds the column (``ALTER TABLE ... ADD COLUMN``, existing rows NULL), a read-only open
of an older store reads its rows with ``source_type`` None.

When the signed file is ready the row becomes ``active`` with the manifest's label, the
raw manifest store (JUMBF bytes, as c2pa returns them), its JSON, the SHA-256 of the signed
file and the id of its fingerprint in ``index/``. The database commit happens before the
signed file is written, so a crash never leaves a signed file whose manifest is not stored.
A ``pending`` row is never returned. A pending row left by a crash (its transaction was
committed by a caller between reserve and activate) is *stale* when its signing process is
gone (same host, no such pid) or it is older than :data:`PENDING_MAX_AGE_SECONDS` (another
host, or a pid reused); a writable open deletes stale pending rows (and their signings
rows) and keeps the others, which may belong to a concurrent signer.

Lifecycle (:class:`tracemark._lifecycle.Resource`, as for the indexes): the writes of a
store (manifest rows and fingerprints) join one transaction that :meth:`CredentialStore.commit`,
:meth:`~CredentialStore.close` or a clean ``with`` exit make durable; an exception in the
``with`` block rolls them back. Reads see the store's own uncommitted writes.

The store speaks as a collection: callers watermark with :meth:`CredentialStore.mark` and
:meth:`~CredentialStore.read_mark`, register and search fingerprints with
:meth:`~CredentialStore.add_fingerprint`, :meth:`~CredentialStore.search` and the rest, and
drop a store's database schemas with :meth:`~CredentialStore.drop`, without reaching into
the fingerprint index or the watermark method. See ``docs/credentials.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from tracemark._db import schema_name, sqlite_engine, url_engine
from tracemark._lifecycle import Resource
from tracemark.errors import (
    ConfigError,
    ManifestNotFoundError,
    ManifestStoreError,
    TracemarkError,
)
from tracemark.watermark import DEFAULT_ALPHA, Detection, get_method
from tracemark.watermark.keys import WatermarkKey

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex, Match, MatchConfig
    from tracemark.imageio import ImageSource
    from tracemark.index import AddResult, Reference

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ID_BITS",
    "TAG_BITS",
    "CredentialStore",
    "ManifestRecord",
    "StoreWatermark",
]

FORMAT_NAME = "tracemark-credentials"
FORMAT_VERSION = 1
TAG_BITS = 24
ID_BITS = 40
WATERMARK_METHOD = "lattice"
SQLITE_NAME = "credentials.sqlite"
SECRET_NAME = "secret.key"
INDEX_DIR = "index"
PENDING_MAX_AGE_SECONDS = 3600
"""A pending manifest older than this (one hour; a signing takes seconds) is stale whoever
holds it: a writable open deletes it."""

_metadata = sa.MetaData()
_meta = sa.Table(
    "meta",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
_manifests = sa.Table(
    "manifests",
    _metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("label", sa.String(255), unique=True),
    sa.Column("title", sa.Text),
    sa.Column("author", sa.Text),
    sa.Column("ai_generated", sa.Boolean, nullable=False),
    sa.Column("media_type", sa.String(64)),
    sa.Column("ref_id", sa.BigInteger, index=True),
    sa.Column("file_sha256", sa.String(64), index=True),
    sa.Column("signer", sa.Text),
    sa.Column("manifest_json", sa.Text),
    sa.Column("manifest_store", sa.LargeBinary),
    sa.Column("source_type", sa.String(64)),
)

_signings = sa.Table(
    "signings",
    _metadata,
    sa.Column("manifest_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
              primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("input_sha256", sa.String(64), index=True),
    sa.Column("mark_id", sa.BigInteger, index=True),
)


def _owner() -> str:
    """``host:pid`` of this process, as recorded on the manifests it reserves."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its rows
    return True


def _stale(owner: str | None, created_at: str, now: float) -> bool:
    """Whether a pending manifest reserved by ``owner`` at ``created_at`` is stale (see the
    module docstring)."""
    try:
        age = now - datetime.fromisoformat(created_at).timestamp()
    except ValueError:
        return True
    if age > PENDING_MAX_AGE_SECONDS:
        return True
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's, or of a store made before owners: wait for the age
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


@dataclass(frozen=True)
class ManifestRecord:
    """One stored manifest. ``manifest_store`` is the signed JUMBF manifest store."""

    id: int
    state: str
    created_at: str
    label: str | None
    title: str | None
    author: str | None
    ai_generated: bool
    media_type: str | None
    ref_id: int | None
    file_sha256: str | None
    signer: str | None
    manifest_json: str | None
    manifest_store: bytes | None
    source_type: str | None = None
    """The IPTC digital source type (its name: ``digitalCapture``,
    ``trainedAlgorithmicMedia``...) the signing declared the image *created* with; None for
    an *edit* of the input, or a manifest stored before the column existed."""

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The manifest store's JSON, parsed (``None`` while pending)."""
        return None if self.manifest_json is None else json.loads(self.manifest_json)

    def summary(self) -> dict[str, Any]:
        """The record without the manifest bytes (for listings and JSON output)."""
        return {
            "id": self.id, "state": self.state, "created_at": self.created_at,
            "label": self.label, "title": self.title, "author": self.author,
            "ai_generated": self.ai_generated, "source_type": self.source_type,
            "media_type": self.media_type,
            "ref_id": self.ref_id, "file_sha256": self.file_sha256, "signer": self.signer,
        }


def _record(row: Any) -> ManifestRecord:
    return ManifestRecord(**{k: row.get(k) for k in ManifestRecord.__dataclass_fields__})


@dataclass(frozen=True)
class StoreWatermark:
    """A store's watermark apart from its database: the method, the key, the payload
    layout (module docstring). What a process that marks images for a store needs and no
    more: a batch job's worker builds one with :meth:`read` from the store's directory, so
    the secret never travels (:func:`tracemark.batch.sign_sources`).

    ``secret``: the store's 32 secret bytes (never printed: not in the repr)."""

    method: str
    secret: bytes = field(repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, method: str,
             secret_check: str) -> StoreWatermark:
        """The watermark of the store at ``path``, from its ``secret.key``; ``secret_check``
        (the store's recorded digest of the secret, :attr:`CredentialStore.secret_check`)
        proves it is that store's. Raises :class:`~tracemark.errors.ManifestStoreError`
        when the secret cannot be read, is not 32 bytes, or belongs to another store."""
        root = Path(path)
        try:
            secret = (root / SECRET_NAME).read_bytes()
        except OSError as exc:
            raise ManifestStoreError(f"cannot read the store's secret: {exc.strerror or exc}",
                                     source=str(root)) from None
        if len(secret) != 32 or not hmac.compare_digest(_secret_check(secret), secret_check):
            raise ManifestStoreError("secret.key is not this store's", source=str(root))
        return cls(method, secret)

    @property
    def key(self) -> WatermarkKey:
        return WatermarkKey(self.secret)

    @property
    def tag(self) -> int:
        """The store's 24-bit tag: HMAC-SHA256(secret, "tracemark-credentials/tag")'s first
        3 bytes."""
        digest = hmac.new(self.secret, b"tracemark-credentials/tag", hashlib.sha256).digest()
        return int.from_bytes(digest[:3], "big")

    def payload_for(self, manifest_id: int) -> int:
        """The 64-bit watermark payload that names ``manifest_id`` in this store; raises
        :class:`~tracemark.errors.ConfigError` for an id outside ``1 .. 2**40 - 1``."""
        if not 0 < manifest_id < (1 << ID_BITS):
            raise ConfigError(f"manifest id out of range: {manifest_id}")
        return (self.tag << ID_BITS) | manifest_id

    def id_from_payload(self, payload: int) -> int | None:
        """The manifest id a decoded payload names, or None when its tag is not ours."""
        if payload >> ID_BITS != self.tag:
            return None
        return payload & ((1 << ID_BITS) - 1)

    def mark(self, image: ImageSource, payload: int) -> np.ndarray:
        """``image`` carrying ``payload`` (RGB uint8 ``(H, W, 3)``)."""
        return get_method(self.method).embed(image, payload, self.key)

    def carried(self, rgb: np.ndarray) -> int | None:
        """The manifest id this store's mark in ``rgb`` carries (blind detection at the
        default alpha, :func:`tracemark.watermark.carried_mark`), or None."""
        from tracemark.watermark import carried_mark

        det = carried_mark(get_method(self.method), rgb, self.key)
        if det is None or det.payload_int is None:
            return None
        return self.id_from_payload(det.payload_int)


def _secret_check(secret: bytes) -> str:
    """The digest of a store's secret its metadata records (SHA-256, 16 hex digits)."""
    return hashlib.sha256(secret).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _index_schema(schema: str | None) -> str:
    """The schema of the store's fingerprint index in a shared database."""
    return f"{schema or 'tracemark_credentials'}_ix"[:63]


def _index_db(database_url: str | None, schema: str | None) -> dict[str, Any]:
    """Where the store's fingerprint index keeps its metadata: beside the manifests."""
    if database_url is None:
        return {}
    return {"database_url": database_url, "schema": _index_schema(schema)}


def _vectors_arg(vectors: str | None) -> dict[str, Any]:
    return {} if vectors is None else {"vectors": vectors}


class CredentialStore(Resource):
    """Manifests signed by this store, its watermark key, and the fingerprints of its images.

    Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`; use it in a ``with``
    block (a clean exit commits, an exception rolls back) or call :meth:`commit` and
    :meth:`close`. ``database_url`` puts the metadata in another database SQLAlchemy can
    reach (e.g. ``postgresql+psycopg://...``); the secret and the fingerprint index stay
    in the directory. Methods are serialised by a lock, so a store may be shared between
    threads.
    """

    _noun = "credential store"

    def __init__(self, path: Path, engine: sa.Engine, secret: bytes, *, read_only: bool) -> None:
        self._init_resource()
        self.path = path
        self.read_only = read_only
        self._engine = engine
        self._secret = secret
        self._index: CopyIndex | None = None
        self._conn: sa.Connection | None = None
        self._tx: sa.RootTransaction | None = None
        self._database_url: str | None = None
        self._vectors: str | None = None
        self._has_signings = False
        self.cleaned_pending: list[int] = []
        """Ids of the stale pending manifests this open deleted."""
        with engine.connect() as conn:
            meta = {r[0]: r[1] for r in conn.execute(sa.select(_meta.c.key, _meta.c.value))}
        if meta.get("format") != FORMAT_NAME:
            raise ManifestStoreError("not a tracemark credential store", source=str(path))
        try:
            version = int(meta.get("version", "0"))
        except ValueError:
            raise ManifestStoreError(f"corrupt store metadata: version {meta['version']!r}",
                                     source=str(path)) from None
        if "store_id" not in meta:
            raise ManifestStoreError("corrupt store metadata: no store_id", source=str(path))
        if version != FORMAT_VERSION:
            raise ManifestStoreError(
                f"unsupported credential store version {version} (this tracemark reads "
                f"version {FORMAT_VERSION})",
                source=str(path),
            )
        self.store_id: str = meta["store_id"]
        self.created_at: str = meta.get("created_at", "")
        self.watermark_method: str = meta.get("watermark_method", WATERMARK_METHOD)
        self.secret_check: str = _secret_check(secret)
        """The digest of the secret the metadata records (not secret: proves a copy of
        ``secret.key`` is this store's, :meth:`StoreWatermark.read`)."""
        if meta.get("secret_check") != self.secret_check:
            raise ManifestStoreError(
                "secret.key does not belong to this store's database", source=str(path)
            )
        # the inspector ignores the engine's schema_translate_map (a PostgreSQL store lives
        # in its own schema): name the schema
        db_schema = engine.get_execution_options().get("schema_translate_map", {}).get(None)
        inspector = sa.inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("manifests", schema=db_schema)}
        self._has_source_type = "source_type" in columns
        if read_only:
            self._has_signings = inspector.has_table("signings", schema=db_schema)
        else:
            _signings.create(engine, checkfirst=True)  # version 1 stores made before it
            self._has_signings = True
            if not self._has_source_type:  # version 1 stores made before the column
                table = "manifests" if db_schema is None else \
                    f"{engine.dialect.identifier_preparer.quote_schema(db_schema)}.manifests"
                with engine.begin() as conn:  # text: schema_translate_map does not apply
                    conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN source_type "
                                         "VARCHAR(64)"))
                self._has_source_type = True
            self.cleaned_pending = self._clean_stale_pending()

    def _clean_stale_pending(self) -> list[int]:
        """Delete the stale pending manifests (module docstring) in their own committed
        transaction; their ids."""
        now = time.time()
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(_manifests.c.id, _manifests.c.created_at, _signings.c.owner)
                .select_from(_manifests.outerjoin(
                    _signings, _signings.c.manifest_id == _manifests.c.id))
                .where(_manifests.c.state == "pending")).all()
            stale = [int(r.id) for r in rows if _stale(r.owner, r.created_at, now)]
            if stale:
                conn.execute(_signings.delete().where(_signings.c.manifest_id.in_(stale)))
                conn.execute(_manifests.delete().where(_manifests.c.id.in_(stale),
                                                       _manifests.c.state == "pending"))
        return stale

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, database_url: str | None = None,
               schema: str | None = None, secret: bytes | None = None,
               vectors: str | None = None) -> CredentialStore:
        """Make a new, empty store at ``path`` (a missing or empty directory).

        ``vectors``: where the fingerprint index keeps its search structures (a vector-store
        URL, e.g. ``milvus://host:19530``; default FAISS files in the directory).

        ``secret`` (32 bytes) fixes the watermark key, for reproducible benchmarks and
        tests; by default it is drawn from the operating system's CSPRNG.
        """
        root = Path(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ManifestStoreError("exists and is not an empty directory", source=str(root))
        if secret is None:
            secret = secrets.token_bytes(32)
        elif not isinstance(secret, bytes) or len(secret) != 32:
            raise ConfigError("a store secret is 32 bytes")
        existed = root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:
            return cls._create_in(root, secret, database_url=database_url, schema=schema,
                                  vectors=vectors)
        except BaseException:
            # a store half made is no store: remove what this call wrote (the directory
            # was missing or empty); a database URL's rows are left to the caller
            import shutil

            for p in root.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if not existed:
                root.rmdir()
            raise

    @classmethod
    def _create_in(cls, root: Path, secret: bytes, *, database_url: str | None,
                   schema: str | None, vectors: str | None = None) -> CredentialStore:
        fd = os.open(root / SECRET_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        engine = cls._engine_for(root, database_url, read_only=False, schema=schema, create=True)
        _metadata.create_all(engine)
        rows = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "store_id": str(uuid.uuid4()),
            "created_at": _now(),
            "watermark_method": WATERMARK_METHOD,
            "secret_check": _secret_check(secret),
        }
        with engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(_meta)).scalar_one():
                raise ManifestStoreError("the database (schema) already holds a credential "
                                         "store", source=str(root))
            conn.execute(_meta.insert(), [{"key": k, "value": v} for k, v in rows.items()])
        from tracemark.copydetect import CopyIndex

        CopyIndex.create(root / INDEX_DIR, **_index_db(database_url, schema),
                         **_vectors_arg(vectors)).close()
        store = cls(root, engine, secret, read_only=False)
        store._database_url = database_url
        store._vectors = vectors
        return store

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, read_only: bool = False,
        database_url: str | None = None, schema: str | None = None,
        vectors: str | None = None,
    ) -> CredentialStore:
        """Open an existing store (``vectors`` overrides the vector-store URL its
        fingerprint index recorded, e.g. to pass credentials)."""
        root = Path(path)
        if not root.is_dir():
            raise ManifestStoreError("no credential store here (missing directory)", source=str(root))
        try:
            secret = (root / SECRET_NAME).read_bytes()
        except OSError as exc:
            raise ManifestStoreError(
                f"cannot read the store's secret: {exc.strerror or exc}", source=str(root)
            ) from None
        if len(secret) != 32:
            raise ManifestStoreError("secret.key is not 32 bytes", source=str(root))
        if database_url is None and not (root / SQLITE_NAME).is_file():
            raise ManifestStoreError(f"{SQLITE_NAME} is missing", source=str(root))
        engine = cls._engine_for(root, database_url, read_only=read_only, schema=schema)
        try:
            store = cls(root, engine, secret, read_only=read_only)
            store._database_url = database_url
            store._vectors = vectors
            return store
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise ManifestStoreError(f"unreadable store database: {exc.orig or exc}",
                                     source=str(root)) from None
        except TracemarkError:
            engine.dispose()
            raise

    @classmethod
    def attach(cls, path: str | os.PathLike[str], *, database_url: str, schema: str,
               secret: bytes, vectors: str | None = None) -> CredentialStore:
        """Open, from a new local directory ``path``, a store created elsewhere in
        ``schema`` of ``database_url`` (a service replica opening a collection another
        replica created): writes its ``secret`` (32 bytes, mode 0600) and its index's
        local directory (:meth:`tracemark.index.Index.attach`), then opens it. The secret
        must be the store's own (checked against the database)."""
        from tracemark.index import Index

        root = Path(path)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ManifestStoreError("exists and is not an empty directory", source=str(root))
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise ConfigError("a store secret is 32 bytes")
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / SECRET_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        Index.attach(root / INDEX_DIR, schema=_index_schema(schema))
        return cls.open(root, database_url=database_url, schema=schema, vectors=vectors)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike[str], *, database_url: str | None = None,
                       schema: str | None = None, vectors: str | None = None) -> CredentialStore:
        root = Path(path)
        if root.is_dir() and (root / SECRET_NAME).exists():
            return cls.open(root, database_url=database_url, schema=schema, vectors=vectors)
        return cls.create(root, database_url=database_url, schema=schema, vectors=vectors)

    @staticmethod
    def _engine_for(root: Path, database_url: str | None, *, read_only: bool,
                    schema: str | None = None, create: bool = False) -> sa.Engine:
        if database_url is None:
            return sqlite_engine(root / SQLITE_NAME, read_only=read_only)
        return url_engine(database_url, schema=schema, create_schema=create)

    @staticmethod
    def schemas(schema: str) -> list[str]:
        """Every database schema a store kept in ``schema`` uses: its manifests', its
        fingerprint index's."""
        return [schema_name(schema), _index_schema(schema)]

    @classmethod
    def drop(cls, database_url: str, schema: str) -> None:
        """Drop every schema (:meth:`schemas`) of a closed store kept in ``schema`` of
        ``database_url``, with its tables. The store's directory is left to the caller."""
        engine = url_engine(database_url)
        try:
            with engine.begin() as conn:
                for name in cls.schemas(schema):
                    conn.execute(sa.schema.DropSchema(name, cascade=True, if_exists=True))
        finally:
            engine.dispose()

    def commit(self, *, write_vectors: bool = True) -> None:
        """Make the pending writes durable: the fingerprint index first, then the manifest
        rows. ``write_vectors=False``: see :meth:`tracemark.index.Index.commit`."""
        with self._mutex:
            self._check_open()
            self._check_commit()
            self._commit(write_vectors=write_vectors)

    def _commit(self, *, write_vectors: bool = True) -> None:
        if self._index is not None:
            self._index.commit(write_vectors=write_vectors)
        self._end_transaction(commit=True)

    def _rollback(self) -> None:
        try:
            self._end_transaction(commit=False)
        finally:
            if self._index is not None:
                self._index.rollback()

    def _release(self) -> None:
        try:
            self._end_transaction(commit=False)
        finally:
            if self._index is not None:
                self._index._shutdown(commit=False)  # committed or rolled back just before
                self._index = None
            self._engine.dispose()

    def _end_transaction(self, *, commit: bool) -> None:
        conn, tx = self._conn, self._tx
        if conn is None or tx is None:
            return
        self._conn = self._tx = None
        try:
            if commit:
                tx.commit()
            else:
                tx.rollback()
        finally:
            conn.close()

    def _closed_source(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """The connection of the store's open transaction (begun on the first write)."""
        with self._mutex:
            self._check_open()
            self._check_writable()
            if self._conn is None:
                conn = self._engine.connect()
                self._tx = conn.begin()
                self._conn = conn
            yield self._conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """The open transaction's connection (reads see the store's own writes), else a
        connection of the pool."""
        with self._mutex:
            self._check_open()
            if self._conn is not None:
                yield self._conn
                return
        with self._engine.connect() as conn:
            yield conn

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.path)!r}, store_id={self.store_id!r})"

    # --- keys and payloads -------------------------------------------------------------

    @property
    def watermark(self) -> StoreWatermark:
        """The store's :class:`StoreWatermark` (holds the secret: never print or return it)."""
        return StoreWatermark(self.watermark_method, self._secret)

    @property
    def watermark_key(self) -> WatermarkKey:
        """The store's watermark key (secret: never print or return it)."""
        return WatermarkKey(self._secret)

    @property
    def tag(self) -> int:
        return self.watermark.tag

    def payload_for(self, manifest_id: int) -> int:
        """The 64-bit watermark payload that names ``manifest_id`` in this store."""
        return self.watermark.payload_for(manifest_id)

    def id_from_payload(self, payload: int) -> int | None:
        """The manifest id a decoded payload names, or None when its tag is not ours."""
        return self.watermark.id_from_payload(payload)

    # --- the watermark -------------------------------------------------------------------

    def mark(self, image: ImageSource, payload: int) -> np.ndarray:
        """``image`` (RGB uint8) carrying ``payload`` in this store's watermark."""
        self._check_open()
        return self.watermark.mark(image, payload)

    def read_mark(self, image: ImageSource, alpha: float = DEFAULT_ALPHA, *,
                  assisted: bool = True,
                  search: Callable[[np.ndarray], Sequence[Match]] | None = None) -> Detection:
        """This store's watermark in ``image``: present when its p-value is at most
        ``alpha``; absence is a result, not an error. With ``assisted`` (default), when
        blind detection finds nothing and the image is a copy of an image this store
        signed, the mark is read in that image's frame
        (:func:`tracemark.copydetect.assist.detect_assisted`: strong perspective, rotation,
        insets); ``details["route"]`` says which. ``search`` replaces :meth:`search`
        (``k=3``) for that, e.g. to reuse the query's matches."""
        self._check_open()
        method = get_method(self.watermark_method)
        if not assisted:
            return method.detect(image, self.watermark_key, alpha=alpha)
        from tracemark.copydetect.assist import detect_assisted

        key = self.watermark_key
        return detect_assisted(lambda im, a: method.detect(im, key, alpha=a), image,
                               search or (lambda im: self.search(im, k=3)), alpha=alpha)

    # --- the fingerprint index ---------------------------------------------------------

    @property
    def index(self) -> CopyIndex:
        """The store's :class:`~tracemark.copydetect.CopyIndex` (opened on first use). Prefer
        the store's own verbs (:meth:`add_fingerprint`, :meth:`search`...)."""
        with self._mutex:
            self._check_open()
            if self._index is None:
                from tracemark.copydetect import CopyIndex

                self._index = CopyIndex.open(self.path / INDEX_DIR, read_only=self.read_only,
                                             database_url=self._database_url,
                                             vectors=self._vectors)
            return self._index

    @property
    def match_config(self) -> MatchConfig:
        """The fingerprint index's copy-detection settings."""
        return self.index.config

    def add_fingerprint(self, image: ImageSource, *, source: str | None = None,
                        owner: str | None = None, license: str | None = None,
                        notes: str | None = None) -> AddResult:
        """Register an image's fingerprint (pending until :meth:`commit`); the same content
        twice gives ``duplicate_of``."""
        return self.index.add(image, source=source, owner=owner, license=license, notes=notes)

    def add_described_fingerprints(self, items: Sequence[Any]) -> list[AddResult]:
        """Register fingerprints described elsewhere (``(NewReference, Words)`` pairs of
        :func:`tracemark.copydetect.index.new_reference` with this store's
        ``match_config.max_features``: a batch job's workers describe, this process adds):
        :meth:`tracemark.copydetect.CopyIndex.add_described`. Pending until :meth:`commit`."""
        return self.index.add_described(items)

    def remove_fingerprint(self, ref_id: int) -> bool:
        """Remove a registered image; False when ``ref_id`` is unknown."""
        return self.index.remove(ref_id)

    def reference_preview(self, ref_id: int) -> bytes | None:
        """A registered image's preview, JPEG bytes (long side at most 256 px), or None for
        one registered before previews were kept: :meth:`tracemark.copydetect.CopyIndex.
        preview`. Raises :class:`~tracemark.errors.ReferenceNotFoundError` for an unknown
        ``ref_id``."""
        return self.index.preview(ref_id)

    def search(self, image: ImageSource, *, k: int = 5) -> list[Match]:
        """Registered images ``image`` is a copy of: at most ``k`` matches, best first."""
        return self.index.search(image, k=k)

    def nearest_pdq(self, pdq_hash: bytes, *, k: int = 10,
                    max_distance: int = 31) -> list[tuple[int, int]]:
        """Registered images whose PDQ hash is within ``max_distance`` bits of ``pdq_hash``
        (32 bytes, the packed hash of :func:`tracemark.fingerprint.pdq.pdq_hash`, whose hex
        is the ThreatExchange hash string): at most ``k`` ``(ref_id, distance)`` pairs,
        nearest first (exact Hamming search of the index's ``pdq`` rows; default 31: the
        ThreatExchange PDQ match threshold). Raises :class:`~tracemark.errors.ConfigError`
        for a hash that is not 32 bytes."""
        if len(pdq_hash) != 32:
            raise ConfigError(f"a PDQ hash is 32 bytes; got {len(pdq_hash)}")
        if len(self.index) == 0:
            return []
        row = np.frombuffer(bytes(pdq_hash), np.uint8)[None, :]
        hits = self.index.index.search("pdq", row, k)[0]
        return [(h.ref_id, int(h.score)) for h in hits if h.score <= max_distance]

    def fingerprint_count(self) -> int:
        """How many images are registered."""
        return len(self.index)

    def list_fingerprints(self, limit: int = 100, offset: int = 0) -> list[Reference]:
        """Registered images in id order, ``limit`` at a time from ``offset``."""
        return self.index.index.list(limit=limit, offset=offset)

    def calibrate(self, background: Sequence[ImageSource]) -> dict[str, object]:
        """Learn the fingerprint decision's background from images known not to be
        registered (:meth:`tracemark.copydetect.CopyIndex.calibrate`); its summary."""
        return self.index.calibrate(background)

    # --- manifests ---------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise ManifestStoreError("the store is open read-only", source=str(self.path))

    def reserve(self, *, title: str | None, author: str | None, ai_generated: bool,
                media_type: str | None, input_sha256: str | None = None,
                mark_id: int | None = None, source_type: str | None = None) -> int:
        """Start a manifest: a ``pending`` row, and its ``signings`` row (this process as
        owner, the input's SHA-256 hex digest, the mark id: ``mark_id``, or the new id
        itself when None). ``source_type``: the IPTC digital source type name of a create
        signing (None: an edit). Returns the new id; the watermark carries the mark id."""
        with self._writing() as conn:
            res = conn.execute(_manifests.insert().values(
                state="pending", created_at=_now(), title=title, author=author,
                ai_generated=bool(ai_generated), media_type=media_type,
                source_type=source_type,
            ))
            manifest_id = int(res.inserted_primary_key[0])
            if manifest_id >= 1 << ID_BITS:
                raise ManifestStoreError("the store has run out of manifest identifiers")
            conn.execute(_signings.insert().values(
                manifest_id=manifest_id, owner=_owner(), input_sha256=input_sha256,
                mark_id=manifest_id if mark_id is None else int(mark_id)))
        return manifest_id

    def activate(self, manifest_id: int, *, label: str, ref_id: int | None, file_sha256: str,
                 signer: str, manifest_json: str, manifest_store: bytes) -> None:
        """Finish a manifest: record what was signed (the signer commits it before the file
        is written)."""
        with self._writing() as conn:
            n = conn.execute(
                _manifests.update()
                .where(_manifests.c.id == manifest_id, _manifests.c.state == "pending")
                .values(state="active", label=label, ref_id=ref_id, file_sha256=file_sha256,
                        signer=signer, manifest_json=manifest_json, manifest_store=manifest_store)
            ).rowcount
        if n != 1:
            raise ManifestNotFoundError(f"no pending manifest {manifest_id}")

    def discard(self, manifest_id: int) -> None:
        """Drop a pending manifest whose signing failed."""
        with self._writing() as conn:
            n = conn.execute(_manifests.delete().where(
                _manifests.c.id == manifest_id, _manifests.c.state == "pending")).rowcount
            if n:
                conn.execute(_signings.delete().where(_signings.c.manifest_id == manifest_id))

    def signed_from(self, input_sha256: str) -> list[ManifestRecord]:
        """The active manifests signed from an input with this SHA-256 (hex), oldest first."""
        if not self._has_signings:
            return []
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(*self._columns).join(_signings, _signings.c.manifest_id == _manifests.c.id)
                .where(_signings.c.input_sha256 == input_sha256, _manifests.c.state == "active")
                .order_by(_manifests.c.id)).mappings().all()
        return [_record(r)
                for r in rows]

    @property
    def _columns(self) -> list[Any]:
        """The manifests columns this store's table has (an older store's has no
        ``source_type`` until a writable open adds it)."""
        return [c for c in _manifests.c
                if self._has_source_type or c.name != "source_type"]

    def mark_of(self, manifest_id: int) -> int:
        """The manifest id the watermark of ``manifest_id``'s image carries (its own id for
        a first signing, or for a manifest made before signings were recorded)."""
        if self._has_signings:
            with self._reading() as conn:
                mark = conn.execute(sa.select(_signings.c.mark_id).where(
                    _signings.c.manifest_id == int(manifest_id))).scalar_one_or_none()
            if mark is not None:
                return int(mark)
        return int(manifest_id)

    def resolve_mark(self, mark_id: int) -> ManifestRecord | None:
        """The active manifest a watermark carrying ``mark_id`` names: the newest of the
        lineage (the manifests signed on images carrying that mark), else ``mark_id``
        itself; None when neither is active."""
        if self._has_signings:
            with self._reading() as conn:
                newest = conn.execute(
                    sa.select(sa.func.max(_manifests.c.id))
                    .select_from(_manifests.join(
                        _signings, _signings.c.manifest_id == _manifests.c.id))
                    .where(_signings.c.mark_id == int(mark_id),
                           _manifests.c.state == "active")).scalar_one_or_none()
            if newest is not None:
                return self.find(int(newest))
        return self.find(mark_id)

    def _one(self, where: Any) -> ManifestRecord | None:
        with self._reading() as conn:
            row = conn.execute(sa.select(*self._columns).where(where)).mappings().first()
        if row is None:
            return None
        return _record(row)

    def get(self, manifest_id: int) -> ManifestRecord:
        """The active manifest ``manifest_id``; :class:`ManifestNotFoundError` otherwise."""
        rec = self._one(sa.and_(_manifests.c.id == int(manifest_id), _manifests.c.state == "active"))
        if rec is None:
            raise ManifestNotFoundError(f"no manifest {manifest_id} in this store")
        return rec

    def find(self, manifest_id: int) -> ManifestRecord | None:
        """The active manifest ``manifest_id``, or None."""
        try:
            return self.get(manifest_id)
        except ManifestNotFoundError:
            return None

    def by_label(self, label: str) -> ManifestRecord | None:
        return self._one(sa.and_(_manifests.c.label == label, _manifests.c.state == "active"))

    def by_ref(self, ref_id: int) -> ManifestRecord | None:
        return self._one(sa.and_(_manifests.c.ref_id == int(ref_id), _manifests.c.state == "active"))

    def list(self, limit: int = 100, offset: int = 0) -> list[ManifestRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(*self._columns).where(_manifests.c.state == "active")
                .order_by(_manifests.c.id).limit(limit).offset(offset)
            ).mappings().all()
        return [_record(r) for r in rows]

    def __len__(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(_manifests)
                .where(_manifests.c.state == "active")).scalar_one())

    def stats(self) -> dict[str, Any]:
        with self._reading() as conn:
            counts = {r[0]: r[1] for r in conn.execute(
                sa.select(_manifests.c.state, sa.func.count()).group_by(_manifests.c.state))}
        return {
            "path": str(self.path), "store_id": self.store_id, "format": FORMAT_NAME,
            "version": FORMAT_VERSION, "created_at": self.created_at,
            "watermark_method": self.watermark_method,
            "manifests": int(counts.get("active", 0)), "pending": int(counts.get("pending", 0)),
        }
