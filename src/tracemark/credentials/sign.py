"""Signing: watermark the image with its manifest id, sign a C2PA manifest, store both.

Order of a sign (one image)::

    check the signing certificate (C2PA profile)  ->  hash the input (SHA-256)
    ->  resume: an input this store already signed into ``out`` is skipped
    ->  decode  ->  read this store's mark: an image that carries it keeps it
    ->  reserve a manifest id (pending row)  ->  embed the watermark (payload: tag | id)
    ->  encode in the output format       ->  sign the C2PA manifest (c2pa-python)
    ->  fingerprint the signed pixels into the store's index
    ->  activate the row (label, manifest bytes, file hash)
    ->  commit the store (index, then manifests)
    ->  write the signed file (temp file, then rename)

A failure before the commit rolls the store back (no row, no fingerprint); nothing is
written to ``out``. A sign commits the store, so it also commits what the caller wrote to
it before; on failure it rolls back what was not committed.

Re-runs resume: when this store holds an active manifest signed from an input with the
same SHA-256 (of its file bytes; of its pixels for an array) and ``out`` already holds that
signed file (or a crash left it in ``out``'s temp file, which is then renamed into place),
the input is not signed again: the result has ``skipped=True`` and the earlier manifest
(``SignOptions.resign`` signs it again anyway). Re-signing an image that carries this
store's mark (e.g. a signed file, edited) keeps that mark -- a second mark over the first
would break both -- and the new manifest names the earlier one (``supersedes`` in the
tracemark assertion; the input file, with its manifest, is the c2pa parent ingredient);
the store resolves the mark to the newest manifest of the lineage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tracemark.credentials import manifest as mf
from tracemark.credentials.certs import SigningCredentials
from tracemark.credentials.definition import ManifestDefinition
from tracemark.credentials.store import CredentialStore
from tracemark.errors import ImageSourceError, ImageTooSmallError, SigningError, TracemarkError
from tracemark.fingerprint import pdq
from tracemark.imageio import (
    DEFAULT_MAX_PIXELS,
    HEIF_AVIF_QUALITY,
    ImageFormats,
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

__all__ = ["Rendered", "SignOptions", "SignResult", "render_signed", "sign_image", "sign_many"]

DEFAULT_QUALITY = {"image/jpeg": 95, "image/webp": 95, "image/avif": HEIF_AVIF_QUALITY,
                   "image/heic": HEIF_AVIF_QUALITY, "image/heif": HEIF_AVIF_QUALITY}
"""Quality of the lossy signed formats (JPEG, WebP; AVIF and HEIF/HEIC:
:data:`tracemark.imageio.HEIF_AVIF_QUALITY`, where the watermark reads back); the others
(PNG, TIFF, GIF) have none."""


@dataclass(frozen=True)
class SignOptions:
    ai_generated: bool = False
    """Shorthand for ``source_type="trainedAlgorithmicMedia"``."""
    title: str | None = None
    author: str | None = None
    quality: int | None = None
    """JPEG/WebP/AVIF/HEIF quality of the signed file (default: :data:`DEFAULT_QUALITY`)."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    resign: bool = False
    """Sign an input again even when this store already signed it into ``out``."""
    formats: ImageFormats = "default"
    """Input formats read (:func:`tracemark.imageio.load_image`'s ``formats``)."""
    source_type: str | None = None
    """Declare the image *created* with this IPTC digital source type (``digitalCapture``,
    ``trainedAlgorithmicMedia``, ``compositeWithTrainedAlgorithmicMedia``... or the full
    ``http://cv.iptc.org/newscodes/digitalsourcetype/`` URL; c2patool's ``--create``);
    None: an *edit* of the input, which becomes the parent ingredient."""
    signer: Callable[[bytes], bytes] | None = field(default=None, compare=False)
    """An external signer, ``(data: bytes) -> bytes``, that signs the claim with a key
    tracemark never sees (a KMS, an HSM; :class:`~tracemark.credentials.signers.CommandSigner`
    runs a command), used through c2pa-python's callback signer with the credentials'
    chain and ``alg`` (:func:`~tracemark.credentials.certs.load_signing_certificate`).
    ECDSA signatures may be DER or raw ``r || s``. None: the credentials' own key."""
    tsa_url: str | None = None
    """An RFC 3161 timestamp authority (``http://`` or ``https://`` URL) that countersigns
    each claim signature (c2pa's ``ta_url``); an unreachable one fails the signing."""
    definition: ManifestDefinition | None = field(default=None, compare=False)
    """A user's manifest definition (c2patool's ``--manifest``; :mod:`tracemark.credentials.
    definition`) merged with tracemark's manifest: its assertions, actions, ingredients,
    claim generator, and its title when ``title`` is None."""

    def __post_init__(self) -> None:
        from tracemark.errors import ConfigError

        if self.signer is not None and not callable(self.signer):
            raise ConfigError(f"signer must be a callable (bytes) -> bytes, not "
                              f"{type(self.signer).__name__}")
        if self.definition is not None:
            from tracemark.credentials.definition import CREATIVE_WORK

            if not isinstance(self.definition, ManifestDefinition):
                raise ConfigError("definition must be a ManifestDefinition "
                                  "(tracemark.credentials.definition.parse_definition)")
            if self.author and any(a["label"] == CREATIVE_WORK
                                   for a in self.definition.assertions):
                raise ConfigError(f"the definition's {CREATIVE_WORK} assertion and author "
                                  "(which writes one): give the author in one of them")
        if self.tsa_url is not None and (
                not isinstance(self.tsa_url, str)
                or not self.tsa_url.lower().startswith(("http://", "https://"))
                or len(self.tsa_url) < 10 or any(c.isspace() for c in self.tsa_url)):
            raise ConfigError(f"tsa_url must be an http:// or https:// URL, not "
                              f"{self.tsa_url!r}")
        if self.source_type is not None:
            from tracemark.credentials.manifest import digital_source_type

            object.__setattr__(self, "source_type", digital_source_type(self.source_type))
            if self.ai_generated and self.source_type != "trainedAlgorithmicMedia":
                from tracemark.errors import ConfigError

                raise ConfigError("ai_generated means source type trainedAlgorithmicMedia: "
                                  f"give one of them, not {self.source_type!r} too")

    @property
    def create_type(self) -> str | None:
        """The digital source type of a *create* signing, or None for an *edit*."""
        return self.source_type or ("trainedAlgorithmicMedia" if self.ai_generated else None)

    @property
    def is_ai(self) -> bool:
        """Whether the signing declares generative AI (recorded by the store)."""
        from tracemark.credentials.manifest import AI_SOURCE_TYPES

        return self.create_type in AI_SOURCE_TYPES


