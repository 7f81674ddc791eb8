"""Verifying: the embedded manifest first; when it is gone, the watermark; then the fingerprint.

Routes, in order:

1. **embedded** — c2pa's Reader validates the manifest in the file (state ``trusted``,
   ``valid`` or ``invalid``: c2pa's ``Trusted``, ``Valid``, ``Invalid`` as it says them,
   :data:`tracemark.credentials.manifest.C2PA_STATES`, with c2pa's codes). A file whose
   manifest is remote (its XMP ``dcterms:provenance`` names a URL) is state ``remote`` with
   ``remote_url``, not fetched unless ``VerifyOptions.fetch_remote`` (then the route is
   ``remote`` and the state c2pa's); a ``.c2pa`` sidecar beside a file without an embedded
   manifest (``photo.jpg`` + ``photo.c2pa``) is validated against it (route ``sidecar``).
   A manifest c2pa does not validate (pre-release, before C2PA 1.0) is ``unsupported``
   with c2pa's code (``com.adobe.prerelease``). For a manifest this store signed, the file
   must also be byte-identical to the signed file: c2pa leaves some bytes of the manifest
   container unauthenticated, and a change there is reported as ``invalid`` with the code
   ``tracemark.file.modified``. Only a manifest that is there and fails validation is
   ``invalid``: a container c2pa cannot parse (a PNG missing its last byte, whose pixels
   decode) is ``invalid`` (code ``tracemark.container.unreadable``) only when a manifest is
   found in it; without one it goes on to the next routes like a file without a manifest,
   and a file that is not an image at all is the loader's typed error.
2. **watermark** — no manifest in the file: the store's watermark is detected (calibrated
   p-value at most ``alpha``), its tag must be this store's, and the manifest id it carries
   names a lineage of active manifests (the image signed again keeps its first mark): the
   newest stored manifest of it is returned, state ``recovered``.
3. **fingerprint** — no watermark either: the image is searched in the store's index; a
   match whose decision is positive gives the manifest of the matched image.

A recovered manifest is validated too, as a sidecar of the file: its signature and
certificate are checked, and c2pa's hard-binding failure (the pixels changed) is expected
and reported as ``binding: soft``. Nothing is found: state ``not_found``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracemark.copydetect import Match
from tracemark.copydetect.decide import DecisionRule
from tracemark.credentials import manifest as mf
from tracemark.credentials.store import CredentialStore, ManifestRecord
from tracemark.errors import ImageError, ImageSourceError, ImageTooSmallError, TracemarkError
from tracemark.imageio import DEFAULT_MAX_PIXELS, ImageFormats, load_image, sniff_media_type

__all__ = ["VerifyOptions", "VerifyResult", "Located", "locate", "verify_image", "verify_many",
           "HARD_BINDING_CODES", "UNREADABLE_CODE", "UNRESOLVED_STATES"]

MAX_FILE_BYTES = 200 * 1024 * 1024
HARD_BINDING_CODES = frozenset({
    "assertion.dataHash.mismatch",
    "assertion.boxesHash.mismatch",
    "assertion.bmffHash.mismatch",
})
"""c2pa failure codes that only say the file's bytes are not the signed ones."""
UNREADABLE_CODE = "tracemark.container.unreadable"
"""``evidence.container.code`` of a file that holds a C2PA manifest in a container c2pa
cannot parse (e.g. a signed PNG missing its last bytes): the manifest is there but cannot be
validated, so the file is verified like one without a manifest (recovered, else not_found)."""


