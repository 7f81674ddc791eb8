"""Signing: watermark the image with its manifest id, sign a C2PA manifest, store both.

Order of a sign (one image)::

    reserve a manifest id (pending row)  ->  embed the watermark (payload: tag | id)
    ->  encode in the output format       ->  sign the C2PA manifest (c2pa-python)
    ->  fingerprint the signed pixels into the store's index
    ->  activate the row (label, manifest bytes, file hash)
    ->  commit the store (index, then manifests)
    ->  write the signed file (temp file, then rename)

A failure before the commit rolls the store back (no row, no fingerprint); nothing is
written to ``out``. A sign commits the store, so it also commits what the caller wrote to
it before; on failure it rolls back what was not committed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.credentials import manifest as mf
from tracemark.credentials.certs import SigningCredentials
from tracemark.credentials.store import CredentialStore
from tracemark.errors import ImageSourceError, SigningError, TracemarkError
from tracemark.fingerprint import pdq
from tracemark.imageio import (
    DEFAULT_MAX_PIXELS,
    colour_under_alpha,
    composite,
    encode_image,
    encode_image_with_alpha,
    has_alpha_channel,
    load_image,
    load_image_with_alpha,
    media_type,
    open_image_info,
)
from tracemark.metrics import psnr

__all__ = ["SignOptions", "SignResult", "sign_image", "sign_many"]

DEFAULT_QUALITY = {"image/jpeg": 95, "image/webp": 95, "image/png": None}


@dataclass(frozen=True)
class SignOptions:
    ai_generated: bool = False
    title: str | None = None
    author: str | None = None
    quality: int | None = None
    """JPEG/WebP quality of the signed file (default 95)."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class SignResult:
    source: str
    output: str
    manifest_id: int
    label: str
    media_type: str
    ref_id: int | None
    file_sha256: str
    psnr: float
    alpha: str | None = None
    """``"kept"``: the input's alpha channel is in the signed file unchanged (PNG, WebP);
    ``"flattened"``: the output format has none (JPEG), the image is signed over white;
    None: the input is opaque."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read_input(image: Any) -> tuple[bytes | None, str]:
    """The input's original bytes (for the parent ingredient) and a display name."""
    if isinstance(image, str | os.PathLike):
        p = Path(image)
        try:
            return p.read_bytes(), str(p)
        except FileNotFoundError:
            raise ImageSourceError("no such file", source=str(p)) from None
        except IsADirectoryError:
            raise ImageSourceError("is a directory", source=str(p)) from None
        except OSError as exc:
            raise ImageSourceError(f"cannot read: {exc.strerror or exc}", source=str(p)) from None
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), "<bytes>"
    return None, "<image>"


_PARENT_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF")
"""Input formats c2pa reads as a parent ingredient (others are embedded as PNG)."""


