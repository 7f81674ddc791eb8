"""C2PA manifests through c2pa-python: the definitions tracemark signs, signing, reading.

Everything that touches the ``c2pa`` package is here, so that the rest of
:mod:`tracemark.credentials` works with plain bytes, dicts and dataclasses.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracemark._optional import require
from tracemark.credentials.certs import SigningCredentials
from tracemark.credentials.definition import ManifestDefinition
from tracemark.errors import SigningError, UnsupportedFormatError
from tracemark.imageio import media_type, written_suffixes

__all__ = [
    "C2PA_STATES",
    "MANIFEST_INACCESSIBLE",
    "MEDIA_TYPES",
    "PRERELEASE_CODE",
    "SOFT_BINDING_WATERMARK",
    "SOFT_BINDING_FINGERPRINT",
    "TRACEMARK_ASSERTION",
    "TRAINED_ALGORITHMIC_MEDIA",
    "ManifestReading",
    "has_manifest_marker",
    "manifest_definition",
    "media_type_for",
    "read_manifest",
    "sign_asset",
]

SIGNED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "AVIF", "HEIF")
"""Formats tracemark writes signed files in (Pillow's names): those c2pa-python 0.38 signs
(``c2pa.Builder.get_supported_mime_types()``) that :func:`tracemark.imageio.encode_image`
writes. GIF is a 256-colour palette: the watermark is embedded before the quantization
and may not survive it (the fingerprint does). AVIF and HEIF/HEIC are lossy at
:data:`tracemark.imageio.HEIF_AVIF_QUALITY` (90) by default, where the watermark reads
back; HEIF needs the ``heif`` extra (pillow-heif), else
:class:`~tracemark.errors.MissingExtraError`."""

PIL_FORMATS = {**{media_type(fmt): fmt for fmt in SIGNED_FORMATS}, media_type("HEIC"): "HEIF"}
"""Media type -> Pillow format of the signed outputs (``image/heic`` and ``image/heif``:
HEIF)."""

MEDIA_TYPES = {suffix: media_type(suffix) for suffix, fmt in sorted(written_suffixes().items())
               if fmt in SIGNED_FORMATS and suffix not in (".mpo", ".apng", ".avifs")}
"""Output suffixes tracemark signs and their media types (the suffix decides), derived from
:mod:`tracemark.imageio`'s vocabulary: ``.jpg .jpeg .jpe .jfif .png .webp .tif .tiff
.gif .avif .heic .heif .hif`` (``.heic``: ``image/heic``; ``.heif .hif``: ``image/heif``)."""

SOFT_BINDING_WATERMARK = "org.tracemark.watermark.lattice.1"
"""``alg`` of the soft-binding assertion naming the watermark (its value: the 64-bit payload)."""
SOFT_BINDING_FINGERPRINT = "org.tracemark.fingerprint.pdq.1"
"""``alg`` of the soft-binding assertion naming the fingerprint (its value: the PDQ hash)."""
TRACEMARK_ASSERTION = "org.tracemark.credential"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
"""The IPTC NewsCodes vocabulary of digital source types (C2PA 2.1, section "Digital Source
Type"): a type is this URL followed by its name, e.g. ``trainedAlgorithmicMedia``."""
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia",
                             "trainedAlgorithmicData"})
"""The digital source types that declare generative AI (IPTC: made with a trained model, or
a composite including such media): a store records their signings as AI-generated."""


def _camel(enum_name: str) -> str:
    head, *rest = enum_name.lower().split("_")
    return head + "".join(w.capitalize() for w in rest)


def digital_source_types() -> dict[str, Any]:
    """IPTC digital source type names (``digitalCapture``, ``trainedAlgorithmicMedia``...)
    -> c2pa-python's ``C2paDigitalSourceType`` member: every type c2pa-python signs."""
    enum = _c2pa().C2paDigitalSourceType
    return {_camel(m.name): m for m in enum if m.name != "EMPTY"}


def digital_source_type(value: str) -> str:
    """The IPTC name of a digital source type given by name or by its full
    ``http://cv.iptc.org/newscodes/digitalsourcetype/...`` URL (case of the URL's host
    ignored). Raises :class:`~tracemark.errors.ConfigError` naming the known types."""
    from tracemark.errors import ConfigError

    name = str(value).strip()
    if name.lower().startswith(IPTC_DIGITAL_SOURCE_TYPE):
        name = name[len(IPTC_DIGITAL_SOURCE_TYPE):]
    known = digital_source_types()
    if name not in known:
        raise ConfigError(f"unknown digital source type {value!r}; known: "
                          f"{', '.join(sorted(known))}")
    return name
