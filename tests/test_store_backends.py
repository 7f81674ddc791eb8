"""The metadata stores against both backends: SQLite files (the default) and a real
PostgreSQL server (started by scripts/test.sh, URL in TRACEMARK_TEST_PG_URL)."""

from __future__ import annotations

import io
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tracemark._db import schema_name, url_engine
from tracemark.credentials import (
    CredentialStore,
    SignOptions,
    VerifyOptions,
    init_dev_ca,
    load_signing_credentials,
    load_trust_anchors,
    sign_image,
    verify_image,
)
from tracemark.errors import ConfigError, ManifestNotFoundError, ManifestStoreError
from tracemark.imageio import encode_image, load_image
from tracemark.service.keys import KeyStore, service_engine

from .conftest import BACKENDS, CORPUS, PG_URL, requires_pg
from .conftest import corpus_crop as small


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> dict:
    """Keyword arguments that put a store's metadata in this backend (a fresh schema)."""
    if request.param == "sqlite":
        return {}
    return {"database_url": PG_URL, "schema": schema_name("t", uuid.uuid4().hex[:12])}


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("be-certs")
    ca = init_dev_ca(d)
    return load_signing_credentials(ca.signer_chain, ca.signer_key), load_trust_anchors(ca.ca_cert)




def _activate(store: CredentialStore, mid: int, n: int) -> None:
    store.activate(mid, label=f"urn:test:{n}", ref_id=n, file_sha256=f"{n:064x}",
                   signer="CN=test", manifest_json=json.dumps({"n": n}), manifest_store=bytes([n]) * 10)


def test_manifest_store_lifecycle(tmp_path: Path, db: dict) -> None:
    path = tmp_path / "store"
    with CredentialStore.create(path, **db) as store:
        ids = [store.reserve(title=f"t{i}", author=None, ai_generated=i % 2 == 0,
                             media_type="image/jpeg") for i in range(4)]
        for n, mid in enumerate(ids[:3], start=1):
            _activate(store, mid, n)
        store.discard(ids[3])
        pending = store.reserve(title="p", author=None, ai_generated=False, media_type=None)
        assert len(store) == 3 and store.stats()["pending"] == 1
        store_id = store.store_id
    with CredentialStore.open(path, read_only=True, **db) as store:
        assert store.store_id == store_id and len(store) == 3
        rec = store.get(ids[1])
        assert (rec.label, rec.ref_id, rec.title, rec.ai_generated) == ("urn:test:2", 2, "t1", False)
        assert rec.manifest == {"n": 2} and rec.manifest_store == bytes([2]) * 10
        assert store.by_label("urn:test:3").id == ids[2]
        assert store.by_ref(1).id == ids[0]
        assert [r.id for r in store.list()] == ids[:3]
        assert [r.id for r in store.list(limit=1, offset=1)] == [ids[1]]
        assert store.find(pending) is None and store.find(ids[3]) is None
        with pytest.raises(ManifestNotFoundError):
            store.get(ids[3])
        with pytest.raises(ManifestStoreError, match="read-only"):
            store.reserve(title=None, author=None, ai_generated=False, media_type=None)


def test_concurrent_reserves_get_distinct_ids(tmp_path: Path, db: dict) -> None:
    with CredentialStore.create(tmp_path / "store", **db) as store:
        def work(i: int) -> int:
            mid = store.reserve(title=str(i), author=None, ai_generated=False, media_type=None)
            _activate(store, mid, i % 200 + 1)
            return mid
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(work, range(40)))
        assert len(set(ids)) == 40 and len(store) == 40


def test_store_identity_is_checked(tmp_path: Path, db: dict) -> None:
    a = CredentialStore.create(tmp_path / "a", **db)
    a.close()
    if db:  # the same schema cannot hold a second store
        with pytest.raises(ManifestStoreError, match="already holds"):
            CredentialStore.create(tmp_path / "b", **db)
        # a directory whose secret is not the one the database was made with
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "secret.key").write_bytes(os.urandom(32))
        with pytest.raises(ManifestStoreError, match="does not belong"):
            CredentialStore.open(tmp_path / "c", **db)
    else:
        (tmp_path / "a" / "secret.key").write_bytes(os.urandom(32))
        with pytest.raises(ManifestStoreError, match="does not belong"):
            CredentialStore.open(tmp_path / "a", **db)


def test_sign_and_verify_with_either_backend(tmp_path: Path, db: dict, creds) -> None:  # type: ignore[no-untyped-def]
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    signer, trust = creds
    with CredentialStore.create(tmp_path / "store", **db) as store:
        res, signed = sign_image(store, encode_image(small("photo/gcompris_100.jpg"), "PNG"),
                                 tmp_path / "s.jpg", signer, SignOptions(ai_generated=True))
        opts = VerifyOptions(trust_pem=trust)
        v = verify_image(signed, store, opts)
        assert (v.state, v.manifest_id) == ("trusted", res.manifest_id)
        stripped = encode_image(load_image(signed), "JPEG", quality=80)
        v = verify_image(stripped, store, opts)
        assert (v.state, v.manifest_id, v.signature) == ("recovered", res.manifest_id, "trusted")


