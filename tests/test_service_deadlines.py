"""The service's answer matches what happened (issue 12, kinds 4 and 5), against a real
uvicorn server in a thread, real stores and real sockets.

* deadlines: a 503 means nothing was committed, a 2xx that it was -- for collection create,
  image add and sign, over timeouts from far too short to ample; a request that waited for
  a worker past its deadline is 503 ``Busy`` with ``Retry-After`` and does nothing;
* a request body that stops arriving is answered 408 within the body timeout;
* adds racing a delete and re-create of their collection are 201, 404 or 409, never a write
  into the deleted collection's files or into the new collection.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from tracemark.imageio import encode_image  # noqa: E402
from tracemark.service.app import ServiceSettings, create_app  # noqa: E402

from ._serving import uvicorn_in_thread  # noqa: E402
from .conftest import CORPUS, corpus_crop  # noqa: E402


@contextlib.contextmanager
def serving(settings: ServiceSettings) -> Iterator[tuple[str, Any, str]]:
    """A real uvicorn server on a free port, in a thread: (base URL, app, admin token)."""
    app = create_app(settings)
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")
    with uvicorn_in_thread(app, lifespan="on") as port:
        yield f"http://127.0.0.1:{port}", app, token


def idle(base: str, timeout: float = 120.0) -> None:
    """Wait until no worker thread runs (abandoned work included)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = httpx.get(f"{base.rsplit('/v1', 1)[0]}/metrics", timeout=10).text
        m = re.search(r"^tracemark_work_in_flight ([0-9.e+-]+)$", text, re.M)
        if m is not None and float(m.group(1)) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the workers did not become idle")


def big_jpeg(seed: int, factor: int = 12) -> bytes:
    """A ~9 MP JPEG (3072 px square) whose add or sign takes a second or more."""
    base = corpus_crop(f"photo/gcompris_{50 + seed % 40}.jpg", 256)
    rng = np.random.default_rng(seed)
    base = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
    return encode_image(np.kron(base, np.ones((factor, factor, 1), np.uint8)), "JPEG", quality=90)


def files(data: bytes, name: str = "x.jpg") -> dict[str, Any]:
    return {"image": (name, io.BytesIO(data), "application/octet-stream")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tracemark.credentials import init_dev_ca

    d = tmp_path_factory.mktemp("deadline-certs")
    init_dev_ca(d)
    return d


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[tuple[str, Any, dict]]:
    """One worker (so that queueing is real), a 1 s body timeout; the tests set
    ``request_timeout`` on the running app's settings."""
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("deadline-data"),
                               cert=certs / "signer.pem", key=certs / "signer.key",
                               max_concurrency=1, body_timeout=1.0, vector_flush_seconds=0)
    with serving(settings) as (root, app, token):
        yield f"{root}/v1", app, {"Authorization": f"Bearer {token}"}


def _counts(base: str, h: dict, name: str) -> tuple[int, int]:
    body = httpx.get(f"{base}/collections/{name}", headers=h, timeout=60).json()
    return body["images"], body["manifests"]


TIMEOUTS = [0.001, 0.05, 0.3, 0.8, 1.5, 3.0, 120.0]
"""From shorter than any work to ample: both answers happen for add and sign."""


