"""The service's collections in its database, so that replicas share them.

When ``tracemark serve`` keeps its metadata in a database server (``--database-url``),
every replica reads the list of collections from the table ``collections`` of that
database, not from its own data directory: a collection created through one replica is
served by all, a collection deleted through one is gone for all (a replica notices on the
collection's next request). Each row holds the collection's watermark secret, so that a
replica that has never seen the collection can open it (its local directory is then made
by :meth:`tracemark.credentials.CredentialStore.attach`); protect that database as you
would the keys. Each creation draws a new ``uid``: a name deleted and created again is a
new collection, and replicas holding the old one drop it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from tracemark.service.keys import service_metadata

__all__ = ["CollectionRecord", "CollectionRegistry", "CollectionTaken"]

_collections = sa.Table(
    "collections",
    service_metadata,
    sa.Column("name", sa.String(48), primary_key=True),
    sa.Column("uid", sa.String(32), nullable=False),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)


class CollectionTaken(Exception):
    """The name is registered already (by this or another replica)."""


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    uid: str
    secret: bytes
    created_at: str


class CollectionRegistry:
    """The ``collections`` table: claim, look up, list and release collection names. Each
    call is one committed transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        _collections.create(engine, checkfirst=True)

    def names(self) -> list[str]:
        with self._engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(_collections.c.name)
                                               .order_by(_collections.c.name))]

    def lookup(self, name: str) -> CollectionRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(_collections).where(
                _collections.c.name == name)).first()
        return None if row is None else CollectionRecord(row.name, row.uid, bytes(row.secret),
                                                         row.created_at)

    def claim(self, name: str) -> CollectionRecord:
        """Register ``name`` with a new uid and secret (32 bytes from the OS CSPRNG); raises
        :class:`CollectionTaken` when it is registered."""
        rec = CollectionRecord(name, secrets.token_hex(16), secrets.token_bytes(32),
                               datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            with self._engine.begin() as conn:
                conn.execute(_collections.insert().values(
                    name=rec.name, uid=rec.uid, secret=rec.secret, created_at=rec.created_at))
        except sa.exc.IntegrityError:
            raise CollectionTaken(name) from None
        return rec

    def adopt(self, name: str, secret: bytes) -> None:
        """Register a collection made before the registry, with its own ``secret`` and uid
        ``""`` (its schemas keep their earlier names); :class:`CollectionTaken` when the
        name is registered."""
        try:
            with self._engine.begin() as conn:
                conn.execute(_collections.insert().values(
                    name=name, uid="", secret=bytes(secret),
                    created_at=datetime.now(UTC).isoformat(timespec="seconds")))
        except sa.exc.IntegrityError:
            raise CollectionTaken(name) from None

    def release(self, name: str, uid: str) -> bool:
        """Unregister ``name`` if it still has ``uid``; whether it did."""
        with self._engine.begin() as conn:
            n = conn.execute(_collections.delete().where(
                _collections.c.name == name, _collections.c.uid == uid)).rowcount
        return n == 1