CLAIM_GENERATOR = "tracemark"


def _c2pa() -> Any:
    return require("c2pa", "c2pa", purpose="content credentials")


def media_type_for(suffix: str) -> str:
    """The MIME type tracemark signs for a file suffix, or :class:`UnsupportedFormatError`."""
    mt = MEDIA_TYPES.get(suffix.lower())
    if mt is None:
        raise UnsupportedFormatError(
            f"cannot sign {suffix or 'a file without a suffix'}: the output must be "
            f"{', '.join(sorted(MEDIA_TYPES))}"
        )
    return mt


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tracemark")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def manifest_definition(
    *,
    title: str,
    media_type: str,
    store_id: str,
    manifest_id: int,
    payload: int,
    pdq_hash: bytes,
    author: str | None = None,
    mark_id: int | None = None,
    supersedes: tuple[int, str | None] | None = None,
    watermark_skipped: str | None = None,
    user: ManifestDefinition | None = None,
) -> dict[str, Any]:
    """The manifest definition (c2pa-python's JSON form) tracemark signs.

    ``watermark_skipped`` (why: an image too small for the mark): no watermark soft
    binding, and the tracemark assertion says ``"watermark": null`` with the reason.

    Two soft-binding assertions name the watermark (payload, 8 bytes big-endian, base64)
    and the fingerprint (the 256-bit PDQ hash, base64); a tracemark assertion names the
    store and manifest id, and for an image that already carried the store's mark, the
    manifest id that mark names (``mark_id``) and the manifest this one ``supersedes`` (id,
    label). The actions (created with a digital source type, or opened from a parent
    ingredient, then watermarked) are added by :func:`sign_asset`.

    ``user``: a user's definition (:mod:`tracemark.credentials.definition`): its
    assertions follow tracemark's, its ``claim_generator_info`` (one entry: a C2PA 2 claim
    names one generator) replaces tracemark's;
    its actions and ingredients are added by :func:`sign_asset`.
    """
    credential: dict[str, Any] = {"store_id": store_id, "manifest_id": manifest_id,
                                  "watermark": "lattice", "fingerprint": "vlad+pdq+sift"}
    if mark_id is not None and mark_id != manifest_id:
        credential["mark_manifest_id"] = mark_id
    if supersedes is not None:
        credential["supersedes"] = {"manifest_id": supersedes[0], "label": supersedes[1]}
    if watermark_skipped is not None:
        credential["watermark"] = None
        credential["watermark_skipped"] = watermark_skipped
    assertions: list[dict[str, Any]] = [] if watermark_skipped is not None else [
        {
            "label": "c2pa.soft-binding",
            "data": {
                "alg": SOFT_BINDING_WATERMARK,
                "blocks": [{"scope": {},
                            "value": base64.b64encode(payload.to_bytes(8, "big")).decode()}],
            },
        }]
    assertions += [
        {
            "label": "c2pa.soft-binding",
            "data": {
                "alg": SOFT_BINDING_FINGERPRINT,
                "blocks": [{"scope": {}, "value": base64.b64encode(pdq_hash).decode()}],
            },
        },
        {"label": TRACEMARK_ASSERTION, "data": credential},
    ]
    if author:
        assertions.append({
            "label": "stds.schema-org.CreativeWork",
            "data": {"@context": "http://schema.org/", "@type": "CreativeWork",
                     "author": [{"@type": "Person", "name": author}]},
        })
    generators: list[dict[str, Any]] = [{"name": CLAIM_GENERATOR, "version": _version()}]
    if user is not None:
        assertions += [dict(a) for a in user.assertions]
        # a C2PA 2 claim names one generator: the user's application, when it names itself
        # (tracemark stays the software agent of c2pa.watermarked and of its assertion)
        generators = [dict(g) for g in user.claim_generator_info] or generators
    out = {
        "claim_generator_info": generators,
        "title": title,
        "format": media_type,
        "assertions": assertions,
    }
    named = [ing.to_json() for ing in user.ingredients if ing.data is None] if user else []
    if named:  # ingredients without a file (those with one: sign_asset)
        out["ingredients"] = named
    return out


