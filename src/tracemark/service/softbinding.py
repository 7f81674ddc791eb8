"""The C2PA Soft Binding Resolution API over the service's collections.

Follows version 1.0.0 of the API's OpenAPI (the C2PA specification's "Soft Binding
Resolution API"; the text followed is the OpenAPI document published with Adobe's CAI
soft-binding API docs, ``c2pa-original-soft-binding.json``), mounted under ``/v1`` so that
``<server>/v1`` is the API's base URL, as in the specification's ``servers`` entry:

``GET|POST /v1/matches/byBinding``
    the manifests a soft binding (``alg`` + base64 ``value``) names;
``POST /v1/matches/byContent``
    the manifests an uploaded asset (the raw request body, ``image/*``) names: the manifest
    still embedded in it when c2pa validates it and it is stored here, then through the
    watermark and the fingerprint (:func:`tracemark.credentials.locate`, the routes
    ``verify`` recovers through);
``GET /v1/manifests/{manifestId}``
    the stored C2PA manifest store, ``application/c2pa``; with ``returnActiveManifest=true``
    a store of the active manifest and the manifests it references only
    (:func:`tracemark.credentials.jumbf.active_manifest_store`);
``GET /v1/services/supportedAlgorithms``
    the algorithms below.

A manifest identifier is the manifest's C2PA label (``urn:c2pa:...``), unique across
collections. The API key is the service's (``Authorization: Bearer`` or ``X-API-Key``, a
*read* scope standing for the specification's ``fetch:manifests``); the collections searched
are those the key may read, or the one named by the optional ``collection`` query parameter
(403 when the key may not read it, 404 when it does not exist). ``supportedAlgorithms``
needs no key (the specification gives it no security requirement).

Every client mistake in a query is answered 400, as the specification lists (not the 422 of
the service's other endpoints); an unknown value is an empty ``matches`` list, not an error.

tracemark's algorithms, as entries of the C2PA soft-binding algorithm list, are in
``docs/softbinding/<alg>.json``; their values:

* ``org.tracemark.watermark.lattice.1``: base64 of the 8-byte big-endian watermark payload
  (``tag << 40 | manifest id``, :mod:`tracemark.credentials.store`); it names the newest
  manifest of its lineage (:meth:`~tracemark.credentials.CredentialStore.resolve_mark`),
  ``similarityScore`` 100.
* ``org.tracemark.fingerprint.pdq.1``: base64 of the 32-byte PDQ hash (its hex is the
  ThreatExchange hash string); it names the manifests of the signed images within
  :data:`PDQ_MATCH_DISTANCE` bits, ``similarityScore`` ``round(100 * (256 - d) / 256)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from tracemark.credentials import manifest as mf
from tracemark.service.app import ApiError, Key, allow, upload_weight
from tracemark.service.jobs import Job
from tracemark.service.keys import ApiKey

if TYPE_CHECKING:
    from tracemark.credentials import CredentialStore, ManifestRecord

__all__ = [
    "ALGORITHMS",
    "MANIFEST_MEDIA_TYPE",
    "PDQ_MATCH_DISTANCE",
    "SoftBindingAlgorithm",
    "SoftBindingQueryResult",
    "softbinding_router",
]

MANIFEST_MEDIA_TYPE = "application/c2pa"
"""The media type of a C2PA manifest store (the specification's ``/manifests`` response)."""
DEFAULT_MAX_RESULTS = 10
"""The specification's default ``maxResults``."""
MAX_RESULTS = 100
"""The largest ``maxResults`` this service answers (the specification sets no maximum)."""
PDQ_MATCH_DISTANCE = 31
"""PDQ hashes at most this many bits apart (of 256) name the same image: the ThreatExchange
PDQ documentation's match threshold (:class:`tracemark.fingerprint.pdq.PDQFingerprinter`)."""
LABEL_RE = re.compile(r"^urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[!-$&-~]{1,220}$")
"""A manifest identifier: a URN (C2PA manifest labels are ``urn:c2pa:<uuid>...`` or, before
C2PA 2.0, ``urn:uuid:<uuid>``), of printable ASCII but ``%`` (a percent-escape in a path
would decode to something else), at most 255 characters like the store's
label column."""

Found = tuple["ManifestRecord", int]
"""A stored manifest and its ``similarityScore`` (0..100)."""


@dataclass(frozen=True)
class SoftBindingAlgorithm:
    """One soft-binding algorithm the API resolves: its ``alg`` name, its ``type`` in the
    algorithm list (``watermark`` or ``fingerprint``), the length in bytes of its decoded
    value, and ``lookup(store, value, max_results)``: the store's manifests the value names,
    best first."""

    alg: str
    type: str
    value_bytes: int
    lookup: Callable[[CredentialStore, bytes, int], list[Found]]
    route: str
    """The :func:`tracemark.credentials.locate` route that reads this binding from pixels."""

    def decode(self, value: str) -> bytes:
        """The bytes of a base64 value (standard or URL-safe alphabet, padding optional), or
        400 when it is not base64 of :attr:`value_bytes` bytes."""
        text = value.strip()
        try:
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/")
                                   + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "InvalidBindingValue",
                           f"value must be base64 (RFC 4648) for {self.alg}") from None
        if len(raw) != self.value_bytes:
            raise ApiError(400, "InvalidBindingValue",
                           f"a {self.alg} value is {self.value_bytes} bytes (base64); "
                           f"got {len(raw)}")
        return raw


