"""A request head that never completes is bounded (issue 12, kind 4): real uvicorn servers
(in a thread, and the real `tracemark serve` process), raw sockets.

The body timeout is ASGI middleware and only runs once a head is complete; the head itself
is bounded by :func:`tracemark.service.protocol.protocol_class` (``serve --header-timeout``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from tracemark.service.app import ServiceSettings, create_app  # noqa: E402
from tracemark.service.protocol import protocol_class  # noqa: E402

from ._serving import uvicorn_in_thread  # noqa: E402

HEAD_TIMEOUT = 1.0


@contextlib.contextmanager
def _serving(tmp: Path) -> Iterator[tuple[str, int, str]]:
    app = create_app(ServiceSettings(data_dir=tmp, body_timeout=5.0))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"], name="admin")
    with uvicorn_in_thread(app, http=protocol_class(HEAD_TIMEOUT)) as port:
        yield "127.0.0.1", port, token


def _read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``limit`` s pass): (data, seconds)."""
    t0 = time.monotonic()
    s.settimeout(limit)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := s.recv(65536):
            data += chunk
    return data, time.monotonic() - t0


def _response(s: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a keep-alive connection."""
    s.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += s.recv(65536)
    assert len(body) == length, "more than one response"
    return data


PARTIAL = b"POST /v1/collections/works/images HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str]]:
    with _serving(tmp_path_factory.mktemp("head-data")) as addr:
        yield addr


def test_a_head_that_stops_is_408_and_closed(server: tuple[str, int, str]) -> None:
    host, port, _ = server
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(PARTIAL)
        data, waited = _read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b'"RequestTimeout"' in data and b"connection: close" in data.lower()
    assert HEAD_TIMEOUT * 0.8 <= waited < HEAD_TIMEOUT + 2, waited


def test_a_trickled_head_is_bounded_from_the_connection(server: tuple[str, int, str]) -> None:
    """A byte every 0.1 s never lets the head finish: bytes arriving do not extend it."""
    host, port, _ = server
    with socket.create_connection((host, port), timeout=10) as s:
        t0 = time.monotonic()
        sent = 0
        with contextlib.suppress(OSError):
            for byte in PARTIAL * 10:
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
                if _closed_now(s):
                    break
        waited = time.monotonic() - t0
        data, _ = _read_until_closed(s, 5)
    assert waited < HEAD_TIMEOUT + 2, (waited, sent)
    assert sent < len(PARTIAL) * 10
    assert not data or data.startswith(b"HTTP/1.1 408"), data[:200]


def _closed_now(s: socket.socket) -> bool:
    """The server answered or closed (the socket is readable)."""
    return bool(select.select([s], [], [], 0)[0])


def test_an_idle_connection_is_closed_without_an_answer(server: tuple[str, int, str]) -> None:
    host, port, _ = server
    with socket.create_connection((host, port), timeout=10) as s:
        data, waited = _read_until_closed(s, 10)
    assert data == b"" and waited < HEAD_TIMEOUT + 2, (data, waited)


def test_keep_alive_counts_from_the_previous_response(server: tuple[str, int, str]) -> None:
    host, port, _ = server
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _response(s)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # no blank line
        data, waited = _read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert waited < HEAD_TIMEOUT + 2, waited


def test_slow_but_complete_requests_are_served(server: tuple[str, int, str]) -> None:
    """A head that arrives in pieces within the bound is served, and once a head is
    complete the body has the (longer) body timeout, not the head's."""
    host, port, token = server
    body = b'{"name": "slowhead"}'
    head = (f"POST /v1/collections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as s:
        for i in range(0, len(head), 20):
            s.sendall(head[i:i + 20])
            time.sleep(HEAD_TIMEOUT * 0.5 / (len(head) / 20))
        time.sleep(HEAD_TIMEOUT * 1.5)  # past the head bound, within the body's
        s.sendall(body)
        answer = _response(s)
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        # the keep-alive connection still serves a next request after waiting a while
        time.sleep(HEAD_TIMEOUT * 0.5)
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(s).startswith(b"HTTP/1.1 200")


def test_protocol_class_refuses_a_non_positive_timeout() -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="header_timeout"):
            protocol_class(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tracemark_serve_bounds_the_head(tmp_path: Path) -> None:
    """The real `tracemark serve --header-timeout 1` (the reported case: headers never end)."""
    port = _free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-c", "from tracemark.cli import main; main()",
                             "serve", "--store", str(tmp_path / "d"), "--port", str(port),
                             "--body-timeout", "3", "--header-timeout", "1"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(PARTIAL)
            data, waited = _read_until_closed(s, 10)
        assert data.startswith(b"HTTP/1.1 408") and waited < 3, (data[:200], waited)
    finally:
        proc.terminate()
        proc.wait(30)