def _parent(original: bytes | None, rgb: np.ndarray, name: str) -> tuple[bytes, str, str]:
    """The parent ingredient: the original file when c2pa can read its format, else PNG."""
    if original is not None:
        fmt = open_image_info(original).format
        mt = media_type(fmt) if fmt in _PARENT_FORMATS else None
        if mt is not None:
            return original, mt, Path(name).name
    return encode_image(rgb, "PNG"), "image/png", Path(name).stem + ".png"


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` beside ``path`` (fsynced); the caller renames it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SigningError(f"cannot write the output: {exc.strerror or exc}",
                           source=str(path)) from None
    return tmp


def sign_image(
    store: CredentialStore,
    image: Any,
    out: str | os.PathLike[str] | None,
    creds: SigningCredentials,
    options: SignOptions | None = None,
    *,
    media_type: str | None = None,
) -> tuple[SignResult, bytes]:
    """Watermark, sign and register one image; write it to ``out`` (unless None).

    ``media_type`` is required when ``out`` is None (otherwise the suffix of ``out``
    decides). Returns the result and the signed file's bytes.
    """
    opts = options or SignOptions()
    if out is not None:
        media_type = mf.media_type_for(Path(out).suffix)
    elif media_type not in mf.PIL_FORMATS:
        raise mf.UnsupportedFormatError(f"cannot sign as {media_type!r}; use "
                                        f"{', '.join(mf.PIL_FORMATS)}")
    original, name = _read_input(image)
    colour, alpha = load_image_with_alpha(original if original is not None else image,
                                          max_pixels=opts.max_pixels, name=name)
    rgb = composite(colour, alpha)  # marked and fingerprinted as every reader sees it
    title = opts.title or (Path(out).name if out is not None else Path(name).name)
    manifest_id = store.reserve(title=title, author=opts.author, ai_generated=opts.ai_generated,
                                media_type=media_type)
    tmp: Path | None = None
    try:
        payload = store.payload_for(manifest_id)
        marked = store.mark(rgb, payload)
        quality = opts.quality if opts.quality is not None else DEFAULT_QUALITY[media_type]
        fmt = mf.PIL_FORMATS[media_type]
        if alpha is not None and has_alpha_channel(fmt):
            asset = encode_image_with_alpha(colour_under_alpha(marked, colour, alpha, out=marked), alpha,
                                            fmt, quality=quality)
        else:
            asset = encode_image(marked, fmt, quality=quality)
        kept = None if alpha is None else "kept" if has_alpha_channel(fmt) else "flattened"
        del marked, colour, alpha
        distributed = load_image(asset, max_pixels=None)
        pdq_bits, _quality = pdq.pdq_hash(distributed, packed=True)
        definition = mf.manifest_definition(
            title=title, media_type=media_type, store_id=store.store_id,
            manifest_id=manifest_id, payload=payload,
            pdq_hash=np.asarray(pdq_bits, np.uint8).tobytes(), author=opts.author,
        )
        parent = None if opts.ai_generated else _parent(original, rgb, name)
        signed, manifest_store = mf.sign_asset(creds, definition, media_type, asset,
                                               ai_generated=opts.ai_generated, parent=parent)
        reading = mf.read_manifest(signed, media_type)
        if reading.label is None or reading.store_json is None:
            raise mf.SigningError("the signed file has no readable manifest")
        added = store.add_fingerprint(distributed, source=str(out) if out is not None else name,
                                      notes=json.dumps({"manifest_id": manifest_id}))
        file_sha256 = hashlib.sha256(signed).hexdigest()
        tmp = _write_temp(Path(out), signed) if out is not None else None
        store.activate(manifest_id, label=reading.label, ref_id=added.id, file_sha256=file_sha256,
                       signer=creds.subject, manifest_json=reading.store_json,
                       manifest_store=manifest_store)
        store.commit()
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        store.rollback()
        raise
    if tmp is not None:  # the manifest is stored: now the file may appear
        try:
            os.replace(tmp, Path(out))  # type: ignore[arg-type]
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SigningError(f"cannot write the output: {exc.strerror or exc}",
                               source=str(out)) from None
    result = SignResult(
        source=name, output=str(out) if out is not None else "", manifest_id=manifest_id,
        label=reading.label, media_type=media_type, ref_id=added.id, file_sha256=file_sha256,
        psnr=round(psnr(rgb, distributed), 2), alpha=kept,
    )
    return result, signed


def sign_many(
    store: CredentialStore,
    items: Iterable[tuple[Any, str | os.PathLike[str]]],
    creds: SigningCredentials,
    options: SignOptions | None = None,
) -> list[SignResult | TracemarkError]:
    """Sign a batch; a bad item is returned as its typed error in its slot, the rest go on."""
    out: list[SignResult | TracemarkError] = []
    for image, dest in items:
        try:
            out.append(sign_image(store, image, dest, creds, options)[0])
        except TracemarkError as exc:
            if exc.source is None:
                exc.source = (str(image) if isinstance(image, str | os.PathLike)
                              else f"<{type(image).__name__}> -> {dest}")
            out.append(exc)
    return out