def sign_asset(
    creds: SigningCredentials,
    definition: dict[str, Any],
    media_type: str,
    asset: bytes,
    *,
    ai_generated: bool = False,
    parent: tuple[bytes, str, str] | None = None,
    source_type: str | None = None,
    watermarked: bool = True,
    signer: Callable[[bytes], bytes] | None = None,
    tsa_url: str | None = None,
    user: ManifestDefinition | None = None,
) -> tuple[bytes, bytes]:
    """Sign ``asset`` (bytes of ``media_type``); return (signed file, manifest store bytes).

    ``source_type`` (an IPTC digital source type name, :func:`digital_source_type`; or
    ``ai_generated``, which means ``trainedAlgorithmicMedia``): intent *create* (a
    ``c2pa.created`` action) with that digital source type. Otherwise intent *edit* with
    ``parent`` = (bytes, media type, title) as the parent ingredient (the image before
    tracemark watermarked it), or *create* as ``digitalCreation`` without a parent. All add
    ``c2pa.watermarked``.

    ``signer``: an external signer (``(data: bytes) -> bytes``, see
    :mod:`tracemark.credentials.signers`) used through c2pa-python's callback signer
    (``Signer.from_callback``) instead of ``creds.key_pem``; its exceptions come back as
    :class:`~tracemark.errors.SigningError` (c2pa-python itself only logs them).
    ``tsa_url``: an RFC 3161 timestamp authority (``http(s)://``) that c2pa asks to
    countersign the claim signature; signing fails when it cannot be reached or answers
    with something other than a time-stamp token.
    ``user``: a user's definition, whose actions are added after the created/opened action
    and before ``c2pa.watermarked``, and whose ingredients are added (a file's bytes, or
    named only); a definition whose fields c2pa cannot read (an action's ``softwareAgent``
    a number...) raises :class:`~tracemark.errors.ConfigError`.
    """
    if source_type is None and ai_generated:
        source_type = "trainedAlgorithmicMedia"
    c2pa = _c2pa()
    failed: list[BaseException] = []
    try:
        ctx = c2pa.Context.from_dict({
            "builder": {"thumbnail": {"enabled": False}},
            "verify": {"verify_after_sign": True, "remote_manifest_fetch": False,
                       "ocsp_fetch": False},
        })
        builder = c2pa.Builder(definition, context=ctx)
        if source_type is not None or parent is None:
            source = digital_source_types()[digital_source_type(source_type or
                                                                "digitalCreation")]
            builder.set_intent(c2pa.C2paBuilderIntent.CREATE, source)
        else:
            data, parent_type, parent_title = parent
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            builder.add_ingredient({"title": parent_title, "relationship": "parentOf"},
                                   parent_type, io.BytesIO(data))
        for action in user.actions if user is not None else ():
            builder.add_action(dict(action))
        for ing in user.ingredients if user is not None else ():
            if ing.data is not None:
                builder.add_ingredient(ing.to_json(), ing.format, io.BytesIO(ing.data))
        if watermarked:  # not for an image too small to carry the mark
            builder.add_action({
                "action": "c2pa.watermarked",
                "softwareAgent": {"name": CLAIM_GENERATOR, "version": _version()},
                "parameters": {"description": "tracemark invisible watermark carrying the "
                                              "manifest identifier (soft binding)"},
            })
        c2pa_signer = (_callback_signer(c2pa, signer, creds, tsa_url, failed)
                       if signer is not None else
                       c2pa.Signer.from_info(c2pa.C2paSignerInfo(
                           creds.alg.encode(), creds.chain_pem.encode(),
                           creds.key_pem.encode(), tsa_url.encode() if tsa_url else None)))
        out = io.BytesIO()
        with c2pa_signer:
            manifest_store = builder.sign(c2pa_signer, media_type, io.BytesIO(asset), out)
    except c2pa.C2paError as exc:
        if failed:
            if isinstance(failed[0], SigningError):
                raise failed[0] from None
            raise SigningError(f"the external signer failed: {failed[0]!r}") from None
        if tsa_url and any(t in str(exc).lower() for t in (tsa_url.lower(), *_TSA_FAILURE)):
            raise SigningError(f"the timestamp authority {tsa_url} gave no time-stamp "
                               f"token: {exc}") from None
        if user is not None and str(exc).startswith(_DEFINITION_REFUSALS):
            from tracemark.errors import ConfigError

            raise ConfigError(f"manifest definition refused by c2pa: {exc}") from None
        raise SigningError(f"c2pa refused to sign: {exc}") from None
    return out.getvalue(), bytes(manifest_store)