@dataclass(frozen=True)
class SignResult:
    source: str
    output: str
    manifest_id: int
    label: str
    media_type: str
    ref_id: int | None
    file_sha256: str
    psnr: float | None
    """PSNR (dB) of the signed pixels against the input's; None when ``skipped``, or when
    they are identical (an image too small for the mark, signed losslessly)."""
    mark_id: int | None = None
    """The manifest id the image's watermark carries: ``manifest_id`` for a first signing,
    the earlier manifest's when the input already carried this store's mark."""
    mark_kept: bool = False
    """True when the input already carried this store's mark and no second one was embedded."""
    supersedes: int | None = None
    """The newest manifest of the mark's lineage before this one (``mark_kept`` only)."""
    skipped: bool = False
    """True when this store had already signed this input into ``output``: nothing was
    signed and the fields name the earlier manifest."""
    input_sha256: str | None = None
    """SHA-256 (hex) of the input file's bytes (of its pixels for an array)."""
    parent: str | None = None
    """The parent ingredient of an edit: ``"original"`` (the input file as it was) or
    ``"reencoded_png"`` (its decoded pixels as PNG, when c2pa cannot parse the input's
    container, e.g. a PNG missing its last bytes); None for an AI-generated image."""
    watermark_skipped: str | None = None
    """Why the image carries no watermark (it is too small for the mark: the lattice needs a
    short side of 128 px), or None when it is marked. It is still signed and fingerprinted,
    and its manifest says so (no watermark soft binding, ``"watermark": null``)."""
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


_PARENT_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "HEIF", "AVIF")
"""Input formats c2pa reads as a parent ingredient (others are embedded as PNG)."""


