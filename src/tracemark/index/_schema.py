"""The index's tables (SQLAlchemy Core, one definition for SQLite and PostgreSQL), its format
versions, and the checks a reader runs before trusting a database.

Format 1: ``meta``, ``refs``, ``vector_sets``, ``vectors``, ``blobs``. Format 2 adds
``documents`` (named JSON or binary documents kept with the metadata: the copy-detection
calibration) and ``changes`` (a log of added and removed references, so that processes
sharing a database see each other's writes). A writable open of a format-1 index adds
the two tables and records format 2 (an additive migration); a read-only open reads it as
it is. See ``docs/index-format.md``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from tracemark.errors import ConfigError
from tracemark.index.errors import IndexFormatError
from tracemark.index.model import VectorSpec, check_set_name

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "METADATA", "meta", "refs", "vector_sets",
           "vectors", "blobs", "documents", "changes", "check_format", "load_vector_sets",
           "migrate", "DB_ERRORS"]

FORMAT_NAME = "tracemark-index"
FORMAT_VERSION = 2

DB_ERRORS = (sa.exc.DBAPIError, sa.exc.OperationalError)
"""What a broken, foreign or unreachable database raises through SQLAlchemy."""

# SQLite's INTEGER PRIMARY KEY is the rowid (the format-1 files use it); PostgreSQL's is BIGINT.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

METADATA = sa.MetaData()
meta = sa.Table(
    "meta", METADATA,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
refs = sa.Table(
    "refs", METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.Text, nullable=False, unique=True),
    sa.Column("source", sa.Text),
    sa.Column("owner", sa.Text),
    sa.Column("license", sa.Text),
    sa.Column("notes", sa.Text),
    sa.Column("added_at", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)
vector_sets = sa.Table(
    "vector_sets", METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("dim", sa.BigInteger, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("index_type", sa.Text, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
)
vectors = sa.Table(
    "vectors", METADATA,
    sa.Column("ref_id", sa.BigInteger, sa.ForeignKey("refs.id"), nullable=False),
    sa.Column("set_id", sa.BigInteger, sa.ForeignKey("vector_sets.id"), nullable=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Index("vectors_by_ref", "ref_id", "set_id", unique=True),
    sa.Index("vectors_by_set", "set_id", "ref_id", "n_rows"),
)
blobs = sa.Table(
    "blobs", METADATA,
    sa.Column("ref_id", sa.BigInteger, sa.ForeignKey("refs.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("ref_id", "name"),
    sqlite_with_rowid=False,
)
documents = sa.Table(  # format 2
    "documents", METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
)
changes = sa.Table(  # format 2
    "changes", METADATA,
    sa.Column("seq", _ID, primary_key=True, autoincrement=True),
    sa.Column("ref_id", sa.BigInteger, nullable=False),
    sa.Column("op", sa.Text, nullable=False),  # 'add' | 'remove'
    sqlite_autoincrement=True,
)

_V1_TABLES = (meta, refs, vector_sets, vectors, blobs)
_V2_TABLES = (documents, changes)


def _required(version: int) -> tuple[sa.Table, ...]:
    return _V1_TABLES + (_V2_TABLES if version >= 2 else ())


def check_format(conn: sa.Connection, *, source: str) -> dict[str, str]:
    """Check the magic, version and tables of an index database; return its ``meta`` table.

    Raises :class:`IndexFormatError` for a foreign or corrupt database, a missing table or
    column, or a format version this reader does not know.
    """
    try:
        inspector = sa.inspect(conn)
        schema = conn.get_execution_options().get("schema_translate_map", {}).get(None)
        tables = set(inspector.get_table_names(schema=schema))
        if "meta" not in tables:
            raise IndexFormatError("not a tracemark index: no 'meta' table", source=source)
        rows = conn.execute(sa.select(meta.c.key, meta.c.value)).all()
        found_meta = {str(k): str(v) for k, v in rows}
    except DB_ERRORS as exc:
        raise IndexFormatError(
            f"the index's {_db_name(conn)} database is not readable ({_reason(exc)})",
            source=source) from exc
    if found_meta.get("format") != FORMAT_NAME:
        raise IndexFormatError(
            f"not a tracemark index: meta 'format' is {found_meta.get('format')!r}, "
            f"expected {FORMAT_NAME!r}", source=source)
    raw = found_meta.get("format_version", "")
    try:
        version = int(raw)
    except ValueError:
        raise IndexFormatError(f"invalid format_version {raw!r}", source=source) from None
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index format version {version} is newer than this tracemark reads "
            f"(up to {FORMAT_VERSION}); upgrade tracemark", source=source)
    if version < 1:
        raise IndexFormatError(f"unknown index format version {version}", source=source)
    try:
        for table in _required(version):
            if table.name not in tables:
                raise IndexFormatError(f"corrupt index: table {table.name!r} is missing",
                                       source=source)
            found = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
            wanted = {c.name for c in table.columns}
            if not wanted <= found:
                missing = ", ".join(sorted(wanted - found))
                raise IndexFormatError(
                    f"corrupt index: table {table.name!r} lacks column(s) {missing}",
                    source=source)
    except DB_ERRORS as exc:
        raise IndexFormatError(f"corrupt index database ({_reason(exc)})", source=source) from exc
    return found_meta


def migrate(conn: sa.Connection, found_meta: dict[str, str]) -> dict[str, str]:
    """Bring a format-1 index to format 2 in the open transaction of ``conn`` (adds the
    ``documents`` and ``changes`` tables); the new ``meta``."""
    if int(found_meta["format_version"]) >= FORMAT_VERSION:
        return found_meta
    for table in _V2_TABLES:
        table.create(conn, checkfirst=True)
    conn.execute(meta.update().where(meta.c.key == "format_version")
                 .values(value=str(FORMAT_VERSION)))
    return {**found_meta, "format_version": str(FORMAT_VERSION)}


def create_tables(conn: sa.Connection) -> None:
    """Create every table of the current format (in ``conn``'s schema)."""
    METADATA.create_all(conn)


def load_vector_sets(conn: sa.Connection, *, source: str) -> dict[str, tuple[int, VectorSpec]]:
    """The vector sets recorded in the database: ``name -> (set_id, spec)``."""
    out: dict[str, tuple[int, VectorSpec]] = {}
    try:
        rows = conn.execute(
            sa.select(vector_sets.c.id, vector_sets.c.name, vector_sets.c.kind,
                      vector_sets.c.dim, vector_sets.c.metric, vector_sets.c.index_type,
                      vector_sets.c.params).order_by(vector_sets.c.id)).all()
    except DB_ERRORS as exc:
        raise IndexFormatError(f"corrupt index database ({_reason(exc)})", source=source) from exc
    for set_id, name, kind, dim, metric, index_type, params in rows:
        try:
            check_set_name(name)
            extra = json.loads(params)
            if not isinstance(extra, dict):
                raise ValueError("params is not a JSON object")
            spec = VectorSpec(
                kind=kind,
                dim=int(dim),
                metric=metric,
                index=index_type,
                hnsw_m=extra.get("hnsw_m", 32),
                hnsw_ef_search=extra.get("hnsw_ef_search", 128),
                ivf_nprobe=extra.get("ivf_nprobe", 32),
                auto_rows=extra.get("auto_rows", 200_000),
            )
        except (ConfigError, ValueError, TypeError) as exc:
            raise IndexFormatError(f"corrupt vector set {name!r}: {exc}", source=source) from exc
        out[name] = (int(set_id), spec)
    return out


def _db_name(conn: Any) -> str:
    """``SQLite`` or ``PostgreSQL``: the product behind a connection or engine."""
    return {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(conn.dialect.name,
                                                                  conn.dialect.name)


def _reason(exc: Any) -> str:
    """The driver's message of a SQLAlchemy error, without SQLAlchemy's SQL echo."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]