C2PA_STATES = {"Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}
"""c2pa's ``Reader.get_validation_state()`` (c2pa-rs ``ValidationState``) -> tracemark's
state, one to one: ``Trusted`` (valid, and the signer chains to a trust anchor), ``Valid``
(well formed and its signature and hashes check, the signer or a CAWG identity credential
not trusted: its failure codes then end in ``.untrusted``), ``Invalid`` (any other failure).
tracemark never turns c2pa's ``Valid`` into ``invalid`` because of an ``.untrusted``
failure (a CAWG identity credential outside the trust list is ``valid``)."""

PRERELEASE_CODE = "com.adobe.prerelease"
"""c2pa-rs's validation code for ``Error::PrereleaseError`` (``validation_status.rs``
``STATUS_PRERELEASE``): a manifest written before C2PA 1.0 (JSON claims, old assertion
hashing), which c2pa does not validate. c2pa-python 0.38 raises it as ``C2paError.Other``
"prerelease content detected"; tracemark reports it as state ``unsupported``."""
MANIFEST_INACCESSIBLE = "manifest.inaccessible"
"""The C2PA validation code (C2PA 2.1, 15.3; c2pa-rs ``MANIFEST_INACCESSIBLE``) of a remote
manifest that could not be fetched."""

_REMOTE_URL = re.compile(r"must fetch remote manifests from url (\S+)")
"""c2pa-rs's ``Error::RemoteManifestUrl`` text (c2pa-python 0.38 raises it as a plain
``C2paError`` "Remote: ...") with the URL the file's XMP ``dcterms:provenance`` names."""
_UNSUPPORTED: dict[str, str | None] = {"prerelease content detected": PRERELEASE_CODE,
                                       "claim version is too new": None}
"""c2pa error texts that mean "a manifest c2pa does not validate" -> the C2PA code, or None
where c2pa has no validation code for it and only raises: then the error's kind
(``c2pa.verify``) is the code, as for every other error c2pa raises. "claim version is too
new, not supported" is c2pa-rs's ``InvalidClaimError::ClaimVersionTooNew`` (claim.rs: the
claim box's label, e.g. ``c2pa.claim.v3``, names a version this c2pa does not build),
raised by c2pa-python 0.38 as ``C2paError.Verify``."""


_DEFINITION_REFUSALS = ("Json:", "Decoding: could not decode assertion")
"""Starts of c2pa-rs 0.91's errors on a manifest whose fields have the wrong shape (an
action's ``softwareAgent`` a number, ``stds.exif`` data a string, ...): with a user's
definition these are the definition's fault, a :class:`~tracemark.errors.ConfigError`
(tracemark's own manifest has the right shapes), not a failed signing."""
_TSA_FAILURE = ("timestamp", "signature: internal error")
"""Texts (lower case) of c2pa-rs's time-stamp errors in a failed sign: a TSA that cannot be
reached is named by its URL (the HTTP resolver's error); one that answers bytes that are no
time-stamp response gives "Signature: internal error (decode error ...)" (c2pa-rs 0.91,
measured), the only signature error c2pa raises itself once the signer has answered."""


def _callback_signer(c2pa: Any, signer: Callable[[bytes], bytes], creds: SigningCredentials,
                     tsa_url: str | None, failed: list[BaseException]) -> Any:
    """c2pa's callback signer around ``signer``: its output made a COSE signature
    (:func:`~tracemark.credentials.signers.cose_signature`), its exception kept in
    ``failed`` (c2pa-python logs it and reports only "callback failed")."""
    from tracemark.credentials.signers import cose_signature

    def sign(data: bytes) -> bytes:
        try:
            return cose_signature(signer(data), creds.alg)
        except BaseException as exc:
            failed.append(exc)
            raise

    alg = c2pa.C2paSigningAlg[creds.alg.upper()]
    return c2pa.Signer.from_callback(sign, alg, creds.chain_pem, tsa_url)


@dataclass
class ManifestReading:
    """What c2pa's Reader says of an asset (or of a stored manifest against an asset).

    ``state``: ``"trusted"``, ``"valid"``, ``"invalid"`` (c2pa's validation state,
    :data:`C2PA_STATES`), ``"remote"`` (the file names a remote manifest, at
    ``remote_url``, which was not fetched), ``"unsupported"`` (a manifest c2pa does not
    validate, e.g. pre-release or a claim version newer than c2pa knows: ``codes["failure"]``
    holds c2pa's code, :data:`PRERELEASE_CODE`, or the kind of error c2pa raised,
    ``c2pa.verify``), ``"absent"`` (no manifest) or ``"unreadable"`` (c2pa cannot
    parse the container -- e.g. a PNG missing its last bytes -- so it says nothing of a
    manifest; :func:`has_manifest_marker` tells whether one is there). ``codes``: c2pa's
    validation codes of the active manifest, by kind (success, informational, failure).
    ``error``: set when c2pa raised (for ``"invalid"``, ``codes["failure"]`` then holds the
    error's kind).
    """

    state: str
    label: str | None = None
    manifest: dict[str, Any] | None = None
    codes: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    store_json: str | None = None
    """The Reader's JSON of the whole manifest store (all manifests, validation results)."""
    c2pa_state: str | None = None
    """c2pa's own ``validation_state`` (``Trusted``, ``Valid``, ``Invalid``), or None when
    the Reader raised or found nothing."""
    remote_url: str | None = None
    """The remote manifest's URL (state ``remote``, or a manifest read from there)."""

    @property
    def failures(self) -> list[str]:
        return list(self.codes.get("failure", []))

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "label": self.label, "codes": self.codes, "error": self.error,
                "c2pa_state": self.c2pa_state, "remote_url": self.remote_url}