def test_key_store(tmp_path: Path, db: dict) -> None:
    if db:
        engine = url_engine(db["database_url"], schema=db["schema"], create_schema=True)
    else:
        engine = service_engine(tmp_path, None)
    keys = KeyStore(engine)
    token, rec = keys.create(scope="read", collections=["a", "b"], name="r")
    assert keys.check(token) == rec and rec.allows("a", write=False)
    assert not rec.allows("a", write=True) and not rec.allows("c", write=False)
    assert keys.check(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert keys.check("tm_" + rec.id) is None and keys.check(None) is None
    with engine.connect() as conn:
        table = f'"{db["schema"]}".api_keys' if db else "api_keys"
        stored = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    assert not any(token in str(v) or token.split("_", 2)[2] in str(v) for row in stored for v in row)
    assert keys.revoke(rec.id) and keys.check(token) is None and not keys.revoke(rec.id)
    assert [k.id for k in keys.list()] == [rec.id] and keys.list()[0].revoked_at is not None
    with pytest.raises(ConfigError):
        keys.create(scope="admin", collections=["*"])
    with pytest.raises(ConfigError):
        keys.create(scope="read", collections=[" "])
    engine.dispose()


@requires_pg
def test_service_on_postgresql(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    certs = tmp_path / "certs"
    init_dev_ca(certs)
    name = "pg-" + uuid.uuid4().hex[:8]
    app = create_app(ServiceSettings(data_dir=tmp_path / "data", database_url=PG_URL,
                                     cert=certs / "signer.pem", key=certs / "signer.key",
                                     trust=certs / "ca.pem"))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.post("/v1/collections", json={"name": name}, headers=h).status_code == 201
        img = encode_image(small("photo/gcompris_100.jpg"), "PNG")
        res = client.post(f"/v1/collections/{name}/sign", headers=h,
                          files={"image": ("a.png", io.BytesIO(img), "image/png")})
        assert res.status_code == 200, res.text
        v = client.post(f"/v1/collections/{name}/verify", headers=h,
                        files={"image": ("s.jpg", io.BytesIO(res.content), "image/jpeg")}).json()
        assert (v["state"], v["manifest_id"]) == ("trusted", int(res.headers["X-Manifest-Id"]))
    # the manifests and the keys are in PostgreSQL, in their own schemas; the collection is
    # in the shared registry (replicas), its schemas named after its registry uid
    rec = app.state.tm.registry.lookup(name)
    assert rec is not None and len(rec.uid) == 32 and len(rec.secret) == 32
    schema = schema_name("tm_c", name, rec.uid[:8])
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        n = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".manifests'
                                 " WHERE state = 'active'")).scalar_one()
        keys = conn.execute(sa.text("SELECT count(*) FROM tracemark_service.api_keys")).scalar_one()
    engine.dispose()
    assert n == 1 and keys >= 1
    col = tmp_path / "data" / "collections" / name
    assert not (col / "credentials.sqlite").exists()
    assert not (col / "index" / "index.sqlite").exists() and (col / "index" / "database.json").exists()
    with TestClient(app) as client:  # deleting the collection drops its schemas
        assert client.delete(f"/v1/collections/{name}", headers=h).status_code == 200
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata "
                                    "WHERE schema_name LIKE :p"),
                            {"p": schema + "%"}).all()
    engine.dispose()
    assert left == [] and not col.exists() and app.state.tm.registry.lookup(name) is None


@requires_pg
def test_service_adopts_postgresql_collections_made_before_the_registry(tmp_path: Path) -> None:
    """A data directory whose collections a version without the shared registry made (their
    schemas named tm_col_<name>) is registered when the service starts, and served."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tracemark.credentials import CredentialStore
    from tracemark.service.app import ServiceSettings, create_app

    name = "old-" + uuid.uuid4().hex[:8]
    data = tmp_path / "data"
    CredentialStore.create(data / "collections" / name, database_url=PG_URL,
                           schema=schema_name("tm_col", name)).close()
    app = create_app(ServiceSettings(data_dir=data, database_url=PG_URL))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    rec = app.state.tm.registry.lookup(name)
    assert rec is not None and rec.uid == ""
    secret = (data / "collections" / name / "secret.key").read_bytes()
    assert rec.secret == secret
    with TestClient(app) as client:
        assert name in client.get("/v1/collections", headers=h).json()["collections"]
        assert client.get(f"/v1/collections/{name}/images", headers=h).status_code == 200
        assert client.delete(f"/v1/collections/{name}", headers=h).status_code == 200
    assert app.state.tm.registry.lookup(name) is None


def test_a_store_made_before_the_source_type_column_gains_it(tmp_path: Path, db: dict) -> None:
    """A store whose ``manifests`` table predates ``source_type`` (dropped here to make
    one): a read-only open reads its rows with None, a writable open adds the column in the
    store's own schema (PostgreSQL keeps each store in a schema the inspector and a textual
    ALTER must both name)."""
    path = tmp_path / "store"
    with CredentialStore.create(path, **db) as store:
        _activate(store, store.reserve(title="old", author=None, ai_generated=False,
                                       media_type="image/jpeg"), 1)
    if db:
        engine = url_engine(db["database_url"], schema=db["schema"])
        table = f'"{db["schema"]}".manifests'
    else:
        engine = sa.create_engine(f"sqlite:///{path / 'credentials.sqlite'}")
        table = "manifests"
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN source_type"))
    engine.dispose()
    with CredentialStore.open(path, read_only=True, **db) as store:
        assert [r.source_type for r in store.list()] == [None]
    with CredentialStore.open(path, **db) as store:
        mid = store.reserve(title="new", author=None, ai_generated=True,
                            media_type="image/jpeg", source_type="trainedAlgorithmicMedia")
        _activate(store, mid, 2)
    with CredentialStore.open(path, read_only=True, **db) as store:
        assert [r.source_type for r in store.list()] == [None, "trainedAlgorithmicMedia"]
