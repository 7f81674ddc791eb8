"""Stateless replicas: two real `tracemark serve` processes, each with its own data
directory, on PostgreSQL (metadata, API keys, the collection registry) and Milvus (vectors),
the servers scripts/test.sh starts. What one replica writes the other serves at once, and a
replica killed with SIGKILL during a bulk add loses no acknowledged add; the database and
Milvus agree afterwards."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from tracemark.imageio import encode_image  # noqa: E402

from .conftest import CORPUS, MILVUS_URL, PG_URL, requires_milvus, requires_pg  # noqa: E402
from .test_service_crash import _free_port, _images, _start, bulk_add_then_kill  # noqa: E402

pytestmark = [requires_pg, requires_milvus, pytest.mark.slow]


class Replica:
    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.proc = self._start()

    def _start(self):
        return _start(self.data, self.port, self.log, str(PG_URL),
                      extra=("--vectors", str(MILVUS_URL)), wait=90)

    def restart(self) -> None:
        self.proc = self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()


def _upload(data: bytes, name: str = "i.png", kind: str = "image/png") -> dict:
    return {"image": (name, io.BytesIO(data), kind)}


def _jpeg_copy(png: bytes) -> bytes:
    from tracemark.imageio import load_image

    im = load_image(png)
    return encode_image(np.ascontiguousarray(im[10:190, 5:185]), "JPEG", quality=75)


@pytest.fixture
def replicas(tmp_path: Path):
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    from tracemark.service.keys import KeyStore, service_engine

    engine = service_engine(tmp_path / "a", PG_URL)
    token, _ = KeyStore(engine).create(scope="write", collections=["*"])
    engine.dispose()
    a = Replica(tmp_path / "a", tmp_path / "a.log")
    try:
        b = Replica(tmp_path / "b", tmp_path / "b.log")
    except BaseException:
        a.stop()
        raise
    name = "rep-" + os.urandom(4).hex()
    h = {"Authorization": f"Bearer {token}"}
    yield a, b, name, h
    try:
        httpx.delete(f"{a.base}/collections/{name}", headers=h, timeout=60)
    finally:
        a.stop()
        b.stop()


def test_a_write_through_one_replica_is_served_by_the_other_at_once(replicas) -> None:
    a, b, name, h = replicas
    images = _images(3)
    assert httpx.post(f"{a.base}/collections", json={"name": name}, headers=h,
                      timeout=60).status_code == 201
    assert name in httpx.get(f"{b.base}/collections", headers=h, timeout=30).json()["collections"]
    assert httpx.post(f"{b.base}/collections", json={"name": name}, headers=h,
                      timeout=60).status_code == 409
    refs = []
    for i, img in enumerate(images):
        r = httpx.post(f"{a.base}/collections/{name}/images", headers=h, timeout=60,
                       files=_upload(img, f"{i}.png"))
        assert r.status_code == 201, r.text
        refs.append(r.json()["ref_id"])
    # found at once through the other replica, which never saw the collection before
    for ref, img in zip(refs, images, strict=True):
        found = httpx.post(f"{b.base}/collections/{name}/search", headers=h, timeout=60,
                           files=_upload(_jpeg_copy(img), "q.jpg", "image/jpeg"))
        assert found.status_code == 200, found.text
        best = found.json()["matches"][0]
        assert best["ref_id"] == ref and best["decision"] is True
    # a delete through b is seen by a
    assert httpx.delete(f"{b.base}/collections/{name}/images/{refs[1]}", headers=h,
                        timeout=60).status_code == 200
    found = httpx.post(f"{a.base}/collections/{name}/search", headers=h, timeout=60,
                       files=_upload(_jpeg_copy(images[1]), "q.jpg", "image/jpeg")).json()
    assert all(m["ref_id"] != refs[1] for m in found["matches"])
    listed = httpx.get(f"{a.base}/collections/{name}/images", headers=h, timeout=30).json()
    assert sorted(i["id"] for i in listed["images"]) == sorted([refs[0], refs[2]])
    # the same image through both: one reference
    dup = httpx.post(f"{b.base}/collections/{name}/images", headers=h, timeout=60,
                     files=_upload(images[0], "again.png"))
    assert dup.status_code == 200 and dup.json()["duplicate_of"] == refs[0]
    # a collection deleted through a is gone for b (and created again, it is a new one)
    assert httpx.delete(f"{a.base}/collections/{name}", headers=h, timeout=60).status_code == 200
    r = httpx.get(f"{b.base}/collections/{name}/images", headers=h, timeout=30)
    assert r.status_code == 404, r.text
    assert httpx.post(f"{b.base}/collections", json={"name": name}, headers=h,
                      timeout=60).status_code == 201
    r = httpx.get(f"{a.base}/collections/{name}/images", headers=h, timeout=30)
    assert r.status_code == 200 and r.json()["images"] == []


def test_sigkill_of_a_replica_during_a_bulk_add_loses_no_acknowledged_add(replicas,
                                                                          tmp_path) -> None:
    a, b, name, h = replicas
    images = _images(40)
    assert httpx.post(f"{a.base}/collections", json={"name": name}, headers=h,
                      timeout=60).status_code == 201
    acked = bulk_add_then_kill(a.proc, f"{a.base}/collections/{name}/images", h, images, 10)
    assert 10 <= len(acked) < len(images), "the kill must land in the middle of the bulk add"
    # the other replica serves every acknowledged add at once
    listed = httpx.get(f"{b.base}/collections/{name}/images?limit=1000", headers=h,
                       timeout=30).json()["images"]
    assert set(acked.values()) <= {i["id"] for i in listed}
    i = next(iter(acked))
    best = httpx.post(f"{b.base}/collections/{name}/search", headers=h, timeout=60,
                      files=_upload(_jpeg_copy(images[i]), "q.jpg", "image/jpeg")).json()
    assert best["matches"][0]["ref_id"] == acked[i]
    # a restarted replica repairs Milvus against the database when it opens the collection
    a.restart()
    assert httpx.get(f"{a.base}/collections/{name}/images", headers=h,
                     timeout=60).status_code == 200
    from tracemark.copydetect import CopyIndex

    with CopyIndex.open(a.data / "collections" / name / "index", read_only=True,
                        database_url=PG_URL) as ci:
        refs = {r.id for r in ci.index.list(limit=10_000)}
        assert set(acked.values()) <= refs
        for set_name in ci.index.vector_specs:
            held = {int(x) >> 16 for x in ci.index.store_labels(set_name)}
            assert held == refs, set_name  # no orphan rows in Milvus, none missing