def trust_settings(trust_pem: str | None = None, allowed_pem: str | None = None,
                   trust_config: str | None = None) -> dict[str, Any]:
    """c2pa-python's ``trust`` settings (c2pa-rs 0.91 ``settings.trust``) for a Reader's
    Context. Anchors alone keep the plain form (``user_anchors``: CA certificates, PEM; a
    signer under them is trusted). With an allowed list or an EKU configuration, one
    ``anchors`` entry of ``trust_kind`` ``manifest`` carries ``trust_anchors`` (the same
    PEM, or none), ``allowed_list`` (end-entity certificates trusted as they are, whatever
    their CA: PEM, or base64 SHA-256 hashes of their DER, one a line) and ``trust_config``
    (extended key usage OIDs, one a line). c2pa-rs 0.91 ignores the older top-level
    ``allowed_list``/``trust_config`` keys (measured: an allowed signer stays untrusted),
    hence this form. Empty: c2pa's defaults."""
    if not allowed_pem and not trust_config:
        return {"user_anchors": trust_pem} if trust_pem else {}
    entry: dict[str, Any] = {"trust_kind": "manifest", "trust_anchors": trust_pem or ""}
    if allowed_pem:
        entry["allowed_list"] = allowed_pem
    if trust_config:
        entry["trust_config"] = trust_config
    return {"anchors": [entry]}


def _context(trust_pem: str | None, allowed_pem: str | None = None,
             trust_config: str | None = None) -> Any:
    c2pa = _c2pa()
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    trust = trust_settings(trust_pem, allowed_pem, trust_config)
    if trust:
        settings["trust"] = trust
    return c2pa.Context.from_dict(settings)


def _error_code(exc: Exception) -> str:
    name = type(exc).__name__.lstrip("_")
    return "c2pa." + (name[4:] if name.startswith("C2pa") else name).lower()


_UNPARSED_CONTAINER = "asset could not be parsed"
"""The text of c2pa-rs's ``Error::InvalidAsset`` (raised as ``C2paError.Other``) when it
cannot walk the file's container (chunks, segments) at all, before any manifest is read."""


def _unreadable_container(exc: Exception) -> bool:
    return _UNPARSED_CONTAINER in str(exc)


def _png_has_manifest(data: bytes) -> bool:
    i = 8
    while i + 8 <= len(data):
        length, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        if kind == b"caBX":
            return True
        if kind == b"IEND":
            return False
        i += 12 + length
    return False


def _jpeg_has_manifest(data: bytes) -> bool:
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no more metadata
            return False
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xEB and data[i + 4:i + 6] == b"JP":  # APP11 JUMBF
            return True
        i += 2 + length
    return False


