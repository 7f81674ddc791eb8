"""kill -9 during a bulk add, then restart: no acknowledged add is lost, and the vector
index and the database agree (no orphan vectors, no missing ones). A real `tracemark serve`
process, killed with SIGKILL while adds are in flight."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from tracemark.imageio import encode_image, load_image  # noqa: E402

from .conftest import BACKENDS, CORPUS, PG_URL, corpus_images  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int, log: Path, db_url: str | None = None, *,
           extra: tuple[str, ...] = (), wait: float = 60) -> subprocess.Popen:
    """A real ``tracemark serve`` on ``port`` (``extra``: more options), once it answers
    its health check (at most ``wait`` s)."""
    cmd = [sys.executable, "-c", "from tracemark.cli import main; main()", "serve",
           "--store", str(data), "--port", str(port), "--concurrency", "2", *extra]
    if db_url is not None:
        cmd += ["--database-url", db_url]
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the server did not start in {wait:g} s")


def bulk_add_then_kill(proc: subprocess.Popen, url: str, headers: dict[str, str],
                       images: list[bytes], after: int) -> dict[int, int]:
    """POST ``images`` to ``url`` from two client threads; SIGKILL the server once ``after``
    adds were acknowledged (adds are then in flight). ``{image index: ref id}`` of the
    acknowledged adds."""
    acked: dict[int, int] = {}
    lock = threading.Lock()

    def client(start: int) -> None:
        for i in range(start, len(images), 2):
            try:
                r = httpx.post(url, headers=headers, timeout=60,
                               files={"image": (f"{i}.png", io.BytesIO(images[i]), "image/png")})
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code == 201:
                with lock:
                    acked[i] = int(r.json()["ref_id"])

    threads = [threading.Thread(target=client, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < after and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # adds are in flight
    proc.wait(10)
    for t in threads:
        t.join(60)
    return acked


def _images(n: int) -> list[bytes]:
    """``n`` small photos with enough texture to be found again by search."""
    from tracemark.fingerprint import local

    out = []
    for path in corpus_images("photo"):
        im = load_image(path)
        f = max(1, min(im.shape[:2]) // 200)
        small = np.ascontiguousarray(im[::f, ::f][:200, :200])
        if len(local.extract(small, kind="sift", max_features=300)) >= 150:
            out.append(encode_image(small, "PNG"))
        if len(out) == n:
            break
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_during_bulk_add_loses_no_acknowledged_add(tmp_path: Path, backend: str) -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    from tracemark.service.keys import KeyStore, service_engine

    data, log = tmp_path / "data", tmp_path / "server.log"
    db_url = PG_URL if backend == "postgresql" else None
    name = "bulk" if db_url is None else "bulk-" + os.urandom(4).hex()
    token, _ = KeyStore(service_engine(data, db_url)).create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    images = _images(48)
    proc = _start(data, port, log, db_url)
    try:
        assert httpx.post(f"{base}/collections", json={"name": name}, headers=h,
                          timeout=30).status_code == 201
        acked = bulk_add_then_kill(proc, f"{base}/collections/{name}/images", h, images, 12)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 12 <= len(acked) < len(images), "the kill must land in the middle of the bulk add"

    # the index as the crash left it: opening it checks FAISS against SQLite (and repairs)
    from tracemark.copydetect import CopyIndex
    from tracemark.index import _faiss

    with CopyIndex.open(data / "collections" / name / "index", read_only=True,
                        database_url=db_url) as ci:
        idx = ci.index
        refs = {r.id for r in idx.list(limit=10_000)}
        assert set(acked.values()) <= refs  # no acknowledged add lost
        for set_name in idx.vector_specs:
            labels = idx.store_labels(set_name)
            in_faiss = {int(x) >> _faiss.ROW_BITS for x in labels}
            assert in_faiss == refs, set_name  # no orphan vectors, none missing

    proc = _start(data, port, log, db_url)
    try:
        listed = httpx.get(f"{base}/collections/{name}/images?limit=1000", headers=h,
                           timeout=30).json()
        assert "images" in listed, listed
        listed = listed["images"]
        assert set(acked.values()) <= {r["id"] for r in listed}
        for i, ref in list(acked.items())[:8]:  # the recovered index finds them
            r = httpx.post(f"{base}/collections/{name}/search", headers=h, timeout=30,
                           files={"image": ("q.png", io.BytesIO(images[i]), "image/png")})
            assert ref in [m["ref_id"] for m in r.json()["matches"] if m["decision"]], (i, ref, r.json(), acked)
        # and accepts new adds after the restart
        r = httpx.post(f"{base}/collections/{name}/images", headers=h, timeout=30,
                       files={"image": ("x.png", io.BytesIO(images[-1]), "image/png")})
        assert r.status_code == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
