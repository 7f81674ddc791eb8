"""Shared fixtures: the bundled corpus beside the checkout and small synthetic images."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "data" / "corpus"


def corpus_images(kind: str | None = None, n: int | None = None) -> list[Path]:
    """Sorted corpus JPEGs (``photo``, ``art`` or both)."""
    kinds = [kind] if kind else ["photo", "art"]
    files = sorted(f for k in kinds for f in (CORPUS / k).glob("*.jpg"))
    return files[:n] if n is not None else files


def corpus_crop(rel: str, size: int = 256) -> np.ndarray:
    """A centred ``size`` x ``size`` crop of the corpus image ``rel``, subsampled first."""
    from tracemark.imageio import load_image

    im = load_image(CORPUS / rel)
    f = max(1, min(im.shape[:2]) // size)
    im = im[::f, ::f]
    h, w = im.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(im[y : y + size, x : x + size])


def small_image(path: Path, side: int) -> np.ndarray:
    """The image at ``path`` resized (area interpolation) so its long side is ``side``."""
    import cv2

    from tracemark.imageio import load_image

    img = load_image(path)
    f = side / max(img.shape[:2])
    size = (round(img.shape[1] * f), round(img.shape[0] * f))
    return np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))


PG_URL = os.environ.get("TRACEMARK_TEST_PG_URL")
"""The throw-away PostgreSQL server that scripts/test.sh starts (None when run otherwise)."""
requires_pg = pytest.mark.skipif(
    PG_URL is None, reason="no PostgreSQL: run scripts/test.sh, which starts one")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=requires_pg)]
"""Parameters of the tests that run a store on both metadata backends."""

MILVUS_URL = os.environ.get("TRACEMARK_TEST_MILVUS_URL")
"""The throw-away Milvus server that scripts/test.sh starts (None when run otherwise)."""
requires_milvus = pytest.mark.skipif(
    MILVUS_URL is None, reason="no Milvus server: run scripts/test.sh, which starts one")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not beside the checkout ({CORPUS})")
    return CORPUS


@pytest.fixture(scope="session")
def photo(corpus_dir: Path) -> np.ndarray:
    from tracemark.imageio import load_image

    return load_image(corpus_images("photo", 1)[0])


@pytest.fixture
def synthetic() -> np.ndarray:
    from tracemark.bench.attack_speed import synthetic_image

    return synthetic_image(96, seed=3)


@contextlib.contextmanager
def local_http_server(handler: Any) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering with ``handler`` (a
    ``BaseHTTPRequestHandler`` class or factory; its ``log_message`` is silenced): its
    base URL ``http://127.0.0.1:PORT``; shut down and closed after the block."""
    import http.server
    import threading

    class Quiet(handler if isinstance(handler, type) else http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    factory = Quiet if isinstance(handler, type) else handler
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