def test_a_503_commits_nothing_and_a_2xx_commits(server) -> None:  # type: ignore[no-untyped-def]
    base, app, h = server
    settings = app.state.tm.settings
    root = Path(settings.data_dir) / "collections"
    settings.request_timeout = 120.0
    assert httpx.post(f"{base}/collections", json={"name": "w"}, headers=h,
                      timeout=120).status_code == 201
    seen: dict[str, set[int]] = {"create": set(), "add": set(), "sign": set()}
    try:
        for i, timeout in enumerate(TIMEOUTS):
            settings.request_timeout = timeout
            # collection create: the creation is the commit point
            r = httpx.post(f"{base}/collections", json={"name": f"c{i}"}, headers=h, timeout=120)
            seen["create"].add(r.status_code)
            idle(base)
            assert r.status_code in (201, 503), r.text
            assert (root / f"c{i}").is_dir() == (r.status_code == 201), (timeout, r.text)
            # image add
            settings.request_timeout = 120.0
            images0, _ = _counts(base, h, "w")
            settings.request_timeout = timeout
            r = httpx.post(f"{base}/collections/w/images", files=files(big_jpeg(i)), headers=h,
                           timeout=120)
            seen["add"].add(r.status_code)
            idle(base)
            settings.request_timeout = 120.0
            images, manifests = _counts(base, h, "w")
            assert r.status_code in (201, 503), r.text
            assert images == images0 + (r.status_code == 201), (timeout, r.text)
            if r.status_code == 201:
                listed = httpx.get(f"{base}/collections/w/images?limit=1000", headers=h,
                                   timeout=60).json()["images"]
                assert r.json()["ref_id"] in {x["id"] for x in listed}
            # sign
            settings.request_timeout = timeout
            r = httpx.post(f"{base}/collections/w/sign", files=files(big_jpeg(100 + i, 8)),
                           data={"format": "jpg"}, headers=h, timeout=300)
            seen["sign"].add(r.status_code)
            idle(base)
            settings.request_timeout = 120.0
            images2, manifests2 = _counts(base, h, "w")
            assert r.status_code in (200, 503), r.text
            grew = r.status_code == 200
            assert (images2, manifests2) == (images + grew, manifests + grew), (timeout, r.text)
            if grew:
                mid = int(r.headers["X-Manifest-Id"])
                assert httpx.get(f"{base}/collections/w/manifests/{mid}", headers=h,
                                 timeout=60).status_code == 200
    finally:
        settings.request_timeout = 120.0
    # both outcomes were exercised for add and sign; a create passes its commit point as
    # it starts, so only a queued create is refused (the next test)
    for what in ("add", "sign"):
        assert 503 in seen[what] and seen[what] - {503}, (what, seen)


def test_a_request_queued_past_its_deadline_never_starts(server) -> None:  # type: ignore[no-untyped-def]
    base, app, h = server
    settings = app.state.tm.settings
    root = Path(settings.data_dir) / "collections"
    settings.request_timeout = 120.0
    if not (root / "q").is_dir():
        assert httpx.post(f"{base}/collections", json={"name": "q"}, headers=h,
                          timeout=120).status_code == 201
    slow = big_jpeg(7, factor=20)  # ~26 MP: its add outlasts the queued request's deadline
    settings.request_timeout = 0.3
    answers: dict[str, httpx.Response] = {}

    def occupy() -> None:  # takes the only worker for a second or more
        answers["slow"] = httpx.post(f"{base}/collections/q/images", files=files(slow),
                                     headers=h, timeout=120)

    t = threading.Thread(target=occupy)
    t.start()
    time.sleep(0.1)
    answers["queued"] = httpx.post(f"{base}/collections", json={"name": "queued"}, headers=h,
                                   timeout=120)
    t.join(120)
    idle(base)
    settings.request_timeout = 120.0
    queued = answers["queued"]
    assert queued.status_code == 503, (queued.text, answers["slow"].status_code, answers["slow"].text)
    assert queued.json()["error"]["type"] == "Busy"
    assert int(queued.headers["Retry-After"]) >= 1
    assert not (root / "queued").exists()
    assert answers["slow"].status_code == 503  # and nothing was added either
    assert answers["slow"].json()["error"]["type"] == "Timeout"
    assert _counts(base, h, "q") == (0, 0)


