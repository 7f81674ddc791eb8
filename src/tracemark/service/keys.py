"""API keys: stored hashed, each scoped to collections and to read or write.

A key looks like ``tm_<id>_<secret>``: ``id`` (8 hex characters) finds the row, ``secret``
(43 URL-safe characters, 256 bits) is checked against the stored SHA-256 of the whole key
with a constant-time comparison. The key itself is shown once, when it is created, and
never stored. ``collections`` is a list of collection names or ``["*"]`` for all; ``scope``
is ``read`` (search, detect, verify, list) or ``write`` (also add, remove, embed, sign,
create collections when the collections are ``*``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tracemark._lifecycle import Resource
from tracemark.errors import ConfigError

__all__ = ["ApiKey", "KeyStore", "SCOPES", "SERVICE_SCHEMA", "service_engine", "service_metadata"]

SERVICE_SCHEMA = "tracemark_service"
"""The schema of the service's own tables in a shared database (PostgreSQL)."""


def service_engine(data_dir: Path, database_url: str | None) -> sa.Engine:
    """The service's metadata database: ``<data>/service.sqlite`` or ``database_url``."""
    from tracemark._db import sqlite_engine, url_engine

    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_engine(data_dir / "service.sqlite")
    return url_engine(database_url, schema=SERVICE_SCHEMA, create_schema=True)

SCOPES = ("read", "write")

service_metadata = sa.MetaData()
_keys = sa.Table(
    "api_keys",
    service_metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("scope", sa.String(8), nullable=False),
    sa.Column("collections", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32)),
)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    scope: str
    collections: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    def allows(self, collection: str | None, *, write: bool) -> bool:
        """Whether this key may read (or write) ``collection`` (None: no collection)."""
        if self.revoked_at is not None:
            return False
        if write and self.scope != "write":
            return False
        if collection is None:
            return True
        return "*" in self.collections or collection in self.collections

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scope": self.scope,
                "collections": list(self.collections), "created_at": self.created_at,
                "revoked_at": self.revoked_at}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore(Resource):
    """API keys in a database reachable by SQLAlchemy (SQLite by default).

    Every write commits at once (a key is usable when :meth:`create` returns), so there is
    nothing to commit or roll back; the lifecycle is that of
    :class:`tracemark._lifecycle.Resource`: ``with`` blocks, an idempotent :meth:`close`,
    and :class:`~tracemark.errors.ClosedError` on use after close. ``owns_engine``: close
    disposes of the engine too.
    """

    _noun = "key store"

    def __init__(self, engine: sa.Engine, *, owns_engine: bool = False) -> None:
        self._init_resource()
        self._engine = engine
        self._owns_engine = owns_engine
        service_metadata.create_all(engine)

    def _release(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def create(self, *, scope: str, collections: list[str], name: str | None = None) -> tuple[str, ApiKey]:
        """A new key: returns the token (shown once) and its record."""
        self._check_open()
        if scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
        cols = tuple(c.strip() for c in collections if c.strip())
        if not cols:
            raise ConfigError("a key needs at least one collection (or '*')")
        key_id = secrets.token_hex(4)
        token = f"tm_{key_id}_{secrets.token_urlsafe(32)}"
        rec = ApiKey(key_id, name, scope, cols, datetime.now(UTC).isoformat(timespec="seconds"))
        with self._engine.begin() as conn:
            conn.execute(_keys.insert().values(
                id=key_id, hash=_digest(token), name=name, scope=scope,
                collections=json.dumps(list(cols)), created_at=rec.created_at))
        return token, rec

    def check(self, token: str | None) -> ApiKey | None:
        """The key record of a presented token, or None (unknown, malformed or revoked)."""
        self._check_open()
        if not token or not token.startswith("tm_") or len(token) > 200:
            return None
        parts = token.split("_")
        if len(parts) < 3:
            return None
        key_id = parts[1]
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_keys).where(_keys.c.id == key_id)).mappings().first()
        if row is None or not hmac.compare_digest(row["hash"], _digest(token)):
            return None
        rec = self._record(row)
        return None if rec.revoked_at is not None else rec

    @staticmethod
    def _record(row: Any) -> ApiKey:
        return ApiKey(row["id"], row["name"], row["scope"], tuple(json.loads(row["collections"])),
                      row["created_at"], row["revoked_at"])

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when it is unknown or already revoked."""
        self._check_open()
        with self._engine.begin() as conn:
            n = conn.execute(_keys.update().where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
                             .values(revoked_at=datetime.now(UTC).isoformat(timespec="seconds"))
                             ).rowcount
        return n == 1

    def list(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        self._check_open()
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_keys).order_by(_keys.c.created_at)).mappings().all()
        return [self._record(r) for r in rows]
