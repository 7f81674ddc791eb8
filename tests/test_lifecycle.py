"""One lifecycle for every persistent object (tracemark._lifecycle.Resource).

The same checks run on each: an exception inside ``with`` leaves nothing committed (the
object is reopened and looked at), a clean exit commits, ``close`` is idempotent, and any
use after close raises a typed :class:`ClosedError`. Real images from the shared corpus.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tracemark._db import schema_name
from tracemark._lifecycle import Resource
from tracemark.copydetect import CopyIndex
from tracemark.credentials import CredentialStore
from tracemark.errors import ClosedError, IndexClosedError
from tracemark.fingerprint import pdq
from tracemark.index import Index, VectorSpec
from tracemark.service.keys import KeyStore, service_engine

from .conftest import BACKENDS, PG_URL
from .conftest import corpus_crop as small

PHOTO = "photo/gcompris_50.jpg"


class Boom(Exception):
    """Raised inside a ``with`` block by the tests."""


@dataclass
class Case:
    """How to open one kind of object, write to it, count what it holds, and use it."""

    create: Callable[[Path], Resource]
    reopen: Callable[[Path], Resource]
    write: Callable[[Resource], None]
    count: Callable[[Resource], int]
    closed_error: type[ClosedError]


def _index_case(db: dict) -> Case:
    def write(ix: Resource) -> None:
        assert isinstance(ix, Index)
        rgb = small(PHOTO)
        bits, _quality = pdq.pdq_hash(rgb, packed=True)
        ix.add(content_hash=hashlib.sha256(rgb.tobytes()).hexdigest(),
               vectors={"pdq": np.asarray(bits, np.uint8)}, source=PHOTO)

    return Case(
        create=lambda p: Index.create(p, vector_specs={"pdq": VectorSpec("binary", 256)}, **db),
        reopen=lambda p: Index.open(p, database_url=db.get("database_url")),
        write=write,
        count=lambda ix: len(ix),  # type: ignore[arg-type]
        closed_error=IndexClosedError,
    )


def _copy_index_case(db: dict) -> Case:
    return Case(
        create=lambda p: CopyIndex.create(p, **db),
        reopen=lambda p: CopyIndex.open(p, database_url=db.get("database_url")),
        write=lambda ci: ci.add(small(PHOTO), source=PHOTO),  # type: ignore[attr-defined]
        count=lambda ci: len(ci),  # type: ignore[arg-type]
        closed_error=IndexClosedError,
    )


def _manifest_case(db: dict) -> Case:
    """A credential store's manifest rows: reserve is the write, pending rows the count."""
    return Case(
        create=lambda p: CredentialStore.create(p, **db),
        reopen=lambda p: CredentialStore.open(p, **db),
        write=lambda cs: cs.reserve(title="t", author=None,  # type: ignore[attr-defined]
                                    ai_generated=False, media_type="image/png"),
        count=lambda cs: cs.stats()["pending"],  # type: ignore[attr-defined]
        closed_error=ClosedError,
    )


def _fingerprint_case(db: dict) -> Case:
    """A credential store's fingerprints."""
    return Case(
        create=lambda p: CredentialStore.create(p, **db),
        reopen=lambda p: CredentialStore.open(p, **db),
        write=lambda cs: cs.add_fingerprint(small(PHOTO), source=PHOTO),  # type: ignore[attr-defined]
        count=lambda cs: cs.fingerprint_count(),  # type: ignore[attr-defined]
        closed_error=ClosedError,
    )


CASES = {"index": _index_case, "copy_index": _copy_index_case,
         "credential_manifests": _manifest_case, "credential_fingerprints": _fingerprint_case}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> dict:
    if request.param == "sqlite":
        return {}
    return {"database_url": PG_URL, "schema": schema_name("lc", uuid.uuid4().hex[:12])}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, db: dict, corpus_dir: Path) -> Case:
    return CASES[request.param](db)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "obj"


def test_an_exception_in_with_commits_nothing(case: Case, path: Path) -> None:
    case.create(path).close()
    with pytest.raises(Boom), case.reopen(path) as obj:
        case.write(obj)
        assert case.count(obj) == 1  # the object sees its own pending write
        raise Boom
    assert obj.closed
    with case.reopen(path) as again:
        assert case.count(again) == 0