def _newest(store: CredentialStore, rec: ManifestRecord) -> ManifestRecord:
    """The newest manifest of ``rec``'s lineage (an image signed again keeps its mark)."""
    return store.resolve_mark(store.mark_of(rec.id)) or rec


def _by_watermark(store: CredentialStore, value: bytes, _max_results: int) -> list[Found]:
    manifest_id = store.id_from_payload(int.from_bytes(value, "big"))
    rec = None if manifest_id is None else store.resolve_mark(manifest_id)
    return [] if rec is None else [(rec, 100)]


def _by_pdq(store: CredentialStore, value: bytes, max_results: int) -> list[Found]:
    out: list[Found] = []
    for ref_id, distance in store.nearest_pdq(value, k=max_results,
                                              max_distance=PDQ_MATCH_DISTANCE):
        rec = store.by_ref(ref_id)
        if rec is not None:  # an image registered without a manifest names none
            out.append((_newest(store, rec), round(100 * (256 - distance) / 256)))
    return out


ALGORITHMS: dict[str, SoftBindingAlgorithm] = {
    a.alg: a for a in (
        SoftBindingAlgorithm(mf.SOFT_BINDING_WATERMARK, "watermark", 8, _by_watermark,
                             "watermark"),
        SoftBindingAlgorithm(mf.SOFT_BINDING_FINGERPRINT, "fingerprint", 32, _by_pdq,
                             "fingerprint"),
    )
}
"""The algorithms resolved, by name: the names ``sign`` writes in its soft-binding
assertions (:mod:`tracemark.credentials.manifest`)."""


class AlgorithmName(BaseModel):
    alg: str = Field(description="A soft-binding algorithm name (C2PA soft-binding algorithm "
                                 "list).")


class SoftBindingAlgList(BaseModel):
    """``c2pa.softBindingAlgList``."""

    watermarks: list[AlgorithmName]
    fingerprints: list[AlgorithmName]


class SoftBindingMatch(BaseModel):
    manifestId: str = Field(description="The matched manifest's identifier (its C2PA label).")
    endpoint: str | None = Field(
        default=None, description="Absent: the manifest is served by this API's /manifests.")
    similarityScore: int = Field(ge=0, le=100, description="Strength of the match, 0..100.")


class SoftBindingQueryResult(BaseModel):
    """``c2pa.softBindingQueryResult``."""

    matches: list[SoftBindingMatch]


def _algorithm(alg: str | None) -> SoftBindingAlgorithm:
    known = ", ".join(sorted(ALGORITHMS))
    if not alg:
        raise ApiError(400, "MissingAlgorithm", f"alg is required; this service resolves {known}")
    algo = ALGORITHMS.get(alg)
    if algo is None:
        raise ApiError(400, "UnknownAlgorithm",
                       f"unknown soft-binding algorithm {alg[:100]!r}; this service resolves "
                       f"{known} (GET /v1/services/supportedAlgorithms)")
    return algo


def _max_results(request: Request) -> int:
    raw = request.query_params.get("maxResults")
    if raw is None:
        return DEFAULT_MAX_RESULTS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_RESULTS:
        raise ApiError(400, "InvalidMaxResults",
                       f"maxResults must be an integer in 1..{MAX_RESULTS}; got {raw[:40]!r}")
    return n


