"""SQLAlchemy engines for tracemark's metadata: SQLite files by default, or any database
URL (PostgreSQL is tested), with an optional schema per store so that several stores share
one database without their tables colliding."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tracemark.errors import ConfigError

__all__ = ["sqlite_engine", "url_engine", "schema_name"]

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def schema_name(*parts: str) -> str:
    """A safe schema name from ``parts`` (lower case, ``-`` becomes ``_``)."""
    name = "_".join(p.lower().replace("-", "_") for p in parts)
    if not _SCHEMA_RE.match(name):
        raise ConfigError(f"not a usable schema name: {name!r}")
    return name


def sqlite_engine(path: Path, *, read_only: bool = False) -> sa.Engine:
    """A SQLite file in WAL mode with synchronous=FULL (read-only opens the file mode=ro)."""
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if read_only else f"sqlite:///{path}"
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    return engine


def url_engine(url: str, *, schema: str | None = None, create_schema: bool = False) -> sa.Engine:
    """An engine for ``url``; with ``schema``, every unqualified table lives in that schema
    (created when ``create_schema``)."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"unusable database URL: {exc}") from None
    if schema is None or engine.dialect.name == "sqlite":
        return engine
    if not _SCHEMA_RE.match(schema):
        raise ConfigError(f"not a usable schema name: {schema!r}")
    if create_schema:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    return engine.execution_options(schema_translate_map={None: schema})