def test_a_clean_exit_commits(case: Case, path: Path) -> None:
    with case.create(path) as obj:
        case.write(obj)
    assert obj.closed
    with case.reopen(path) as again:
        assert case.count(again) == 1


def test_rollback_discards_and_commit_keeps(case: Case, path: Path) -> None:
    with case.create(path) as obj:
        case.write(obj)
        obj.rollback()
        assert case.count(obj) == 0
        case.write(obj)
        obj.commit()
        obj.rollback()  # nothing pending: a no-op
        assert case.count(obj) == 1
    with case.reopen(path) as again:
        assert case.count(again) == 1


def test_close_commits_and_is_idempotent(case: Case, path: Path) -> None:
    obj = case.create(path)
    assert not obj.closed
    case.write(obj)
    obj.close()
    obj.close()
    assert obj.closed
    with obj:  # entering a closed object and leaving cleanly is harmless too
        pass
    with case.reopen(path) as again:
        assert case.count(again) == 1


def test_use_after_close_is_a_typed_error(case: Case, path: Path) -> None:
    obj = case.create(path)
    obj.close()
    for use in (lambda: case.write(obj), lambda: case.count(obj), obj.commit, obj.rollback):
        with pytest.raises(case.closed_error, match="is closed"):
            use()


def test_the_next_writer_may_open_after_a_failed_block(case: Case, path: Path) -> None:
    """Rolling back releases the writer lock (indexes): a second open does not block."""
    case.create(path).close()
    with pytest.raises(Boom), case.reopen(path):
        raise Boom
    case.reopen(path).close()


# --- the credential store's read-only side and its verbs on a closed store ------------------


def test_a_closed_credential_store_refuses_every_verb(tmp_path: Path, corpus_dir: Path) -> None:
    store = CredentialStore.create(tmp_path / "s")
    store.close()
    rgb = small(PHOTO)
    uses: list[Callable[[], object]] = [
        lambda: store.get(1), lambda: store.find(1), lambda: store.list(), lambda: len(store),
        lambda: store.stats(), lambda: store.mark(rgb, 1), lambda: store.read_mark(rgb),
        lambda: store.search(rgb), lambda: store.fingerprint_count(),
        lambda: store.list_fingerprints(), lambda: store.remove_fingerprint(1),
        lambda: store.index,
    ]
    for use in uses:
        with pytest.raises(ClosedError, match="credential store is closed"):
            use()


def test_a_failed_sign_like_block_leaves_neither_row_nor_fingerprint(
    tmp_path: Path, corpus_dir: Path
) -> None:
    """Reserve, fingerprint and activate, then fail: the whole block is undone."""
    path = tmp_path / "s"
    CredentialStore.create(path).close()
    with pytest.raises(Boom), CredentialStore.open(path) as store:
        mid = store.reserve(title="t", author=None, ai_generated=False, media_type="image/png")
        added = store.add_fingerprint(small(PHOTO))
        store.activate(mid, label="urn:test:1", ref_id=added.id, file_sha256="0" * 64,
                       signer="me", manifest_json="{}", manifest_store=b"jumbf")
        assert store.get(mid).ref_id == added.id and len(store) == 1
        raise Boom
    with CredentialStore.open(path, read_only=True) as store:
        assert (len(store), store.stats()["pending"], store.fingerprint_count()) == (0, 0, 0)


def test_credential_store_schemas_name_both_parts() -> None:
    assert CredentialStore.schemas("tm_col_x") == ["tm_col_x", "tm_col_x_ix"]


# --- the API key store: writes go through at once; the same close and with -------------


def test_key_store_lifecycle(tmp_path: Path) -> None:
    engine = service_engine(tmp_path, None)
    with pytest.raises(Boom), KeyStore(engine) as keys:
        token, rec = keys.create(scope="read", collections=["a"])
        raise Boom  # a key is committed when create returns: it survives
    assert keys.closed
    with KeyStore(engine) as again:
        assert again.check(token) == rec and [k.id for k in again.list()] == [rec.id]
    keys.close()  # idempotent
    for use in (lambda: keys.check(token), keys.list, lambda: keys.revoke(rec.id),
                lambda: keys.create(scope="read", collections=["a"])):
        with pytest.raises(ClosedError, match="key store is closed"):
            use()
    # the engine was lent, not owned: closing the key store left it usable
    owned = KeyStore(engine, owns_engine=True)
    assert owned.check(token) == rec
    owned.close()
    assert owned.closed