def _riff_has_manifest(data: bytes) -> bool:
    i = 12
    while i + 8 <= len(data):
        kind, length = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if kind == b"C2PA":
            return True
        i += 8 + length + (length & 1)
    return False


_MANIFEST_MARKERS = {"image/png": _png_has_manifest, "image/jpeg": _jpeg_has_manifest,
                     "image/webp": _riff_has_manifest}


def has_manifest_marker(asset: bytes, media_type: str | None) -> bool:
    """Whether the file's container holds a C2PA manifest store where C2PA puts one (PNG:
    a ``caBX`` chunk; JPEG: an APP11 JUMBF segment before the scan; WebP: a ``C2PA``
    chunk), found by walking the container as far as its bytes go (truncated files
    included). Other media types: True when the bytes name a JUMBF ``c2pa`` box at all."""
    walk = _MANIFEST_MARKERS.get(media_type or "")
    if walk is not None:
        return walk(asset)
    return b"jumb" in asset and b"c2pa" in asset


def read_manifest(
    asset: bytes,
    media_type: str | None,
    *,
    trust_pem: str | None = None,
    manifest_store: bytes | None = None,
    allowed_pem: str | None = None,
    trust_config: str | None = None,
) -> ManifestReading:
    """Read and validate the manifest embedded in ``asset`` (or ``manifest_store`` given
    beside it, as a sidecar). Never raises for a bad manifest: that is ``"invalid"``.
    ``trust_pem``, ``allowed_pem``, ``trust_config``: c2pa's trust settings
    (:func:`trust_settings`).

    c2pa-python's errors (0.38) map to: ``Reader.try_create`` returning None (no manifest) and
    ``C2paError.NotSupported`` (a format c2pa does not read) -> ``"absent"``;
    ``C2paError.Other`` "asset could not be parsed" (the container cannot be walked, whether
    or not a manifest is in it) -> ``"unreadable"``; every other error (``Verify`` "invalid
    JUMB box", ``Other`` "provenance not found", ``Json``, ``Decoding``, ...: the manifest is
    there and broken) -> ``"invalid"`` with ``c2pa.<kind>`` as its failure code; "must
    fetch remote manifests from url U" (remote fetching is off) -> ``"remote"`` with
    ``remote_url`` U; "prerelease content detected" -> ``"unsupported"`` with
    :data:`PRERELEASE_CODE`; "claim version is too new, not supported" (a claim box labelled
    with a claim version c2pa does not know, e.g. ``c2pa.claim.v3``) -> ``"unsupported"``
    with ``c2pa.verify`` (c2pa has no validation code for it). A manifest read is c2pa's validation state as it is
    (:data:`C2PA_STATES`)."""
    c2pa = _c2pa()
    try:
        reader = c2pa.Reader.try_create(
            media_type or None, io.BytesIO(asset), manifest_store,
            _context(trust_pem, allowed_pem, trust_config))
    except c2pa.C2paError as exc:
        code = _error_code(exc)
        text = str(exc)
        if (remote := _REMOTE_URL.search(text)) is not None:
            return ManifestReading("remote", error=text, remote_url=remote.group(1))
        unsupported = next((c or code for t, c in _UNSUPPORTED.items() if t in text), None)
        if unsupported is not None:
            return ManifestReading("unsupported", codes={"failure": [unsupported]}, error=text)
        if code in ("c2pa.notsupported",) and manifest_store is None:
            return ManifestReading("absent", error=text)
        if _unreadable_container(exc):
            return ManifestReading("unreadable", error=text)
        return ManifestReading("invalid", codes={"failure": [code]}, error=text)
    if reader is None:
        return ManifestReading("absent")
    try:
        c2pa_state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
        active = reader.get_active_manifest()
        store_json = str(reader.json())
    except (c2pa.C2paError, KeyError, ValueError) as exc:  # KeyError: no active manifest
        return ManifestReading("invalid", codes={"failure": [_error_code(exc)]}, error=str(exc))
    finally:
        reader.close()
    block = results.get("activeManifest") or {}
    codes = {kind: [c["code"] for c in block.get(kind, [])]
             for kind in ("success", "informational", "failure")}
    # c2pa's state as it is (C2PA_STATES); a state it does not name is not a pass
    state = C2PA_STATES.get(str(c2pa_state), "invalid")
    label = active.get("label") if active else None
    return ManifestReading(state, label=label, manifest=active, codes=codes,
                           store_json=store_json, c2pa_state=c2pa_state)
