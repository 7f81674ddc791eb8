"""A batch job's inputs: local paths, or fsspec URLs (``file:///data/x.jpg``,
``s3://bucket/prefix/``, any protocol whose fsspec implementation is installed).

A source is a string; :func:`load_source` decodes it wherever the task runs (a Ray worker
reads the URL itself: the bytes never travel through the driver). Local folders are
expanded by the command line (:func:`tracemark.cli._common.expand_inputs`); URL folders by
:func:`expand_url`, by suffix only (reading the first bytes of every remote object to
sniff its format would cost a request each).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from tracemark.errors import ConfigError, ImageSourceError
from tracemark.imageio import DEFAULT_MAX_PIXELS, ImageFormats, image_suffixes, load_image

__all__ = ["expand_url", "is_url", "load_source", "read_source"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(source: str) -> bool:
    """Whether ``source`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(str(source)))


def _fsspec() -> Any:
    from tracemark._optional import require

    return require("fsspec", "ray", purpose="reading URL inputs")


def expand_url(url: str, *, formats: ImageFormats = "default"
               ) -> tuple[list[str], list[tuple[str, str]]]:
    """``(sources, skipped)`` of a URL: the URL itself when it names an object; for a
    folder (a prefix), every object below it, recursively and sorted, whose suffix the
    loader reads with ``formats`` (:func:`tracemark.imageio.image_suffixes`), each as a
    URL of the same protocol; the others, and hidden names (starting with ``.``), in
    ``skipped`` with the reason.

    Raises :class:`~tracemark.errors.MissingExtraError` without fsspec, and
    :class:`~tracemark.errors.ConfigError` for a protocol fsspec does not know (or whose
    package is missing) or a URL that cannot be listed.
    """
    fsspec = _fsspec()
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"cannot read {url}: {exc}", source=url) from exc
    try:
        if not fs.isdir(path):
            return [url], []
        found = sorted(fs.find(path))
    except OSError as exc:
        raise ConfigError(f"cannot list {url}: {exc}", source=url) from exc
    suffixes = image_suffixes(formats)
    sources, skipped = [], []
    root = path.rstrip("/")
    for p in found:
        full = fs.unstrip_protocol(p)
        rel = p[len(root):].lstrip("/") if p.startswith(root) else p
        if any(part.startswith(".") for part in rel.split("/")):
            skipped.append((full, "hidden file"))
        elif os.path.splitext(p.rsplit("/", 1)[-1])[1].lower() not in suffixes:
            skipped.append((full, "not an image tracemark reads (by its suffix)"))
        else:
            sources.append(full)
    return sources, skipped


def read_source(source: str) -> bytes:
    """The bytes of a URL (through fsspec) or a local path.

    Raises :class:`~tracemark.errors.ImageSourceError` when it cannot be read (missing,
    permissions, network), :class:`~tracemark.errors.MissingExtraError` for a URL without
    fsspec."""
    try:
        if is_url(source):
            with _fsspec().open(source, "rb") as fh:
                return fh.read()
        with open(source, "rb") as fh:
            return fh.read()
    except (OSError, ValueError, ImportError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ImageSourceError(f"cannot read: {reason}", source=str(source)) from exc


def load_source(source: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                formats: ImageFormats = "default") -> np.ndarray:
    """:func:`tracemark.imageio.load_image` of a local path or a URL: RGB ``uint8``
    ``(H, W, 3)``. Raises the loader's typed errors (with ``source`` as their source) and
    :func:`read_source`'s."""
    if not is_url(source):
        return load_image(source, max_pixels=max_pixels, formats=formats)
    return load_image(read_source(source), max_pixels=max_pixels, formats=formats,
                      name=str(source))