PARENT_ORIGINAL = "original"
PARENT_REENCODED = "reencoded_png"


def _parent(original: bytes | None, rgb: np.ndarray, name: str,
            formats: ImageFormats = "default") -> tuple[tuple[bytes, str, str], str]:
    """The parent ingredient (bytes, media type, title) and how it was made: the original
    file (:data:`PARENT_ORIGINAL`) when c2pa reads its format and can parse its container,
    else the decoded pixels re-encoded as PNG (:data:`PARENT_REENCODED`): e.g. a PNG
    missing its last bytes, whose pixels decode but whose chunks c2pa cannot walk."""
    if original is not None:
        fmt = open_image_info(original, max_pixels=None, formats=formats).format
        mt = media_type(fmt) if fmt in _PARENT_FORMATS else None
        if mt is not None and mf.read_manifest(original, mt).state != "unreadable":
            return (original, mt, Path(name).name), PARENT_ORIGINAL
    return (encode_image(rgb, "PNG"), "image/png", Path(name).stem + ".png"), PARENT_REENCODED


def _sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _already_signed(out: Path, file_sha256: str | None) -> bool:
    """Whether ``out`` holds the signed file of SHA-256 ``file_sha256``: as it is, or in a
    temp file a crash left beside it between the store's commit and the rename (then it is
    renamed into place now)."""
    if file_sha256 is None:
        return False
    if out.is_file():
        return _sha256_file(out) == file_sha256
    if out.exists() or out.is_symlink():
        return False
    for tmp in out.parent.glob(f".{out.name}.tmp-*") if out.parent.is_dir() else ():
        if tmp.is_file() and _sha256_file(tmp) == file_sha256:
            try:
                os.replace(tmp, out)
            except OSError:
                return False
            return True
    return False


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
        with contextlib.suppress(OSError):  # e.g. a file where the folder should be
            tmp.unlink(missing_ok=True)
        raise SigningError(f"cannot write the output: {exc.strerror or exc}",
                           source=str(path)) from None
    return tmp


@dataclass(frozen=True)
class Rendered:
    """What :func:`render_signed` made of one image: the signed file and its manifest."""

    signed: bytes
    """The signed file's bytes (the asset with its C2PA manifest embedded)."""
    label: str
    """The manifest's label (c2pa's URN)."""
    manifest_json: str
    """The manifest store's JSON, as c2pa reads it back from ``signed``."""
    manifest_store: bytes
    """The raw manifest store (JUMBF), as c2pa returns it."""
    file_sha256: str
    """SHA-256 (hex) of ``signed``."""
    distributed: np.ndarray
    """The signed file's pixels decoded (RGB uint8 ``(H, W, 3)``): what is fingerprinted."""
    parent: str | None
    """:attr:`SignResult.parent`."""
    alpha: str | None
    """:attr:`SignResult.alpha`."""
    watermark_skipped: str | None = None
    """:attr:`SignResult.watermark_skipped`."""