def test_a_body_that_stops_arriving_is_408(server) -> None:  # type: ignore[no-untyped-def]
    base, _app, h = server
    host, port = base.split("//")[1].split("/")[0].split(":")
    for path, ctype in (("/v1/collections/w/images", "multipart/form-data; boundary=b"),
                        ("/v1/collections", "application/json")):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                       f"Authorization: {h['Authorization']}\r\nContent-Type: {ctype}\r\n"
                       "Content-Length: 5000\r\n\r\n").encode() + b"--b\r\n")
            t0 = time.monotonic()
            s.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            waited = time.monotonic() - t0
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"RequestTimeout" in data
        assert waited < 5, waited  # the body timeout is 1 s
    # a slow but complete body within the limit is served
    with socket.create_connection((host, int(port)), timeout=10) as s:
        body = b'{"name": "slowbody"}'
        s.sendall((f"POST /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: "
                   f"{h['Authorization']}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:5])
        time.sleep(0.3)
        s.sendall(body[5:])
        s.settimeout(30)
        assert s.recv(65536).startswith(b"HTTP/1.1 201")


# --- races: delete and re-create under in-flight adds -------------------------------------


def _texture(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    return encode_image(np.asarray(Image.fromarray(small).resize((160, 160), Image.BICUBIC)), "PNG")


def test_adds_racing_delete_and_recreate_get_201_404_or_409(tmp_path: Path) -> None:
    settings = ServiceSettings(data_dir=tmp_path / "data", max_concurrency=4,
                               vector_flush_seconds=0)
    name = "race"
    acked: list[tuple[str, int]] = []  # (store_id, ref_id) of every 201
    statuses: dict[str, list[int]] = {"add": [], "delete": [], "create": []}
    lock = threading.Lock()
    stop = threading.Event()
    with serving(settings) as (root, app, token):
        base, h = f"{root}/v1", {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/collections", json={"name": name}, headers=h,
                          timeout=60).status_code == 201

        def adder(k: int) -> None:
            with httpx.Client(timeout=120) as c:
                i = 0
                while not stop.is_set():
                    r = c.post(f"{base}/collections/{name}/images", headers=h,
                               files=files(_texture(1000 * k + i), f"{k}-{i}.png"))
                    i += 1
                    with lock:
                        statuses["add"].append(r.status_code)
                        if r.status_code == 201:
                            acked.append((r.json()["store_id"], r.json()["ref_id"]))
                        elif r.status_code not in (404, 409):
                            stop.set()
                            raise AssertionError(r.text)

        threads = [threading.Thread(target=adder, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            with httpx.Client(timeout=120) as c:
                for _ in range(12):
                    time.sleep(0.15)
                    r = c.delete(f"{base}/collections/{name}", headers=h)
                    statuses["delete"].append(r.status_code)
                    time.sleep(0.05)
                    r = c.post(f"{base}/collections", json={"name": name}, headers=h)
                    statuses["create"].append(r.status_code)
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        final = httpx.get(f"{base}/collections/{name}", headers=h, timeout=60).json()
    assert set(statuses["add"]) <= {201, 404, 409}, statuses
    assert set(statuses["delete"]) == {200} and set(statuses["create"]) == {201}, statuses
    assert 404 in statuses["add"] or 409 in statuses["add"], "the adds did not race the deletes"
    assert sum(s == 201 for s in statuses["add"]) >= 6
    # only the last collection is left; the deleted ones' files are gone, none written again
    cols = Path(settings.data_dir) / "collections"
    assert sorted(p.name for p in cols.iterdir()) == [name]
    # the last collection holds exactly the adds acknowledged for it: no write of an add
    # that was answered 404/409 or that was meant for a deleted collection landed in it
    from tracemark.copydetect import CopyIndex
    from tracemark.index import _faiss

    mine = {ref for store_id, ref in acked if store_id == final["store_id"]}
    with CopyIndex.open(cols / name / "index", read_only=True) as ci:
        refs = {r.id for r in ci.index.list(limit=100_000)}
        assert refs == mine, (sorted(refs), sorted(mine))
        assert ci.index.repaired == ()
        for set_name in ci.index.vector_specs:
            in_faiss = {int(x) >> _faiss.ROW_BITS for x in ci.index.store_labels(set_name)}
            assert in_faiss == refs, set_name


def test_memory_budget_admits_jobs_while_their_weights_fit() -> None:
    """Two jobs whose weights together exceed the budget never run at once; a job heavier
    than the whole budget runs alone; a job that gets no room before its deadline never
    starts (503 Busy in the service)."""
    import asyncio
    import threading as th

    from tracemark.service.jobs import DeadlineExceeded, Workers

    workers = Workers(4, memory_budget=100)
    running, peak, lock = [0], [0], th.Lock()

    def work(_job: Any) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1

    async def main(weights: list[int], timeout: float = 10.0) -> list[Any]:
        return await asyncio.gather(*(workers.run(work, timeout, w) for w in weights),
                                    return_exceptions=True)

    asyncio.run(main([60, 60, 60]))
    assert peak[0] == 1  # 60 + 60 > 100
    peak[0] = 0
    asyncio.run(main([30, 30, 30]))
    assert peak[0] == 3  # they fit together
    peak[0] = 0
    assert asyncio.run(main([500])) == [None]  # heavier than the budget: alone
    results = asyncio.run(main([90, 90], timeout=0.1))
    assert sum(isinstance(r, DeadlineExceeded) and r.queued for r in results) == 1
    workers.shutdown()