def _query(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name)
    if required and not value:
        raise ApiError(400, "MissingParameter", f"the query parameter {name!r} is required")
    return value


def _result(found: list[Found], max_results: int) -> dict[str, Any]:
    """The best ``max_results`` distinct manifests, as a ``c2pa.softBindingQueryResult``."""
    best: dict[str, int] = {}
    for rec, score in found:
        if rec.label is not None:
            best[rec.label] = max(score, best.get(rec.label, -1))
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:max_results]
    return {"matches": [{"manifestId": label, "similarityScore": int(score)}
                        for label, score in ranked]}


_INT = {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "default": DEFAULT_MAX_RESULTS}
_STR = {"type": "string"}
_ALG = {"type": "string", "enum": sorted(ALGORITHMS)}
_B64 = "[A-Za-z0-9+/_-]"
_VALUE = {"type": "string", "pattern": "^(" + "|".join(
    sorted({f"{_B64}{{{-(-a.value_bytes * 4 // 3)}}}" for a in ALGORITHMS.values()}))
    + ")=?$"}
"""A soft binding's value: base64 of the length of one of the algorithms' values (the length
of ``alg``'s own is checked by the route, 400)."""


def _param(name: str, schema: dict[str, Any], description: str, *,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


_ALG_DOC = ("A soft-binding algorithm name (C2PA soft-binding algorithm list; this service: "
            + ", ".join(sorted(ALGORITHMS)) + ").")
_MAX_DOC = f"The most manifest identifiers to return (1..{MAX_RESULTS})."
_COLLECTION_DOC = ("tracemark: search only this collection (default: every collection the "
                   "API key may read).")
_ERRORS = {400: {"description": "Invalid query value ({\"error\": {\"type\", \"message\"}})"},
           401: {"description": "Missing or unknown API key"},
           403: {"description": "The key may not read the named collection"},
           404: {"description": "No such collection"}}


def softbinding_router(state: Any) -> APIRouter:
    """The Soft Binding Resolution API's routes (module docstring) over the service state
    ``state`` (:class:`tracemark.service.app._State`: its collections, workers, settings)."""
    settings = state.settings
    router = APIRouter(tags=["soft binding resolution"])

    def collections(key: ApiKey, request: Request) -> tuple[list[str], bool]:
        """The collections to search, and whether the client named one."""
        named = request.query_params.get("collection")
        if named is not None:
            allow(key, named, write=False)
            return [named], True
        return [n for n in state.names() if key.allows(n, write=False)], False

    def each_store(names: list[str], named: bool,
                   fn: Callable[[CredentialStore], list[Found]]) -> list[Found]:
        """``fn`` over each collection's store; a collection deleted meanwhile is skipped
        unless the client named it (then 404)."""
        out: list[Found] = []
        for name in names:
            try:
                with state.reading(name) as store:
                    out.extend(fn(store))
            except ApiError as exc:
                if named or exc.status not in (404, 409):
                    raise
        return out

    async def by_binding(request: Request, key: ApiKey, alg: str | None,
                         value: str | None) -> dict[str, Any]:
        algo = _algorithm(alg)
        if not value:
            raise ApiError(400, "MissingParameter", "value (base64) is required")
        raw = algo.decode(value)
        n = _max_results(request)
        names, named = collections(key, request)

        def work(_job: Job) -> dict[str, Any]:
            return _result(each_store(names, named, lambda s: algo.lookup(s, raw, n)), n)
        return await state.run(work)

    @router.get("/matches/byBinding", response_model=SoftBindingQueryResult,
                response_model_exclude_none=True, operation_id="queryByBinding",
                summary="Manifest identifiers a soft binding names.", responses=_ERRORS,
                openapi_extra={"parameters": [
                    _param("alg", _ALG, _ALG_DOC, required=True),
                    _param("value", _VALUE, "The soft binding's value, base64 (the algorithm's "
                           "entry in docs/softbinding says what it encodes).", required=True),
                    _param("maxResults", _INT, _MAX_DOC),
                    _param("collection", _STR, _COLLECTION_DOC)]})
    async def query_by_binding(request: Request, key: Key) -> dict[str, Any]:
        """Given one soft binding, the identifiers of zero or more stored manifests it
        names, best first."""
        return await by_binding(request, key, _query(request, "alg"), _query(request, "value"))

    @router.post("/matches/byBinding", response_model=SoftBindingQueryResult,
                 response_model_exclude_none=True, operation_id="queryByLargeBinding",
                 summary="Manifest identifiers a soft binding names (value in the body).",
                 responses=_ERRORS,
                 openapi_extra={
                     "parameters": [_param("maxResults", _INT, _MAX_DOC),
                                    _param("collection", _STR, _COLLECTION_DOC)],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"type": "object", "required": ["alg", "value"],
                                    "properties": {"alg": _ALG, "value": _VALUE}}}}}})
    async def query_by_large_binding(request: Request, key: Key) -> dict[str, Any]:
        """As ``GET``, with ``{"alg", "value"}`` (a ``c2pa.softBindingQuery``) as the JSON
        body."""
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError(400, "InvalidQuery", "the body must be a JSON object "
                           '{"alg": ..., "value": ...}') from None
        if not isinstance(body, dict) or not all(
                isinstance(body.get(f), str) for f in ("alg", "value")):
            raise ApiError(400, "InvalidQuery", 'the body must be {"alg": string, "value": '
                           "string}")
        return await by_binding(request, key, body["alg"], body["value"])

    @router.post("/matches/byContent", response_model=SoftBindingQueryResult,
                 response_model_exclude_none=True, operation_id="uploadFile",
                 summary="Manifest identifiers an uploaded asset names.",
                 responses={**_ERRORS, 413: {"description": "Upload too large"},
                            415: {"description": "Not an image this service reads"},
                            422: {"description": "Image too small to search"}},
                 openapi_extra={
                     "parameters": [
                         _param("alg", _ALG, "Resolve through this algorithm only (default: "
                                "the watermark, then the fingerprint)."),
                         _param("maxResults", _INT, _MAX_DOC),
                         _param("hintAlg", _ALG, "An additional soft binding's algorithm."),
                         _param("hintValue", _VALUE, "Its value (base64): its matches are "
                                "merged with the asset's."),
                         _param("collection", _STR, _COLLECTION_DOC)],
                     "requestBody": {"required": True, "content": {
                         "image/*": {"schema": {"type": "string", "format": "binary"}},
                         "application/octet-stream": {"schema": {"type": "string",
                                                                 "format": "binary"}}}}})
    async def query_by_content(request: Request, key: Key) -> dict[str, Any]:
        """The manifests an image (the raw request body) names: in each collection, the
        manifest embedded in the upload when c2pa validates it (trusted or valid: its hard
        binding holds) and this service stores it (``similarityScore`` 100; not with
        ``alg``, which asks for one soft-binding algorithm), then the watermark route, then
        the fingerprint route (:func:`tracemark.credentials.locate`, as ``verify`` recovers
        a stripped manifest); ``similarityScore``: 100 x the route's confidence."""
        algo = _algorithm(request.query_params["alg"]) if "alg" in request.query_params else None
        routes = ("watermark", "fingerprint") if algo is None else (algo.route,)
        hint_alg, hint_value = _query(request, "hintAlg"), _query(request, "hintValue")
        if (hint_alg is None) != (hint_value is None):
            raise ApiError(400, "InvalidHint", "hintAlg and hintValue go together")
        hint = None
        if hint_alg is not None and hint_value is not None:
            hint_algo = _algorithm(hint_alg)
            hint = (hint_algo, hint_algo.decode(hint_value))
        n = _max_results(request)
        names, named = collections(key, request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise ApiError(415, "UnsupportedMediaType",
                           f"send the image as the request body (image/*), not {kind!r}")
        data = await request.body()
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "PayloadTooLarge",
                           f"uploads are limited to {settings.max_upload_bytes} bytes")
        if not data:
            raise ApiError(415, "EmptyImageError", "the upload is empty")

        def work(_job: Job) -> dict[str, Any]:
            from tracemark.credentials import locate
            from tracemark.imageio import load_image

            rgb = load_image(data, max_pixels=settings.max_pixels, name="upload",
                             formats=settings.formats)
            embedded = None if algo is not None else _embedded_label(data, state.trust_pem)

            def one(store: CredentialStore) -> list[Found]:
                out: list[Found] = []
                rec = None if embedded is None else store.by_label(embedded)
                if rec is not None and rec.manifest_store is not None:
                    out.append((rec, 100))  # the upload's own, valid manifest: bound to it
                found = locate(store, rgb, routes=routes)
                if found is not None:
                    out.append((found.record, max(0, min(100, round(100 * found.confidence)))))
                if hint is not None:
                    out.extend(hint[0].lookup(store, hint[1], n))
                return out
            return _result(each_store(names, named, one), n)
        return await state.run(work, weight=_weight(data, settings))

    @router.get("/manifests/{manifestId}", response_class=Response,
                operation_id="getManifestById",
                summary="A stored C2PA manifest store, application/c2pa.",
                responses={200: {"content": {MANIFEST_MEDIA_TYPE: {
                    "schema": {"type": "string", "format": "binary"}}},
                                 "description": "The manifest store (JUMBF) as signed"},
                           **_ERRORS,
                           404: {"description": "No such manifest (or collection)"}},
                openapi_extra={"parameters": [
                    _param("returnActiveManifest", {"type": "boolean", "default": False},
                           "Only the active manifest: a manifest store holding it and the "
                           "manifests it references (its ingredients'), none of the "
                           "store's others."),
                    _param("collection", _STR, _COLLECTION_DOC)]})
    async def get_manifest_by_id(
            manifestId: Annotated[str, PathParam(  # noqa: N803 -- the specification's name
                description="A manifest identifier: its C2PA label (a URN).",
                json_schema_extra={"maxLength": 255, "pattern": LABEL_RE.pattern})],
            request: Request, key: Key) -> Response:
        """The C2PA manifest store stored under this identifier (the manifest's label), as
        signed: the bytes a C2PA reader takes as a sidecar of the asset."""
        if len(manifestId) > 255 or not LABEL_RE.match(manifestId):
            raise ApiError(400, "InvalidManifestId",
                           "a manifest identifier is its C2PA label, a URN (urn:c2pa:...)")
        active_only = request.query_params.get("returnActiveManifest", "false").lower()
        if active_only not in ("true", "false", "1", "0"):
            raise ApiError(400, "InvalidQuery", "returnActiveManifest must be true or false")
        names, named = collections(key, request)

        def work(_job: Job) -> ManifestRecord:
            def one(store: CredentialStore) -> list[Found]:
                rec = store.by_label(manifestId)
                return [] if rec is None else [(rec, 100)]
            found = each_store(names, named, one)
            if not found or found[0][0].manifest_store is None:
                raise ApiError(404, "UnknownManifest", f"no manifest {manifestId!r}")
            return found[0][0]
        rec = await state.run(work)
        body = rec.manifest_store
        if active_only in ("true", "1"):
            from tracemark.credentials.jumbf import active_manifest_store
            from tracemark.errors import ManifestStoreError

            try:
                body = active_manifest_store(body)
            except ManifestStoreError as exc:  # stored by this service: not the client's
                raise ApiError(500, "CorruptManifestStore", exc.message) from None
        return Response(body, media_type=MANIFEST_MEDIA_TYPE)

    @router.get("/services/supportedAlgorithms", response_model=SoftBindingAlgList,
                operation_id="getSupportedBindings",
                summary="The soft-binding algorithms this service resolves.")
    def supported_algorithms() -> dict[str, Any]:
        """The algorithm names queries may use, by type (no API key needed)."""
        return {"watermarks": [{"alg": a.alg} for a in ALGORITHMS.values()
                               if a.type == "watermark"],
                "fingerprints": [{"alg": a.alg} for a in ALGORITHMS.values()
                                 if a.type == "fingerprint"]}

    return router


def _embedded_label(data: bytes, trust_pem: str | None) -> str | None:
    """The label of the manifest embedded in ``data`` when c2pa-python validates it
    (:func:`tracemark.credentials.manifest.read_manifest`: ``trusted`` or ``valid``, so
    its hard binding matches these bytes); None when there is none, it is invalid, or the
    format is not one c2pa reads."""
    from tracemark.imageio import sniff_media_type

    media = sniff_media_type(data[:64])
    if media is None:
        return None
    reading = mf.read_manifest(data, media, trust_pem=trust_pem)
    return reading.label if reading.state in ("trusted", "valid") else None


def _weight(data: bytes, settings: Any) -> int:
    """An upload's share of the memory budget, as the service weighs every image job."""
    return upload_weight(data, settings)
