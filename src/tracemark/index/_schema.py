"""The SQLite schema of format version 1, and the checks a reader runs before trusting a file.

See ``docs/index-format.md`` for the format and its version policy.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tracemark.errors import ConfigError
from tracemark.index.errors import IndexFormatError
from tracemark.index.model import VectorSpec, check_set_name

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SCHEMA", "check_format", "load_vector_sets"]

FORMAT_NAME = "tracemark-index"
FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE refs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    content_hash TEXT NOT NULL UNIQUE,
    source       TEXT,
    owner        TEXT,
    license      TEXT,
    notes        TEXT,
    added_at     TEXT NOT NULL
);
CREATE TABLE vector_sets (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    dim        INTEGER NOT NULL,
    metric     TEXT NOT NULL,
    index_type TEXT NOT NULL,
    params     TEXT NOT NULL
);
CREATE TABLE vectors (
    ref_id INTEGER NOT NULL REFERENCES refs(id),
    set_id INTEGER NOT NULL REFERENCES vector_sets(id),
    n_rows INTEGER NOT NULL,
    data   BLOB NOT NULL
);
CREATE UNIQUE INDEX vectors_by_ref ON vectors(ref_id, set_id);
CREATE INDEX vectors_by_set ON vectors(set_id, ref_id, n_rows);
CREATE TABLE blobs (
    ref_id INTEGER NOT NULL REFERENCES refs(id),
    name   TEXT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (ref_id, name)
) WITHOUT ROWID;
"""

_REQUIRED_COLUMNS = {
    "meta": {"key", "value"},
    "refs": {"id", "content_hash", "source", "owner", "license", "notes", "added_at"},
    "vector_sets": {"id", "name", "kind", "dim", "metric", "index_type", "params"},
    "vectors": {"ref_id", "set_id", "n_rows", "data"},
    "blobs": {"ref_id", "name", "data"},
}


def _tables(conn: Any) -> set[str]:
    if hasattr(conn, "tables"):  # PostgreSQL (index._pg.PgConnection)
        return set(conn.tables())
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(conn: Any, table: str) -> set[str]:
    if hasattr(conn, "columns"):
        return set(conn.columns(table))
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def check_format(conn: sqlite3.Connection, *, source: str) -> dict[str, str]:
    """Check the magic, version and tables of an index database; return its ``meta`` table.

    Raises :class:`IndexFormatError` for a foreign or corrupt database, a missing table or
    column, or a format version this reader does not know.
    """
    try:
        tables = _tables(conn)
        if "meta" not in tables:
            raise IndexFormatError("not a tracemark index: no 'meta' table", source=source)
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(
            f"index.sqlite is not a readable SQLite database ({exc})", source=source
        ) from exc
    if meta.get("format") != FORMAT_NAME:
        raise IndexFormatError(
            f"not a tracemark index: meta 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}",
            source=source,
        )
    raw = meta.get("format_version", "")
    try:
        version = int(raw)
    except ValueError:
        raise IndexFormatError(f"invalid format_version {raw!r}", source=source) from None
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index format version {version} is newer than this tracemark reads "
            f"(up to {FORMAT_VERSION}); upgrade tracemark",
            source=source,
        )
    if version < 1:
        raise IndexFormatError(f"unknown index format version {version}", source=source)
    try:
        for table, columns in _REQUIRED_COLUMNS.items():
            if table not in tables:
                raise IndexFormatError(f"corrupt index: table {table!r} is missing", source=source)
            found = _columns(conn, table)
            if not columns <= found:
                missing = ", ".join(sorted(columns - found))
                raise IndexFormatError(
                    f"corrupt index: table {table!r} lacks column(s) {missing}", source=source
                )
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"corrupt index database ({exc})", source=source) from exc
    return meta


def load_vector_sets(conn: sqlite3.Connection, *, source: str) -> dict[str, tuple[int, VectorSpec]]:
    """The vector sets recorded in the database: ``name -> (set_id, spec)``."""
    out: dict[str, tuple[int, VectorSpec]] = {}
    try:
        rows = conn.execute(
            "SELECT id, name, kind, dim, metric, index_type, params FROM vector_sets ORDER BY id"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"corrupt index database ({exc})", source=source) from exc
    for set_id, name, kind, dim, metric, index_type, params in rows:
        try:
            check_set_name(name)
            extra = json.loads(params)
            if not isinstance(extra, dict):
                raise ValueError("params is not a JSON object")
            spec = VectorSpec(
                kind=kind,
                dim=dim,
                metric=metric,
                index=index_type,
                hnsw_m=extra.get("hnsw_m", 32),
                hnsw_ef_search=extra.get("hnsw_ef_search", 128),
            )
        except (ConfigError, ValueError, TypeError) as exc:
            raise IndexFormatError(f"corrupt vector set {name!r}: {exc}", source=source) from exc
        out[name] = (int(set_id), spec)
    return out