def render_signed(rgb: np.ndarray, colour: np.ndarray, alpha: np.ndarray | None,
                  creds: SigningCredentials, opts: SignOptions, *, media_type: str,
                  title: str, store_id: str, manifest_id: int, mark_id: int, payload: int,
                  mark: Any | None, supersedes: tuple[int, str | None] | None,
                  original: bytes | None, name: str) -> Rendered:
    """The image work of a sign, with no store access (so that it may run elsewhere: a
    batch job's worker, :func:`tracemark.batch.sign_sources`): mark ``rgb`` (the input
    composited over white, RGB uint8 ``(H, W, 3)``) with ``mark(rgb, payload)`` (None: it
    keeps the mark it carries), encode it as ``media_type`` (keeping ``alpha``, the
    input's ``(H, W)`` uint8 alpha channel, under ``colour`` where the format has one),
    hash the decoded pixels (PDQ), and sign the manifest (``payload``, ``supersedes``:
    the earlier manifest's ``(id, label)`` of a kept mark; the parent ingredient from
    ``original``, the input's bytes) with ``creds``.

    Raises :class:`~tracemark.errors.WatermarkEmbedError` and
    :class:`~tracemark.errors.SigningError` (c2pa refused, or the signed file has no
    readable manifest)."""
    skipped: str | None = None
    try:
        marked = rgb if mark is None else mark(rgb, payload)
    except ImageTooSmallError as exc:  # signed and fingerprinted all the same
        marked, skipped = rgb, f"watermark skipped: {exc.message}"
    quality = opts.quality if opts.quality is not None else DEFAULT_QUALITY.get(media_type)
    fmt = mf.PIL_FORMATS[media_type]
    if alpha is not None and has_alpha_channel(fmt):
        # in place only on the mark's own buffer: a kept mark's pixels are ``rgb``
        visible = colour_under_alpha(marked, colour, alpha,
                                     out=None if marked is rgb else marked)
        asset = encode_image_with_alpha(visible, alpha, fmt, quality=quality)
        del visible
    else:
        asset = encode_image(marked, fmt, quality=quality)
    kept = None if alpha is None else "kept" if has_alpha_channel(fmt) else "flattened"
    del marked
    distributed = load_image(asset, max_pixels=None)
    pdq_bits, _quality = pdq.pdq_hash(distributed, packed=True)
    definition = mf.manifest_definition(
        title=title, media_type=media_type, store_id=store_id,
        manifest_id=manifest_id, payload=payload,
        pdq_hash=np.asarray(pdq_bits, np.uint8).tobytes(), author=opts.author,
        mark_id=mark_id, supersedes=supersedes, watermark_skipped=skipped,
        user=opts.definition,
    )
    parent, parent_kind = ((None, None) if opts.create_type is not None
                           else _parent(original, rgb, name, opts.formats))
    signed, manifest_store = mf.sign_asset(creds, definition, media_type, asset,
                                           source_type=opts.create_type, parent=parent,
                                           watermarked=skipped is None, signer=opts.signer,
                                           tsa_url=opts.tsa_url, user=opts.definition)
    reading = mf.read_manifest(signed, media_type)
    if reading.label is None or reading.store_json is None:
        raise mf.SigningError("the signed file has no readable manifest")
    return Rendered(signed=signed, label=reading.label, manifest_json=reading.store_json,
                    manifest_store=manifest_store,
                    file_sha256=hashlib.sha256(signed).hexdigest(), distributed=distributed,
                    parent=parent_kind, alpha=kept, watermark_skipped=skipped)