@dataclass(frozen=True)
class VerifyOptions:
    trust_pem: str | None = None
    """Trust anchors (PEM) added to c2pa's own list; without them a valid manifest from an
    unknown CA is ``valid``, not ``trusted``."""
    allowed_pem: str | None = None
    """c2pa's allowed list: end-entity certificates (PEM, or base64 SHA-256 hashes of their
    DER, one a line) trusted whatever their CA
    (:func:`~tracemark.credentials.certs.load_allowed_list`)."""
    trust_config: str | None = None
    """c2pa's trust configuration: extended key usage OIDs, one a line
    (:func:`~tracemark.credentials.certs.load_trust_config`)."""
    watermark_alpha: float = 1e-4
    """A watermark counts when its calibrated p-value is at most this."""
    min_inliers: int | None = 16
    """Fingerprint route on an uncalibrated index: geometric inliers needed. Stricter than
    copy detection's 12, because returning a wrong manifest is worse than returning none
    (docs/credentials.md); ``None`` keeps the index's own setting."""
    fingerprint_alpha: float | None = None
    """Fingerprint route on a calibrated index: p-value needed (default the index's)."""
    recover_invalid: bool = True
    """When the manifest is invalid, remote (not fetched) or unsupported
    (:data:`UNRESOLVED_STATES`), still look for the watermark/fingerprint and report what
    they name under ``recovered`` (the state stays)."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    formats: ImageFormats = "default"
    """Image formats read (:func:`tracemark.imageio.load_image`'s ``formats``)."""
    fetch_remote: bool = False
    """Fetch a remote manifest (the URL the file names, ``http``/``https`` only, at most
    :data:`MAX_FILE_BYTES`) and validate the file against it. Off by default: verifying
    then makes no network request, and a remote manifest is state ``remote``."""
    remote_timeout: float = 10.0
    """Seconds allowed for fetching a remote manifest (connect, and each read)."""
    sidecar: bool = True
    """Validate a file without an embedded manifest against ``<stem>.c2pa`` beside it
    (paths only), as c2patool writes sidecars."""


@dataclass
class VerifyResult:
    source: str
    state: str
    """``trusted``, ``valid``, ``invalid`` (the manifest, as c2pa validates it), ``remote``
    (the file names a remote manifest, not fetched: ``remote_url``), ``unsupported`` (a
    manifest c2pa does not validate: c2pa's code in ``codes["failure"]``), ``recovered``
    (through the watermark or fingerprint) or ``not_found``."""
    route: str | None = None
    """``embedded``, ``sidecar`` (a ``.c2pa`` file beside the image), ``remote`` (fetched
    from ``remote_url``), ``watermark`` or ``fingerprint``."""
    confidence: float | None = None
    """Embedded: 1.0. Watermark: 1 - p-value. Fingerprint: the copy-detection score."""
    manifest_id: int | None = None
    label: str | None = None
    codes: dict[str, list[str]] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    signature: str | None = None
    """Of a recovered manifest: ``trusted``, ``valid`` or ``invalid`` (its own signature)."""
    recovered: dict[str, Any] | None = None
    """Beside an invalid embedded manifest: what the watermark or fingerprint names."""
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    c2pa_state: str | None = None
    """c2pa's own validation state of the manifest read (``Trusted``, ``Valid``,
    ``Invalid``; None when c2pa raised or read nothing): ``state`` is it in lower case,
    except ``invalid`` for a file this store signed whose bytes changed."""
    remote_url: str | None = None
    """The URL of a remote manifest the file names (state ``remote``, or route ``remote``)."""

    @property
    def found(self) -> bool:
        return self.state in ("trusted", "valid", "recovered")

    def to_dict(self, *, with_manifest: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not with_manifest:
            d.pop("manifest")
        d["seconds"] = round(self.seconds, 4)
        return d


def _bytes_of(image: Any) -> tuple[bytes, str]:
    if isinstance(image, str | os.PathLike):
        p = Path(image)
        try:
            size = p.stat().st_size
            if p.is_dir():
                raise ImageSourceError("is a directory", source=str(p))
            if size > MAX_FILE_BYTES:
                raise ImageError(f"file of {size} bytes is over the {MAX_FILE_BYTES}-byte limit",
                                 source=str(p))
            return p.read_bytes(), str(p)
        except FileNotFoundError:
            raise ImageSourceError("no such file", source=str(p)) from None
        except OSError as exc:
            raise ImageSourceError(f"cannot read: {exc.strerror or exc}", source=str(p)) from None
    if isinstance(image, bytes | bytearray | memoryview):
        if len(image) > MAX_FILE_BYTES:
            raise ImageError(f"{len(image)} bytes is over the {MAX_FILE_BYTES}-byte limit")
        return bytes(image), "<bytes>"
    raise ImageSourceError(f"verify reads a path or bytes; got {type(image).__name__}")


def _media_type(data: bytes) -> str | None:
    """The media type from the file's magic bytes (:func:`tracemark.imageio.sniff_media_type`;
    None when unknown)."""
    return sniff_media_type(data[:64])


def _untrusted(code: str) -> bool:
    """A trust failure c2pa still calls ``Valid`` (``signingCredential.untrusted``,
    ``cawg.x509.credential.untrusted``, ``timeStamp.untrusted``: C2PA's ``*.untrusted``)."""
    return code.endswith(".untrusted")


def _signature_state(reading: mf.ManifestReading) -> str:
    """The state of a manifest read as a sidecar, ignoring the hard-binding mismatch (c2pa
    says ``Invalid`` for it; the other failures decide as c2pa would: ``*.untrusted`` only
    is ``valid``)."""
    if reading.error is not None:
        return "invalid"
    failures = [c for c in reading.failures if c not in HARD_BINDING_CODES]
    if not all(_untrusted(c) for c in failures):
        return "invalid"
    return "trusted" if "signingCredential.trusted" in reading.codes.get("success", []) else "valid"


@dataclass(frozen=True)
class Located:
    """A stored manifest an image's pixels name (:func:`locate`).

    ``route``: ``"watermark"`` or ``"fingerprint"``; ``confidence``: in [0, 1], 1 - the
    watermark's calibrated p-value, or the copy-detection score of the fingerprint match
    (:meth:`tracemark.copydetect.decide.DecisionRule.score`)."""

    record: ManifestRecord
    route: str
    confidence: float


def locate(store: CredentialStore, rgb: Any, options: VerifyOptions | None = None,
           evidence: dict[str, Any] | None = None, *,
           routes: tuple[str, ...] = ("watermark", "fingerprint")) -> Located | None:
    """The stored manifest the pixels ``rgb`` (RGB uint8 ``(H, W, 3)``) name, through the
    store's watermark, then its fingerprint index (the module docstring's routes 2 and 3;
    ``routes`` may leave one out), or None. What each route saw is written to
    ``evidence["watermark"]`` / ``evidence["fingerprint"]``. Raises the loader's and the
    index's typed errors (e.g. :class:`~tracemark.errors.ImageTooSmallError`)."""
    opts = options or VerifyOptions()
    evidence = {} if evidence is None else evidence
    found: list[list[Match]] = []

    def search(im: Any) -> list[Match]:
        """The store's matches; the query's are searched once (the watermark's alignment
        and the fingerprint route both need them)."""
        if im is not rgb:
            return store.search(im, k=3)
        if not found:
            found.append(store.search(rgb, k=3))
        return found[0]

    rec: ManifestRecord | None = None
    route, confidence = None, None
    if "watermark" in routes:
        det = store.read_mark(rgb, alpha=opts.watermark_alpha, search=search)
        present = None if det.present is None else bool(det.present)
        wm: dict[str, Any] = {"present": present, "p_value": det.p_value,
                              "score": round(float(det.score), 4)}
        if det.present and det.payload_int is not None:
            manifest_id = store.id_from_payload(det.payload_int)
            wm["tag_match"] = manifest_id is not None
            if manifest_id is not None:
                wm["manifest_id"] = manifest_id
                rec = store.resolve_mark(manifest_id)  # the newest manifest of the lineage
                if rec is not None:
                    route = "watermark"
                    confidence = 1.0 - float(det.p_value if det.p_value is not None else 1.0)
        evidence["watermark"] = wm
    if rec is None and "fingerprint" in routes:
        matches = search(rgb)[:1]
        fp: dict[str, Any] = {"match": False}
        if matches:
            m = matches[0]
            config = store.match_config
            rule = DecisionRule(
                alpha=opts.fingerprint_alpha or config.alpha,
                min_inliers=opts.min_inliers if opts.min_inliers is not None
                else config.min_inliers,
            )
            decision = rule.decide(p_value=m.p_value, inliers=m.inliers)
            fp = {"match": bool(decision), "ref_id": m.ref_id, "score": round(m.score, 4),
                  "p_value": m.p_value, "inliers": m.inliers}
            if decision:
                rec = store.by_ref(m.ref_id)
                if rec is not None:  # re-signed pixels share a fingerprint: the newest
                    rec = store.resolve_mark(store.mark_of(rec.id)) or rec
                    route, confidence = "fingerprint", float(m.score)
        evidence["fingerprint"] = fp
    if rec is None or route is None:
        return None
    return Located(rec, route, float(confidence or 0.0))


def _recover(store: CredentialStore, data: bytes, media_type: str | None, rgb: Any,
             opts: VerifyOptions, evidence: dict[str, Any]) -> dict[str, Any] | None:
    """Watermark, then fingerprint (:func:`locate`); the recovered record, validated as a
    sidecar of ``data``, and how, or None."""
    found = locate(store, rgb, opts, evidence)
    if found is None:
        return None
    rec, route, confidence = found.record, found.route, found.confidence
    sidecar = mf.read_manifest(data, media_type, **_trust(opts),
                               manifest_store=rec.manifest_store)
    if sidecar.state in ("absent", "unreadable"):  # c2pa cannot read this container:
        # check the manifest's bytes alone
        sidecar = mf.read_manifest(rec.manifest_store or b"", "application/c2pa",
                                   **_trust(opts))
    return {
        "route": route, "confidence": round(float(confidence or 0.0), 6),
        "manifest_id": rec.id, "label": rec.label, "signature": _signature_state(sidecar),
        "codes": sidecar.codes, "manifest": rec.manifest,
    }


def _trust(opts: VerifyOptions) -> dict[str, str | None]:
    """The trust settings of ``opts`` as :func:`~tracemark.credentials.manifest.read_manifest`
    takes them."""
    return {"trust_pem": opts.trust_pem, "allowed_pem": opts.allowed_pem,
            "trust_config": opts.trust_config}


def verify_image(
    image: Any,
    store: CredentialStore | None = None,
    options: VerifyOptions | None = None,
) -> VerifyResult:
    """Verify one image (path or bytes); see the module docstring for the routes."""
    t0 = time.perf_counter()
    result = _verify(image, store, options or VerifyOptions())
    result.seconds = time.perf_counter() - t0
    return result


UNRESOLVED_STATES = ("invalid", "remote", "unsupported")
"""States of a manifest that is there but does not verify the file: the watermark and
fingerprint routes still run (``VerifyOptions.recover_invalid``) and what they name goes
to ``VerifyResult.recovered``."""


def _fetch_remote(url: str, timeout: float) -> bytes:
    """The bytes at ``url`` (``http``/``https``; at most :data:`MAX_FILE_BYTES`, all of
    them within ``timeout`` seconds: a server trickling bytes is given up on too). Raises
    :class:`OSError` (``urllib``'s errors and :class:`TimeoutError` are its subclasses) or
    :class:`ValueError`."""
    import time
    import urllib.parse
    import urllib.request

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http and https manifests are fetched, not {url!r}")

    class _HttpOnly(urllib.request.HTTPRedirectHandler):
        """Redirects only to http and https (urllib's default also follows ftp://)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
                raise ValueError(f"the remote manifest redirects to {newurl!r}: only http "
                                 "and https are fetched")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    deadline = time.monotonic() + timeout
    data = bytearray()
    opener = urllib.request.build_opener(_HttpOnly)
    with opener.open(url, timeout=timeout) as response:
        while chunk := response.read1(1 << 16):
            data += chunk
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"the remote manifest is over {MAX_FILE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the remote manifest did not arrive within {timeout:g} s "
                                   "(timed out)")
        if response.length:  # the connection closed before the Content-Length was read
            raise ConnectionError(f"the remote manifest ended after {len(data)} bytes, "
                                  f"{response.length} short of its Content-Length")
    return bytes(data)


def _manifest_elsewhere(reading: mf.ManifestReading, data: bytes, media_type: str | None,
                        name: str, image: Any, opts: VerifyOptions,
                        evidence: dict[str, Any]) -> tuple[mf.ManifestReading, str]:
    """A reading from a ``.c2pa`` sidecar beside the file (``absent`` or ``remote``
    readings of a path), else from the remote URL when ``opts.fetch_remote``; the reading
    and its route. A failed fetch leaves state ``remote`` with
    :data:`~tracemark.credentials.manifest.MANIFEST_INACCESSIBLE` and the error in
    ``evidence["remote_fetch_error"]``."""
    if opts.sidecar and isinstance(image, str | os.PathLike):
        side = Path(image).with_suffix(".c2pa")
        if side != Path(image) and side.is_file() and side.stat().st_size <= MAX_FILE_BYTES:
            found = mf.read_manifest(data, media_type, **_trust(opts),
                                     manifest_store=side.read_bytes())
            evidence["sidecar"] = str(side)
            found.remote_url = reading.remote_url
            return found, "sidecar"
    if reading.state != "remote" or not opts.fetch_remote or reading.remote_url is None:
        return reading, "embedded"
    try:
        fetched = _fetch_remote(reading.remote_url, opts.remote_timeout)
    except (OSError, ValueError) as exc:
        evidence["remote_fetch_error"] = str(exc)
        reading.codes = {"failure": [mf.MANIFEST_INACCESSIBLE]}
        return reading, "embedded"
    found = mf.read_manifest(data, media_type, **_trust(opts), manifest_store=fetched)
    found.remote_url = reading.remote_url
    return found, "remote"


def _embedded(result: VerifyResult, reading: mf.ManifestReading, data: bytes,
              store: CredentialStore | None, route: str = "embedded") -> None:
    """Fill ``result`` from the manifest read (embedded, or from ``route``); a file this
    store signed must also be byte-identical to what it signed."""
    result.route, result.state, result.codes = route, reading.state, reading.codes
    result.label, result.manifest = reading.label, reading.manifest
    result.c2pa_state, result.remote_url = reading.c2pa_state, reading.remote_url
    if reading.error is not None:
        result.evidence["error"] = reading.error
    rec = store.by_label(reading.label) if store is not None and reading.label else None
    if rec is not None:
        result.manifest_id = rec.id
        same = rec.file_sha256 == hashlib.sha256(data).hexdigest()
        result.evidence["file_sha256_match"] = same
        if not same and result.state in ("trusted", "valid"):
            result.state = "invalid"
            result.codes = {**result.codes, "failure": [*result.codes.get("failure", []),
                                                         "tracemark.file.modified"]}
    result.confidence = 1.0 if result.state in ("trusted", "valid") else 0.0


def _verify(image: Any, store: CredentialStore | None, opts: VerifyOptions) -> VerifyResult:
    data, name = _bytes_of(image)
    media_type = _media_type(data)
    reading = mf.read_manifest(data, media_type, **_trust(opts)) \
        if media_type is not None else mf.ManifestReading("absent")
    result = VerifyResult(source=name, state="not_found")
    route = "embedded"
    if reading.state in ("absent", "remote"):
        reading, route = _manifest_elsewhere(reading, data, media_type, name, image, opts,
                                             result.evidence)
    rgb = None
    if reading.state == "unreadable":
        # c2pa cannot walk the container (e.g. a PNG missing its last bytes), so it can
        # validate nothing: not a tampered manifest (invalid) but a damaged file. The file
        # must be an image (a typed error otherwise) and goes on like a file without a
        # manifest (watermark, fingerprint, else not_found); the evidence says a manifest
        # is there but unreadable (UNREADABLE_CODE).
        rgb = load_image(data, max_pixels=opts.max_pixels, name=name, formats=opts.formats)
        present = mf.has_manifest_marker(data, media_type)
        result.evidence["container"] = {"readable_by_c2pa": False, "manifest_present": present,
                                        "error": reading.error}
        if present:
            result.evidence["container"]["code"] = UNREADABLE_CODE
        reading = mf.ManifestReading("absent")
    if rgb is None and (reading.state == "absent"
                        or (reading.error is not None and reading.manifest is None
                            and not mf.has_manifest_marker(data, media_type))):
        # No manifest, or c2pa failed on a file where no manifest is found: the file must
        # at least be an image (a typed error otherwise), so that a broken file is not
        # "tampered". A manifest that is there and broken is invalid even when the bytes
        # changed also break the image (a flipped byte in a PNG's caBX chunk fails its CRC).
        rgb = load_image(data, max_pixels=opts.max_pixels, name=name, formats=opts.formats)
    if reading.state != "absent":
        _embedded(result, reading, data, store, route)
        if result.state not in UNRESOLVED_STATES or not opts.recover_invalid:
            return result
    if store is None:
        return result
    if rgb is None:
        try:
            rgb = load_image(data, max_pixels=opts.max_pixels, name=name,
                             formats=opts.formats)
        except ImageError as exc:  # an unresolved manifest on an undecodable file: stays
            result.evidence["recovery_error"] = exc.to_dict()
            return result
    try:
        recovered = _recover(store, data, media_type, rgb, opts, result.evidence)
    except ImageError as exc:
        if result.state not in UNRESOLVED_STATES and not isinstance(exc, ImageTooSmallError):
            raise
        # the recovery routes could not run on these pixels (e.g. too small to search): the
        # manifest's verdict stands, or nothing was found; the evidence says why
        result.evidence["recovery_error"] = exc.to_dict()
        return result
    if result.state in UNRESOLVED_STATES:
        result.recovered = recovered
    elif recovered is not None:
        result.state = "recovered"
        for key in ("route", "confidence", "manifest_id", "label", "codes", "signature",
                    "manifest"):
            setattr(result, key, recovered[key])
    return result


def verify_many(
    images: list[Any], store: CredentialStore | None = None, options: VerifyOptions | None = None
) -> list[VerifyResult | TracemarkError]:
    """Verify a batch; a bad item is its typed error in its slot and the rest go on."""
    out: list[VerifyResult | TracemarkError] = []
    for image in images:
        try:
            out.append(verify_image(image, store, options))
        except TracemarkError as exc:
            if exc.source is None:
                exc.source = ("<bytes>" if isinstance(image, bytes | bytearray | memoryview)
                              else str(image))
            out.append(exc)
    return out