def sign_image(
    store: CredentialStore,
    image: Any,
    out: str | os.PathLike[str] | None,
    creds: SigningCredentials,
    options: SignOptions | None = None,
    *,
    media_type: str | None = None,
    name: str | None = None,
) -> tuple[SignResult, bytes]:
    """Watermark, sign and register one image; write it to ``out`` (unless None).

    ``media_type`` is required when ``out`` is None (otherwise the suffix of ``out``
    decides). ``name``: the input's display name when ``image`` is not a path (e.g. an
    upload's file name; only its last path component is used): the parent ingredient's
    title, and the title when neither ``options`` nor ``out`` gives one. Returns the result and the signed file's bytes (for a ``skipped`` input,
    those of ``out``). Resuming, kept marks: see the module docstring.

    Raises :class:`~tracemark.errors.CertificateError` (``creds`` break the C2PA
    certificate profile: checked first), :class:`~tracemark.errors.UnsupportedFormatError`
    (output suffix), the loader's :class:`~tracemark.errors.ImageError` subclasses,
    :class:`~tracemark.errors.WatermarkEmbedError`, :class:`~tracemark.errors.SigningError`
    (also an external signer's failure, or an unreachable timestamp authority: nothing is
    written, the store is rolled back), :class:`~tracemark.errors.ConfigError` (``creds``
    without a key and no ``options.signer``).
    """
    opts = options or SignOptions()
    creds.check()  # the C2PA certificate profile, before any image work
    if not creds.key_pem and opts.signer is None:
        from tracemark.errors import ConfigError

        raise ConfigError("these credentials have no private key (a chain loaded for an "
                          "external signer): give SignOptions.signer")
    if out is not None:
        media_type = mf.media_type_for(Path(out).suffix)
    elif media_type not in mf.PIL_FORMATS:
        raise mf.UnsupportedFormatError(f"cannot sign as {media_type!r}; use "
                                        f"{', '.join(mf.PIL_FORMATS)}")
    original, read_name = _read_input(image)
    if name is not None and not isinstance(image, str | os.PathLike):
        read_name = Path(name.replace("\\", "/")).name or read_name
    name = read_name
    input_sha256 = hashlib.sha256(original).hexdigest() if original is not None else None
    if input_sha256 is not None and out is not None and not opts.resign:
        skipped = _skip(store, input_sha256, Path(out), name)
        if skipped is not None:
            return skipped
    colour, alpha = load_image_with_alpha(original if original is not None else image,
                                          max_pixels=opts.max_pixels, formats=opts.formats,
                                          name=name)
    rgb = composite(colour, alpha)  # marked and fingerprinted as every reader sees it
    if input_sha256 is None:
        input_sha256 = hashlib.sha256(
            np.ascontiguousarray(colour).tobytes() + repr(colour.shape).encode()
            + (b"" if alpha is None else np.ascontiguousarray(alpha).tobytes())).hexdigest()
        if out is not None and not opts.resign:
            skipped = _skip(store, input_sha256, Path(out), name)
            if skipped is not None:
                return skipped
    title = opts.title or (opts.definition.title if opts.definition is not None else None) \
        or (Path(out).name if out is not None else Path(name).name)
    carried = _carried_mark(store, rgb)
    previous = store.resolve_mark(carried) if carried is not None else None
    manifest_id = store.reserve(title=title, author=opts.author, ai_generated=opts.is_ai,
                                media_type=media_type, input_sha256=input_sha256,
                                mark_id=carried, source_type=opts.create_type)
    mark_id = manifest_id if carried is None else carried
    tmp: Path | None = None
    try:
        payload = store.payload_for(mark_id)
        r = render_signed(
            rgb, colour, alpha, creds, opts, media_type=media_type, title=title,
            store_id=store.store_id, manifest_id=manifest_id, mark_id=mark_id,
            payload=payload,
            mark=None if carried is not None else store.watermark.mark,
            supersedes=None if previous is None else (previous.id, previous.label),
            original=original, name=name)
        del colour, alpha
        added = store.add_fingerprint(r.distributed,
                                      source=str(out) if out is not None else name,
                                      notes=json.dumps({"manifest_id": manifest_id}))
        tmp = _write_temp(Path(out), r.signed) if out is not None else None
        store.activate(manifest_id, label=r.label, ref_id=added.id, file_sha256=r.file_sha256,
                       signer=creds.subject, manifest_json=r.manifest_json,
                       manifest_store=r.manifest_store)
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
        label=r.label, media_type=media_type, ref_id=added.id, file_sha256=r.file_sha256,
        psnr=_finite(round(psnr(rgb, r.distributed), 2)), mark_id=mark_id,
        mark_kept=carried is not None,
        supersedes=None if previous is None else previous.id, input_sha256=input_sha256,
        parent=r.parent, alpha=r.alpha, watermark_skipped=r.watermark_skipped,
    )
    return result, r.signed


def _finite(value: float) -> float | None:
    """None for an infinite PSNR (identical pixels: an unmarked image in a lossless
    format), which JSON cannot carry."""
    return value if np.isfinite(value) else None


def _skip(store: CredentialStore, input_sha256: str, out: Path,
          name: str) -> tuple[SignResult, bytes] | None:
    """The result of an input this store already signed into ``out`` (resume), or None."""
    for rec in reversed(store.signed_from(input_sha256)):
        if _already_signed(out, rec.file_sha256):
            result = SignResult(
                source=name, output=str(out), manifest_id=rec.id, label=rec.label or "",
                media_type=rec.media_type or "", ref_id=rec.ref_id,
                file_sha256=rec.file_sha256 or "", psnr=None, mark_id=store.mark_of(rec.id),
                skipped=True, input_sha256=input_sha256,
            )
            return result, out.read_bytes()
    return None


def _carried_mark(store: CredentialStore, rgb: np.ndarray) -> int | None:
    """The mark id this store's watermark in ``rgb`` carries (blind detection at the
    store's default alpha), or None when the image carries no mark of this store."""
    try:
        return store.watermark.carried(rgb)
    except ImageTooSmallError:  # too small to carry a mark at all
        return None


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
