"""The HTTP service: FastAPI app over collections (credential stores) and API keys.

A *collection* is a :class:`~tracemark.credentials.CredentialStore` under
``<data>/collections/<name>``: its copy-detection index (register, remove, search), its
watermark key (embed, detect; the key never leaves the server) and its manifest store
(sign, verify). Every endpoint but ``/v1/health`` and ``/metrics`` needs an API key
(``Authorization: Bearer tm_...`` or ``X-API-Key``) scoped to the collection and to read or
write. Blocking work runs in worker threads, at most ``max_concurrency`` at once, each
bounded by ``request_timeout`` (:mod:`tracemark.service.jobs`: time queued for a worker
counts; a 503 always means that nothing was committed, a 2xx that it was); a request body
must arrive within ``body_timeout`` (else 408); every client mistake is a 4xx JSON error
``{"error": {"type", "message"}}``.

Collections are opened once and kept open; each open collection has a generation number
and a writer lock. A write holds the lock from its first change to its commit, and a delete
takes the same lock, so a delete waits for the writes in flight and a write never touches a
collection deleted under it: it is answered 404 when the name is gone, 409 when it was
created again meanwhile (a different collection).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import sqlalchemy as sa
from fastapi import Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tracemark._db import schema_name
from tracemark.errors import (
    AlreadyMarkedError,
    CertificateError,
    ClosedError,
    ConceptExistsError,
    ConfigError,
    GuardInputError,
    GuardModelError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    IndexLockedError,
    ManifestNotFoundError,
    MissingExtraError,
    PayloadError,
    ReferenceNotFoundError,
    SigningError,
    TracemarkError,
    UnknownConceptError,
    UnsupportedFormatError,
    VectorStoreUnavailableError,
    WatermarkEmbedError,
)
from tracemark.imageio import media_type
from tracemark.service import models as m
from tracemark.service.jobs import DeadlineExceeded, Job, Workers
from tracemark.service.keys import ApiKey, KeyStore, service_engine
from tracemark.service.page import router as page_router
from tracemark.service.registry import CollectionRecord, CollectionRegistry, CollectionTaken

if TYPE_CHECKING:
    from tracemark.credentials import CredentialStore

__all__ = ["ServiceSettings", "create_app", "ApiError"]

T = TypeVar("T")
BYTES_PER_PIXEL = 32
"""Memory an image job is expected to take per pixel of its upload, bytes: the peak of the
heaviest job measured at 40 MP (sign or embed of a WebP: ~33 B/px over the idle server;
PNG and JPEG ~11-16 B/px, `benchmarks/bench_bombs.py`), rounded down."""
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
"""Collection names: 1-48 characters, so that their database schemas stay valid names."""
API_PREFIX = "/v1"
REPLICA_MARKER = "service.json"
"""In a collection's local directory (shared registry): the registry uid it was made for."""


@dataclass
class ServiceSettings:
    data_dir: Path
    database_url: str | None = None
    """Metadata database (API keys, manifests); default SQLite files in ``data_dir``."""
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: Any = "default"
    """Image formats uploads may be in (:func:`tracemark.imageio.load_image`'s ``formats``:
    ``"default"``, ``"all"`` or a list of names); others are answered 415."""
    request_timeout: float = 30.0
    """Seconds from the hand-over of a request's work to its answer, time queued for a
    worker included (:mod:`tracemark.service.jobs`); 503 beyond it, nothing committed."""
    body_timeout: float = 60.0
    """Seconds within which a request's whole body must arrive; a client that stops
    sending (or trickles) is answered 408 and the connection is closed."""
    max_concurrency: int = 4
    memory_budget_mb: float | None = 2048.0
    """Memory the running image jobs may take together, MiB (None: no budget). Each upload
    weighs :data:`BYTES_PER_PIXEL` times its pixels (read from the header); jobs wait for
    room like for a worker, so ``max_concurrency`` large images cannot multiply the peak; a
    job heavier than the budget runs alone."""
    vector_flush_seconds: float = 30.0
    """Adds are acknowledged after the database commit; FAISS files are rewritten at most
    this often (0: after every write)."""
    cert: Path | None = None
    """Signing certificate chain (PEM, signer first); signing is off without it."""
    key: Path | None = None
    """The signer's private key (PEM); or ``signer`` signs with a key the service never sees."""
    signer: Callable[[bytes], bytes] | None = field(default=None, compare=False)
    """An external signer (:attr:`tracemark.credentials.SignOptions.signer`: a KMS/HSM
    callable, or :class:`~tracemark.credentials.signers.CommandSigner`) used with ``cert``
    instead of ``key``."""
    signer_alg: str | None = None
    """``signer``'s algorithm (``es256``, ``ps256``, ``ed25519``...); default: from
    ``cert``'s key (:func:`~tracemark.credentials.certs.load_signing_certificate`)."""
    tsa_url: str | None = None
    """RFC 3161 timestamp authority countersigning every signing (an unreachable one: 502
    ``SigningFailed``, nothing stored)."""
    trust: Path | None = None
    """Trust anchors (PEM CA certificates) of ``verify``."""
    allowed_list: Path | None = None
    """c2pa's allowed list of ``verify`` (:func:`~tracemark.credentials.certs.load_allowed_list`)."""
    trust_config: Path | None = None
    """c2pa's EKU trust configuration of ``verify``
    (:func:`~tracemark.credentials.certs.load_trust_config`)."""
    vectors: str | None = None
    """Where collections keep their vector search structures: None for FAISS files in the
    data directory, or a vector-store URL such as ``milvus://host:19530``
    (:func:`tracemark.index.vectors.parse_vector_url`). With ``database_url`` on PostgreSQL
    and Milvus here, any number of replicas serve the same collections (docs/scaling.md)."""
    guard_matchers: list[str] | None = None
    """The prompt screen's matchers (``["lexical"]``, ``["lexical", "semantic"]``); None:
    every installed one (:func:`tracemark.guard.screen.default_matchers`). An unknown name
    fails :func:`create_app` (:class:`~tracemark.errors.ConfigError`)."""
    guard_warmup: bool = False
    """Embed the prompt screen's benign background once at start, in a background thread
    (about 20 s of one core with the semantic matcher), so that the first calibration a
    prompt request needs takes about a second instead of outlasting ``request_timeout``
    (``tracemark serve`` turns it on)."""


class ApiError(Exception):
    """An error with an HTTP status, rendered as ``{"error": {"type", "message"}}`` (with
    ``headers``, e.g. ``Retry-After``)."""

    def __init__(self, status: int, type_: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.headers = headers


class _BodyLimit:
    """ASGI middleware: a request body (chunked or not) larger than ``limit`` bytes stops
    being read at the limit and is answered 413 -- nothing past it is buffered or spooled; a
    body not complete ``timeout`` seconds after the request arrived (a client that stopped
    sending, or trickles) is answered 408 with ``Connection: close``."""

    def __init__(self, app: Any, limit: int, timeout: float) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        answered = False
        body_done = False
        deadline = time.monotonic() + self.timeout

        async def limited() -> Any:
            nonlocal seen, answered, body_done
            if answered:
                return {"type": "http.disconnect"}
            if body_done:  # waiting for a disconnect: not the body's time
                return await receive()
            message = None
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                message = await receive()
            if message is None:  # the body did not arrive in time
                answered = True
                await _error(408, "RequestTimeout",
                             f"the request body did not arrive within {self.timeout:g} s",
                             headers={"Connection": "close"})(scope, receive, send)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.limit:  # answer now; the app sees the client leave
                    answered = True
                    await _error(413, "PayloadTooLarge",
                                 f"request bodies are limited to {self.limit} bytes")(
                        scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not answered:
                await send(message)

        await self.app(scope, limited, guarded)


def _status_for(exc: TracemarkError) -> int:
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, ImageTooSmallError):
        return 422  # a valid image, below the size the operation needs: not a media-type problem
    if isinstance(exc, ImageError | UnsupportedFormatError):
        return 415
    if isinstance(exc, ManifestNotFoundError | ReferenceNotFoundError | UnknownConceptError):
        return 404
    if isinstance(exc, ConceptExistsError):
        return 409
    if isinstance(exc, GuardInputError):
        return 422
    if isinstance(exc, IndexLockedError | ClosedError):
        return 409
    if isinstance(exc, AlreadyMarkedError):
        return 409  # the image's state conflicts: it carries another payload of this key
    if isinstance(exc, MissingExtraError | GuardModelError):
        return 503  # the guard's sentence model is missing or damaged on the server
    if isinstance(exc, VectorStoreUnavailableError):
        return 503  # the Milvus server is down or unreachable: retry later, not the client's
    if isinstance(exc, SigningError):
        return 502  # the server's external signer or timestamp authority failed
    if isinstance(exc, CertificateError):
        return 503  # the server's signing certificate (e.g. expired since start): not the client's
    if isinstance(exc, ConfigError | PayloadError | WatermarkEmbedError):
        return 422  # WatermarkEmbedError: this image cannot carry a mark that reads back
    return 400


def _error(status: int, type_: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status,
                        headers=headers)


def allow(key: ApiKey, collection: str | None, *, write: bool) -> None:
    """403 ``Forbidden`` unless ``key`` may read (or ``write``) ``collection`` (None: an
    endpoint of no collection); every route's access check."""
    if not key.allows(collection, write=write):
        what = "write" if write else "read"
        where = f"collection {collection!r}" if collection else "this endpoint"
        raise ApiError(403, "Forbidden", f"this API key may not {what} {where}")


async def read_limited(image: UploadFile, limit: int) -> bytes:
    """An upload's bytes, read at most to ``limit`` + 1: 413 ``PayloadTooLarge`` past
    ``limit``, 415 ``EmptyImageError`` when empty."""
    data = await image.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "PayloadTooLarge", f"uploads are limited to {limit} bytes")
    if not data:
        raise ApiError(415, "EmptyImageError", "the upload is empty")
    return data


def upload_weight(data: bytes, settings: ServiceSettings) -> int:
    """An upload's share of the memory budget: its pixels (from the header) times
    :data:`BYTES_PER_PIXEL`; 0 when the header does not read (the work reports the
    error)."""
    from tracemark.imageio import open_image_info

    try:
        info = open_image_info(data, max_pixels=settings.max_pixels, name="upload",
                               formats=settings.formats)
    except TracemarkError:
        return 0
    return info.width * info.height * BYTES_PER_PIXEL


class ErrorDetail(BaseModel):
    type: str = Field(description="The error's kind, e.g. UnknownCollection, Busy.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorBody(BaseModel):
    """Every error answer's body: ``{"error": {"type": ..., "message": ...}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what} for status, what in [
        (400, "A malformed request (a body that is not the JSON or form it should be)."),
        (401, "No API key, or an unknown or revoked one."),
        (403, "The key may not read (or write) this collection."),
        (404, "No such collection, image, manifest or concept."),
        (405, "Method not allowed; the Allow header lists the path's methods."),
        (408, "The request's head or body did not arrive in time."),
        (409, "Conflict: the collection exists, was replaced, or signing is not configured; "
              "a concept of that id exists."),
        (413, "The upload is larger than the service accepts (or has too many pixels)."),
        (415, "The upload is not an image in an accepted format."),
        (422, "Invalid parameters, form fields or image content."),
        (502, "The service's external signer or timestamp authority failed: nothing was "
              "stored."),
        (503, "Busy (Retry-After) or past the request's deadline: nothing was committed; "
              "or a model the server needs is missing or damaged (MissingExtraError, "
              "GuardModelError)."),
    ]}
"""The error statuses every operation may answer, documented with the real body (the
service answers FastAPI's own validation errors with it too)."""
ERROR_RESPONSES[503]["headers"] = {"Retry-After": {
    "description": "When the service was busy: seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1}}}


def _op(path: str, method: str) -> str:
    """An OpenAPI ``operationRef`` to this app's operation (a JSON pointer)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


_COLLECTION = API_PREFIX + "/collections/{name}"
LINKS: dict[str, dict[str, Any]] = {
    "create": {
        "GetCollection": {"operationRef": _op(_COLLECTION, "get"),
                          "parameters": {"name": "$response.body#/name"},
                          "description": "The new collection's statistics."},
        "DeleteCollection": {"operationRef": _op(_COLLECTION, "delete"),
                             "parameters": {"name": "$response.body#/name"},
                             "description": "Delete the new collection."}},
    "register": {
        "RemoveImage": {"operationRef": _op(_COLLECTION + "/images/{ref_id}", "delete"),
                        "parameters": {"name": "$request.path.name",
                                       "ref_id": "$response.body#/ref_id"},
                        "description": "Remove the registered image."}},
    "sign": {
        "GetManifest": {"operationRef": _op(_COLLECTION + "/manifests/{manifest_id}", "get"),
                        "parameters": {"name": "$request.path.name",
                                       "manifest_id": "$response.header.X-Manifest-Id"},
                        "description": "The stored manifest of the signed image."},
        "GetManifestStore": {"operationRef": _op(API_PREFIX + "/manifests/{manifestId}", "get"),
                             "parameters": {"manifestId": "$response.header.X-Manifest-Label"},
                             "description": "The signed manifest store (Soft Binding "
                                            "Resolution API), by its label."}},
}
"""OpenAPI links between operations (clients and schemathesis' stateful phase follow them):
create -> statistics / delete a collection, register -> remove an image, sign -> the stored
manifest (by id) and its manifest store (by label)."""


_BINARY = {"schema": {"type": "string", "format": "binary"}}
"""A binary response body (an image, a manifest store)."""


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


class CollectionIn(BaseModel):
    name: str = Field(pattern=NAME_RE.pattern, description="Lower-case letters, digits, - and _.")


class _Collection:
    """One open collection: its store, its generation (a new number each time the name is
    opened or created), its registry uid (replicas), its writer lock, and whether it was
    deleted."""

    def __init__(self, name: str, store: CredentialStore, generation: int,
                 uid: str | None = None) -> None:
        self.name, self.store, self.generation, self.uid = name, store, generation, uid
        self.lock = threading.Lock()
        self.deleted = False
        self.flushed = 0.0
        """``time.monotonic()`` of the last commit that wrote the FAISS files."""


class _State:
    """What the app holds: settings, key store, open collections, workers, metrics."""

    def __init__(self, settings: ServiceSettings) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        from tracemark.imageio import resolve_formats
        from tracemark.index.vectors import parse_vector_url

        resolve_formats(settings.formats)  # a bad setting fails here, not on the first upload
        parse_vector_url(settings.vectors)  # likewise
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "collections").mkdir(exist_ok=True)
        self.engine = service_engine(settings.data_dir, settings.database_url)
        self.keys = KeyStore(self.engine)
        self.registry: CollectionRegistry | None = (
            CollectionRegistry(self.engine) if settings.database_url is not None else None)
        """The shared list of collections (replicas), when the metadata is in a database
        server; None: the data directory's folders are the list."""
        if self.registry is not None:
            self._adopt_local()
        self._open: dict[str, _Collection] = {}
        self._generations = itertools.count(1)
        self._registry_lock = threading.Lock()
        self.creds: Any = None
        if settings.cert is not None and settings.signer is not None:
            from tracemark.credentials.certs import load_signing_certificate

            self.creds = load_signing_certificate(settings.cert, alg=settings.signer_alg)
        elif settings.cert is not None and settings.key is not None:
            from tracemark.credentials import load_signing_credentials

            self.creds = load_signing_credentials(settings.cert, settings.key)
        from tracemark.credentials.certs import (
            load_allowed_list,
            load_trust_anchors,
            load_trust_config,
        )

        if settings.signer is not None or settings.tsa_url is not None:
            from tracemark.credentials import SignOptions

            SignOptions(signer=settings.signer, tsa_url=settings.tsa_url)  # ConfigError now
        self.trust_pem = load_trust_anchors(settings.trust) if settings.trust else None
        self.allowed_pem = (load_allowed_list(settings.allowed_list)
                            if settings.allowed_list else None)
        self.trust_config = (load_trust_config(settings.trust_config)
                             if settings.trust_config else None)
        self.registry_metrics = CollectorRegistry()
        self.requests = Counter("tracemark_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry_metrics)
        self.latency = Histogram("tracemark_request_seconds", "Request latency",
                                 ["method", "route"], registry=self.registry_metrics,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.in_flight = Gauge("tracemark_work_in_flight", "Blocking jobs running",
                               registry=self.registry_metrics)
        budget = (None if settings.memory_budget_mb is None
                  else int(settings.memory_budget_mb * 1024 * 1024))
        self.workers = Workers(settings.max_concurrency, memory_budget=budget,
                               on_start=self.in_flight.inc,
                               on_end=self.in_flight.dec)

    # --- collections ---------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.settings.data_dir / "collections" / name

    def names(self) -> list[str]:
        if self.registry is not None:
            return self.registry.names()
        root = self.settings.data_dir / "collections"
        return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def get(self, name: str) -> _Collection:
        """The open collection ``name`` (opened now if needed), or 404. With a shared
        registry, a collection another replica deleted (or deleted and created again) is
        closed here and answered 404 (or opened anew)."""
        from tracemark.credentials import CredentialStore

        with self._registry_lock:
            entry = self._open.get(name)
            if self.registry is not None:
                rec = self.registry.lookup(name) if NAME_RE.match(name) else None
                if entry is not None and (rec is None or rec.uid != entry.uid):
                    self._forget(entry)
                    entry = None
                if rec is None:
                    raise ApiError(404, "UnknownCollection", f"no collection {name!r}")
                if entry is None:
                    entry = self._register(name, self._open_replica(rec), uid=rec.uid)
                return entry
            if entry is None:
                if not NAME_RE.match(name) or not self.path(name).is_dir():
                    raise ApiError(404, "UnknownCollection", f"no collection {name!r}")
                entry = self._register(name, CredentialStore.open(self.path(name),
                                                                  **self._store_db(name)))
            return entry

    def _adopt_local(self) -> None:
        """Register the collections of this data directory made before the shared registry
        (their schemas keep their old names: uid ``""``)."""
        assert self.registry is not None
        root = self.settings.data_dir / "collections"
        for p in sorted(root.iterdir()):
            if (p.is_dir() and NAME_RE.match(p.name) and not (p / REPLICA_MARKER).exists()
                    and (p / "secret.key").is_file()):
                with contextlib.suppress(CollectionTaken, OSError):
                    self.registry.adopt(p.name, (p / "secret.key").read_bytes())

    def _open_replica(self, rec: CollectionRecord) -> CredentialStore:
        """Open a registered collection from this replica's data directory, making its
        local directory from the registry when it is missing or belongs to an earlier
        collection of the same name."""
        import shutil

        from tracemark.credentials import CredentialStore

        path = self.path(rec.name)
        marker = path / REPLICA_MARKER
        try:
            mine = json.loads(marker.read_text()).get("uid") == rec.uid
        except (OSError, ValueError, AttributeError):
            mine = rec.uid == "" and path.is_dir()  # adopted from this data directory
        db = self._store_db(rec.name, rec.uid)
        if mine:
            return CredentialStore.open(path, **db)
        if path.exists():
            shutil.rmtree(path)
        store = CredentialStore.attach(path, secret=rec.secret, **db)
        marker.write_text(json.dumps({"uid": rec.uid}) + "\n")
        return store

    def _forget(self, entry: _Collection) -> None:
        """Close a collection another replica deleted (requests still running on it are
        answered 404/409 by :meth:`gone`)."""
        entry.deleted = True
        self._open.pop(entry.name, None)
        with contextlib.suppress(Exception):  # its database may be gone already
            entry.store.close()

    def collection(self, name: str) -> CredentialStore:
        """The store of the open collection ``name``, or 404."""
        return self.get(name).store

    def _register(self, name: str, store: CredentialStore, uid: str | None = None) -> _Collection:
        try:
            store.index  # noqa: B018 -- opened now, at the path checked under the lock
        except BaseException:
            store.close()
            raise
        entry = _Collection(name, store, next(self._generations), uid)
        self._open[name] = entry
        return entry

    def gone(self, entry: _Collection) -> ApiError:
        """The answer for work on a collection that was deleted under it: 404 when the name
        is free, 409 when a new collection was created under the same name since."""
        with self._registry_lock:
            now = self._open.get(entry.name)
        if self.registry is not None:
            free = self.registry.lookup(entry.name) is None
        else:
            free = now is None and not self.path(entry.name).is_dir()
        if free:
            return ApiError(404, "UnknownCollection", f"no collection {entry.name!r} (it was "
                            "deleted while the request ran)")
        return ApiError(409, "CollectionReplaced",
                        f"collection {entry.name!r} was deleted and created again while the "
                        "request ran; nothing was written to the new one")

    @contextlib.contextmanager
    def reading(self, name: str) -> Iterator[CredentialStore]:
        """The store of ``name`` for reading; a delete that closes it meanwhile gives 404
        or 409 (:meth:`gone`), never an error of the closed store."""
        entry = self.get(name)
        try:
            yield entry.store
        except ClosedError:
            if entry.deleted:
                raise self.gone(entry) from None
            raise

    @contextlib.contextmanager
    def writing(self, name: str, job: Job) -> Iterator[_Collection]:
        """The collection ``name`` under its writer lock (waited for until the job's
        deadline). Writes in the block that are not committed when it ends, by an
        exception included, are rolled back. A collection deleted while waiting: 404/409."""
        entry = self.get(name)
        if not entry.lock.acquire(timeout=job.remaining()):
            raise DeadlineExceeded(f"the collection {name!r} stayed busy for the request's "
                                   f"{job.timeout:g} s; nothing was committed")
        try:
            if entry.deleted:
                raise self.gone(entry)
            try:
                yield entry
            except ClosedError:
                if entry.deleted:
                    raise self.gone(entry) from None
                raise
            finally:
                if not entry.store.closed:
                    entry.store.rollback()  # no-op after a commit
        finally:
            entry.lock.release()

    def commit(self, entry: _Collection, job: Job) -> None:
        """Make a collection's write durable before it is acknowledged: the job's commit
        point (past its deadline: :class:`DeadlineExceeded`, the caller rolls back), then
        the database commit. The FAISS files follow at most every ``vector_flush_seconds``
        (and on shutdown); a crash in between is repaired from the database when the index
        is opened. (Milvus is written at each add, before the commit.)"""
        job.commit_point()
        now = time.monotonic()
        write = now - entry.flushed >= self.settings.vector_flush_seconds
        entry.store.commit(write_vectors=write)
        if write:
            entry.flushed = now

    def create(self, name: str, job: Job | None = None) -> CredentialStore:
        """Create collection ``name`` (409 when it exists). The creation is the commit
        point: a job past its deadline creates nothing."""
        import shutil

        from tracemark.credentials import CredentialStore

        with self._registry_lock:
            if self.registry is None:
                if self.path(name).exists():
                    raise ApiError(409, "CollectionExists", f"collection {name!r} exists")
                if job is not None:
                    job.commit_point()
                store = CredentialStore.create(self.path(name), **self._store_db(name),
                                               **self._vectors())
                return self._register(name, store).store
            if job is not None:
                job.commit_point()
            try:
                rec = self.registry.claim(name)
            except CollectionTaken:
                raise ApiError(409, "CollectionExists", f"collection {name!r} exists") from None
            try:
                if self.path(name).exists():  # a local copy of an earlier collection
                    shutil.rmtree(self.path(name))
                store = CredentialStore.create(self.path(name), secret=rec.secret,
                                               **self._store_db(name, rec.uid),
                                               **self._vectors())
                (self.path(name) / REPLICA_MARKER).write_text(
                    json.dumps({"uid": rec.uid}) + "\n")
            except BaseException:
                self.registry.release(name, rec.uid)
                raise
            return self._register(name, store, uid=rec.uid).store

    def delete(self, name: str, job: Job) -> None:
        """Close and delete a collection: its directory, its schemas in a shared database,
        its Milvus collections. Writes in flight finish first (the delete takes the writer
        lock); a read still running is answered 404/409. The delete is the job's commit
        point. With a shared registry the name is released first, so every replica stops
        serving the collection at its next request."""
        import shutil
        import uuid

        from tracemark.credentials import CredentialStore
        from tracemark.index import Index

        with self.writing(name, job) as entry, self._registry_lock:
            if self._open.get(name) is not entry:  # deleted (and created again) meanwhile
                raise ApiError(404, "UnknownCollection", f"no collection {name!r}")
            job.commit_point()
            if self.registry is not None and entry.uid is not None:
                self.registry.release(name, entry.uid)
            entry.deleted = True
            entry.store.close()
            del self._open[name]
            where = self._store_db(name, entry.uid)
            if self.settings.vectors is not None:
                with contextlib.suppress(TracemarkError):  # best effort: the index is going
                    Index.drop_vectors(self.path(name) / "index",
                                       database_url=self._index_db(where), **self._vectors())
            if where:
                CredentialStore.drop(where["database_url"], where["schema"])
            trash = self.path(name).with_name(f".deleted-{name}-{uuid.uuid4().hex[:8]}")
            self.path(name).rename(trash)  # the name is free at once
        shutil.rmtree(trash, ignore_errors=True)

    def _store_db(self, name: str, uid: str | None = None) -> dict[str, Any]:
        """Where a collection's manifests live: its own SQLite file, or a schema of its own
        in the service's database (named after the registry uid too, when there is one, so
        that a name created again never meets the schema of its predecessor)."""
        if self.settings.database_url is None:
            return {}
        parts = ("tm_c", name, uid[:8]) if uid else ("tm_col", name)
        return {"database_url": self.settings.database_url, "schema": schema_name(*parts)}

    @staticmethod
    def _index_db(where: dict[str, Any]) -> str | None:
        return where.get("database_url")

    def _vectors(self) -> dict[str, Any]:
        return {} if self.settings.vectors is None else {"vectors": self.settings.vectors}

    def close(self) -> None:
        self.workers.shutdown()  # running jobs finish (and commit) before the stores close
        with self._registry_lock:
            for entry in self._open.values():
                entry.store.close()
            self._open.clear()
        self.engine.dispose()  # reversible: the app may start again (the key store stays open)

    async def run(self, fn: Callable[[Job], T], weight: int = 0) -> T:
        """Run blocking ``fn(job)`` on a worker: bounded concurrency, ``weight`` bytes of the
        memory budget, and the request's deadline (:mod:`tracemark.service.jobs`): 503
        ``Busy`` with ``Retry-After`` when no worker (or memory) was free in time, 503
        ``Timeout`` when the work had not reached its commit point -- in both cases nothing
        was committed."""
        timeout = self.settings.request_timeout
        try:
            return await self.workers.run(fn, timeout, weight)
        except DeadlineExceeded as exc:
            if exc.queued:
                raise ApiError(503, "Busy", str(exc), headers={
                    "Retry-After": str(self.workers.retry_after(timeout))}) from None
            raise ApiError(503, "Timeout", str(exc)) from None


_BEARER = HTTPBearer(auto_error=False, scheme_name="BearerAuth",
                     description="An API key (`tracemark service keys create`): "
                                 "`Authorization: Bearer tm_...`.")
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader",
                               description="The same API key in an `X-API-Key` header.")


def api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
    x_api_key: Annotated[str | None, Security(_API_KEY_HEADER)] = None,
) -> ApiKey:
    """The API key of a request (``Authorization: Bearer`` or ``X-API-Key``), or 401. Both
    are declared as OpenAPI security schemes (Swagger's Authorize button, generated
    clients)."""
    token = x_api_key
    if bearer is not None and bearer.credentials:
        token = bearer.credentials.strip()
    if not token:
        raise ApiError(401, "MissingApiKey", "send an API key: Authorization: Bearer tm_...")
    key = request.app.state.tm.keys.check(token)
    if key is None:
        raise ApiError(401, "InvalidApiKey", "unknown or revoked API key")
    return key


Key = Annotated[ApiKey, Depends(api_key)]
Upload = Annotated[UploadFile, File(
    description="The image file (non-empty; at most the service's max upload bytes and max "
                "pixels; a format the service reads, else 415).",
    json_schema_extra={"minLength": 1, "format": "binary"})]
"""An uploaded image: ``format: binary`` beside OpenAPI 3.1's ``contentMediaType``, as
OpenAPI 3.0 tools (client generators) know a file part."""


def _form_bool(value: object) -> object:
    """A multipart boolean as the schema types it: ``true`` or ``false`` in any case (JSON's
    spelling; openapi-python-client's clients send Python's ``True``/``False``), not pydantic's
    lax ``0``/``1``/``yes``/``off``, which a ``boolean`` schema does not admit."""
    if isinstance(value, str) and value.lower() not in ("true", "false"):
        raise ValueError("a boolean form field is 'true' or 'false'")
    return value


NO_NUL = "^[^\\x00]*$"
"""The pattern of a text field the index stores: no NUL character (the index refuses it, 400
``IndexInputError``; stated in the schema, it is 422 before anything is read)."""

FormBool = Annotated[bool, BeforeValidator(_form_bool)]
"""A boolean form field: ``true`` or ``false``, any case (else 422 ``ValidationError``)."""


def _form_fields(single: tuple[str, ...], nonempty: tuple[str, ...] = ()) -> Any:
    """A dependency refusing (422 ``ValidationError``) a form field of ``single`` sent more
    than once (FastAPI would keep one of the values, silently) and an empty value of a field
    of ``nonempty`` (FastAPI reads an empty field as absent, its default, so ``format=`` would
    pass a pattern or enum the schema states): the fields whose schema does not admit ``""``."""

    async def check(request: Request) -> None:
        form = await request.form()  # parsed once: FastAPI reads the same cached form
        errors = [{"type": "too_long", "loc": ("body", n), "input": form.getlist(n),
                   "msg": "sent more than once: the schema has one value"}
                  for n in single if len(form.getlist(n)) > 1]
        errors += [{"type": "string_too_short", "loc": ("body", n), "input": "",
                    "msg": "an empty value: send one the schema admits, or leave it out"}
                   for n in nonempty if any(v == "" for v in form.getlist(n))]
        if errors:
            raise RequestValidationError(errors)

    return Depends(check)

def _at_most(limit: int) -> str:
    """A regular expression (no anchors) of the decimal integers 0..``limit``, no leading
    zeros."""
    d = str(limit)
    alts = ["0", f"[1-9][0-9]{{0,{len(d) - 2}}}"] if len(d) > 1 else [f"[0-{d}]"]
    if len(d) > 1:
        for i, c in enumerate(d):
            lo = "1" if i == 0 else "0"
            if int(c) > int(lo):
                alts.append(d[:i] + f"[{lo}-{int(c) - 1}]" + f"[0-9]{{{len(d) - i - 1}}}")
        alts.append(d)
    return "|".join(alts)


PAYLOAD_PATTERN = f"^({_at_most(2**64 - 1)}|0[xX][0-9a-fA-F]{{1,16}})$"
"""A watermark payload in a form field: 0..2^64-1, in decimal (no leading zeros) or ``0x``
hex (1-16 digits). Declared in the schema and enforced by the route (422 ``PayloadError``)."""


def _source_type_schema() -> dict[str, Any]:
    """The ``digital_source_type`` form field's enum: every IPTC name c2pa-python signs
    (:func:`tracemark.credentials.manifest.digital_source_types`) and its full URL; no enum
    without the c2pa extra (signing then answers 409)."""
    try:
        from tracemark.credentials.manifest import IPTC_DIGITAL_SOURCE_TYPE, digital_source_types

        names = sorted(digital_source_types())
    except (ImportError, TracemarkError):
        return {}
    return {"enum": names + [IPTC_DIGITAL_SOURCE_TYPE + n for n in names]}


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _schema_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI schema documents for a concrete request ``path`` (its path
    templates compiled once, as Starlette compiles routes)."""
    table = getattr(app.state, "schema_methods", None)
    if table is None:
        from starlette.routing import compile_path

        table = [(compile_path(template)[0], {m.upper() for m in ops if m in _HTTP_METHODS})
                 for template, ops in app.openapi().get("paths", {}).items()]
        app.state.schema_methods = table
    return {m for regex, methods in table if regex.match(path) for m in methods}


def create_app(settings: ServiceSettings) -> FastAPI:
    """The service's FastAPI application (the OpenAPI schema is at ``/openapi.json``)."""
    from importlib.metadata import version

    state = _State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        state.close()

    app = FastAPI(
        title="tracemark", version=version("tracemark"), lifespan=lifespan,
        description="Image provenance: watermarks, copy detection, content credentials.",
        responses=ERROR_RESPONSES,
    )
    app.state.tm = state
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes + 64 * 1024,
                       timeout=settings.body_timeout)

    # --- errors ----------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(TracemarkError)
    async def _tm_error(_req: Request, exc: TracemarkError) -> JSONResponse:
        return _error(_status_for(exc), type(exc).__name__, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                 for e in exc.errors()]
        return _error(422, "ValidationError", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Allow lists every method of the path (RFC 9110, section 15.5.6); Starlette
            # names only those of the first route that matched the path
            from starlette.routing import Match

            methods = {m for r in req.app.router.routes
                       if r.matches(req.scope)[0] != Match.NONE
                       for m in (getattr(r, "methods", None) or ())}
            # routes of included routers (FastAPI wraps them): the schema's operations
            methods |= _schema_methods(req.app, req.url.path)
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return _error(exc.status_code, "HTTPError", str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:  # pragma: no cover
        return _error(500, "InternalError", "internal error")

    @app.middleware("http")
    async def _limits_and_metrics(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_upload_bytes + 64 * 1024
            except ValueError:
                return _error(400, "BadRequest", "invalid Content-Length")
            if too_big:
                return _error(413, "PayloadTooLarge",
                              f"uploads are limited to {settings.max_upload_bytes} bytes")
        response = await call_next(request)
        route = request.scope.get("route")
        label = getattr(route, "path", "unmatched")
        state.requests.labels(request.method, label, str(response.status_code)).inc()
        state.latency.labels(request.method, label).observe(time.perf_counter() - t0)
        return response

    # --- auth ------------------------------------------------------------------------

    async def read_upload(image: UploadFile) -> bytes:
        return await read_limited(image, settings.max_upload_bytes)

    def weigh(data: bytes) -> int:
        return upload_weight(data, settings)

    def load(data: bytes) -> Any:
        from tracemark.imageio import load_image

        return load_image(data, max_pixels=settings.max_pixels, name="upload",
                          formats=settings.formats)

    # --- health, metrics ------------------------------------------------------------

    @app.get(f"{API_PREFIX}/health", tags=["service"], response_model=m.Health)
    def health() -> dict[str, Any]:
        """Liveness: the service answers and its database is reachable."""
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok", "version": app.version, "collections": len(state.names()),
                "signing": state.creds is not None}

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.registry_metrics), media_type=CONTENT_TYPE_LATEST)

    # --- collections -----------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections", status_code=201, tags=["collections"],
              response_model=m.CollectionCreated,
              responses={201: {"description": "Created", "links": LINKS["create"]}})
    async def create_collection(body: CollectionIn, key: Key) -> dict[str, Any]:
        """Create a collection (needs a write key for all collections, ``*``)."""
        if "*" not in key.collections:
            allow(key, None, write=True)
            raise ApiError(403, "Forbidden", "creating collections needs a key scoped to '*'")
        allow(key, body.name, write=True)
        store = await state.run(lambda job: state.create(body.name, job))
        return {"name": body.name, "store_id": store.store_id}

    @app.get(f"{API_PREFIX}/collections", tags=["collections"], response_model=m.CollectionList)
    def list_collections(key: Key) -> dict[str, Any]:
        """The collections this key may read."""
        return {"collections": [n for n in state.names() if key.allows(n, write=False)]}

    @app.delete(f"{API_PREFIX}/collections/{{name}}", tags=["collections"],
                response_model=m.CollectionDeleted)
    async def delete_collection(name: str, key: Key) -> dict[str, Any]:
        """Delete a collection with everything in it: images, watermark key, manifests
        (needs a write key for all collections, ``*``)."""
        allow(key, name, write=True)
        if "*" not in key.collections:
            raise ApiError(403, "Forbidden", "deleting collections needs a key scoped to '*'")
        await state.run(lambda job: state.delete(name, job))
        return {"deleted": name}

    @app.get(f"{API_PREFIX}/collections/{{name}}", tags=["collections"],
             response_model=m.CollectionStats)
    async def collection_stats(name: str, key: Key) -> dict[str, Any]:
        allow(key, name, write=False)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                return {"name": name, "manifests": len(store),
                        "images": store.fingerprint_count(), "store_id": store.store_id}
        return await state.run(work)

    @app.post(f"{API_PREFIX}/collections/{{name}}/images", status_code=201, tags=["collections"],
              dependencies=[_form_fields(("image", "source", "owner", "license"))],
              response_model=m.ImageAdded,
              responses={200: {"model": m.ImageAdded,
                               "description": "Already registered (duplicate_of): nothing added"},
                         201: {"description": "Registered", "links": LINKS["register"]}})
    async def add_image(name: str, key: Key, image: Upload, response: Response,
                        source: Annotated[str | None, Form(max_length=1000,
                                                           pattern=NO_NUL)] = None,
                        owner: Annotated[str | None, Form(max_length=1000, pattern=NO_NUL)] = None,
                        license: Annotated[str | None, Form(max_length=1000,
                                                            pattern=NO_NUL)] = None,
                        ) -> dict[str, Any]:
        """Register an image in the collection (acknowledged once durable; ``store_id``
        names the collection it went into): 201 when it was added, 200 when its pixels
        are already registered (``duplicate_of`` names that reference; nothing was added)."""
        allow(key, name, write=True)
        data = await read_upload(image)

        def work(job: Job) -> dict[str, Any]:
            state.get(name)  # 404 before the decode
            rgb = load(data)
            with state.writing(name, job) as entry:
                res = entry.store.add_fingerprint(rgb, source=source or image.filename,
                                                  owner=owner, license=license)
                state.commit(entry, job)
            return {"ref_id": res.id, "duplicate_of": res.duplicate_of,
                    "store_id": entry.store.store_id}
        out = await state.run(work, weight=weigh(data))
        if out["duplicate_of"] is not None:
            response.status_code = 200
        return out

    @app.get(f"{API_PREFIX}/collections/{{name}}/images", tags=["collections"],
             response_model=m.ImageList)
    async def list_images(name: str, key: Key,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                          offset: Annotated[int, Query(ge=0, lt=2**62)] = 0) -> dict[str, Any]:
        allow(key, name, write=False)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                refs = store.list_fingerprints(limit=limit, offset=offset)
            return {"images": [r.__dict__ for r in refs]}
        return await state.run(work)

    @app.delete(f"{API_PREFIX}/collections/{{name}}/images/{{ref_id}}", tags=["collections"],
                response_model=m.ImageRemoved)
    async def remove_image(name: str, ref_id: Annotated[int, PathParam(ge=1, lt=2**62)], key: Key) -> dict[str, Any]:
        allow(key, name, write=True)

        def work(job: Job) -> dict[str, Any]:
            with state.writing(name, job) as entry:
                removed = entry.store.remove_fingerprint(ref_id)
                if removed:
                    state.commit(entry, job)
            if not removed:
                raise ApiError(404, "UnknownImage", f"no image {ref_id} in {name!r}")
            return {"removed": ref_id}
        return await state.run(work)

    @app.post(f"{API_PREFIX}/collections/{{name}}/calibrate", tags=["collections"],
              response_model=m.Calibration, response_model_exclude_unset=True,
              form_limits={"max_files": 5000, "max_fields": 16})
    async def calibrate(
        name: str, key: Key,
        images: Annotated[list[UploadFile], File(
            description="Background images (at least 4, at most 5,000; together within "
                        "the upload limit): images that are NOT copies of anything in the "
                        "collection, like the uploads it will be searched with.",
            json_schema_extra={"minItems": 4, "maxItems": 5000, "items": {
                "type": "string", "format": "binary", "minLength": 1,
                "contentMediaType": "application/octet-stream"}})],
    ) -> dict[str, Any]:
        """Learn the collection's copy-detection background: after this, searches answer
        p-values (``tracemark index calibrate``, for a collection the service holds; the
        calibration is kept with the collection's metadata, so every replica uses it).
        Images that cannot be read are counted in ``failed``; an image that is a
        registered reference is left out (``in_collection``). Replaces the previous
        calibration."""
        allow(key, name, write=True)
        if not 4 <= len(images) <= 5000:
            raise ApiError(422, "ValidationError", "give 4 to 5,000 background images")
        datas = [await read_upload(im) for im in images]

        def work(job: Job) -> dict[str, Any]:
            from tracemark.copydetect import content_hash

            state.get(name)  # 404 before decoding
            loaded, failed = [], 0
            for data in datas:
                try:
                    loaded.append(load(data))
                except TracemarkError:
                    failed += 1
            with state.writing(name, job) as entry:
                index = entry.store.index
                kept = [im for im in loaded if index.index.find(content_hash(im)) is None]
                if len(kept) < 4:
                    raise ApiError(422, "ValidationError",
                                   f"{len(kept)} usable background images; at least 4 are "
                                   f"needed ({failed} unreadable, {len(loaded) - len(kept)} "
                                   "in the collection)")
                # the job's commit point guards the calibration's own commit
                with index.commit_guard(job.commit_point):
                    summary = entry.store.calibrate(kept)
            # quantile keys are floats; JSON writes them as their str() (the model's keys)
            summary["null_quantiles"] = {str(q): v for q, v in
                                         summary.get("null_quantiles", {}).items()}
            return {**summary, "used": len(kept), "failed": failed,
                    "in_collection": len(loaded) - len(kept)}
        return await state.run(work, weight=sum(weigh(d) for d in datas))

    @app.post(f"{API_PREFIX}/collections/{{name}}/search", tags=["collections"],
              dependencies=[_form_fields(("image", "k"), ("k",))],
              response_model=m.SearchResult)
    async def search(name: str, key: Key, image: Upload,
                     k: Annotated[int, Form(ge=1, le=50)] = 5) -> dict[str, Any]:
        """Edited copies of registered images: ranked matches with the copy decision."""
        allow(key, name, write=False)
        data = await read_upload(image)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                return {"matches": [m.to_dict() for m in store.search(load(data), k=k)]}
        return await state.run(work, weight=weigh(data))

    # --- watermark -------------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections/{{name}}/watermark/embed", tags=["watermark"],
              dependencies=[_form_fields(("image", "payload", "format", "quality", "allow_remark"),
                                         ("format", "quality", "allow_remark"))],
              response_class=Response,
              responses={200: {"content": {t: _BINARY for t in ("image/png", "image/jpeg",
                                                                 "image/webp")},
                               "headers": {
                                   "X-Mark": _header("embedded, kept or remarked",
                                                     {"type": "string", "enum": [
                                                         "embedded", "kept", "remarked"]}),
                                   "X-Alpha": _header("kept, flattened or none",
                                                      {"type": "string", "enum": [
                                                          "kept", "flattened", "none"]})}}})
    async def embed(name: str, key: Key, image: Upload,
                    payload: Annotated[str, Form(description="0..2^64-1, decimal or 0x hex",
                                                  json_schema_extra={"pattern": PAYLOAD_PATTERN})],
                    format: Annotated[str, Form(pattern="^(png|jpg|webp)$")] = "png",
                    quality: Annotated[int, Form(ge=1, le=100)] = 92,
                    allow_remark: Annotated[FormBool, Form(description=(
                        "Embed over a mark of this collection carrying another payload "
                        "(the two marks garble each other)"))] = False) -> Response:
        """Embed the collection's watermark carrying ``payload``; returns the image. Blind
        detection runs first (:func:`tracemark.watermark.embed_once`): an upload already
        carrying this payload is returned re-encoded, not marked twice; one carrying
        another payload (or a mark that no longer reads) is 409 ``AlreadyMarkedError``
        unless ``allow_remark``. Header ``X-Mark``: ``embedded``, ``kept`` or ``remarked``.
        Header ``X-Alpha``: ``kept`` (the upload's alpha channel is unchanged in a png or
        webp result), ``flattened`` (a jpg has none: the image over white) or ``none``
        (opaque)."""
        allow(key, name, write=True)
        if not re.fullmatch(PAYLOAD_PATTERN, payload):
            raise ApiError(422, "PayloadError", "payload must be an integer in 0..2^64-1 "
                           "(decimal, or 0x and 1-16 hex digits)")
        value = int(payload, 0)
        if not 0 <= value < 1 << 64:
            raise ApiError(422, "PayloadError", "payload must be in 0..2^64-1")
        data = await read_upload(image)

        def work(_job: Job) -> tuple[bytes, str, str]:
            from tracemark.imageio import (
                colour_under_alpha,
                composite,
                encode_image,
                encode_image_with_alpha,
                has_alpha_channel,
                load_image_with_alpha,
            )

            colour, alpha = load_image_with_alpha(data, max_pixels=settings.max_pixels,
                                                  name="upload", formats=settings.formats)
            from tracemark.watermark import embed_once, get_method

            with state.reading(name) as store:
                marked, mark = embed_once(get_method(store.watermark_method),
                                          composite(colour, alpha), value,
                                          store.watermark_key, allow_remark=allow_remark)
            fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[format]
            q = None if fmt == "PNG" else quality
            if alpha is not None and has_alpha_channel(fmt):
                visible = colour_under_alpha(marked, colour, alpha,
                                             out=None if mark == "kept" else marked)
                return encode_image_with_alpha(visible, alpha, fmt, quality=q), "kept", mark
            return (encode_image(marked, fmt, quality=q),
                    "none" if alpha is None else "flattened", mark)
        out, alpha_state, mark_state = await state.run(work, weight=weigh(data))
        media = media_type(format)
        return Response(out, media_type=media,
                        headers={"X-Alpha": alpha_state, "X-Mark": mark_state})

    @app.post(f"{API_PREFIX}/collections/{{name}}/watermark/detect", tags=["watermark"],
              response_model=m.Detection)
    async def detect(name: str, key: Key, image: Upload) -> dict[str, Any]:
        """Detect the collection's watermark: presence (true, false, or null when the
        collection's method cannot tell; a collection's ``lattice`` always can), calibrated
        p-value, payload."""
        allow(key, name, write=False)
        data = await read_upload(image)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                det = store.read_mark(load(data))
            present = None if det.present is None else bool(det.present)
            return {"present": present, "payload": det.payload_int,
                    "payload_hex": None if det.payload is None else "0x" + det.payload.hex(),
                    "p_value": det.p_value, "score": float(det.score)}
        return await state.run(work, weight=weigh(data))

    # --- credentials -----------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections/{{name}}/sign", tags=["credentials"],
              dependencies=[_form_fields(("image", "format", "ai_generated", "title", "author",
                                          "digital_source_type", "manifest"),
                                         ("format", "ai_generated", "digital_source_type"))],
              response_class=Response,
              responses={200: {"content": {t: _BINARY for t in ("image/jpeg", "image/png",
                                                                 "image/webp", "image/avif",
                                                                 "image/heic")},
                               "headers": {
                                   "X-Manifest-Id": _header(
                                       "The stored manifest's id in the collection.",
                                       {"type": "integer", "minimum": 1}),
                                   "X-Manifest-Label": _header("The manifest's C2PA label."),
                                   "X-Alpha": _header(
                                       "The upload's alpha channel: kept, flattened or none.")},
                               "links": LINKS["sign"]}})
    async def sign(name: str, key: Key, image: Upload,
                   format: Annotated[str, Form(pattern="^(png|jpg|webp|avif|heic)$")] = "jpg",
                   ai_generated: Annotated[FormBool, Form()] = False,
                   title: Annotated[str | None, Form(max_length=500)] = None,
                   author: Annotated[str | None, Form(max_length=500)] = None,
                   digital_source_type: Annotated[str | None, Form(
                       max_length=200, json_schema_extra=_source_type_schema())] = None,
                   manifest: Annotated[str | None, Form(max_length=1 << 20)] = None,
                   ) -> Response:
        """Watermark and sign the image with a C2PA manifest stored in the collection.

        ``digital_source_type`` (an IPTC name such as ``digitalCapture`` or
        ``trainedAlgorithmicMedia``, or its URL) declares the image created with that
        source type; without it (nor ``ai_generated``) the signing is an edit of the
        upload. ``manifest``: a c2patool manifest definition (JSON text: title,
        claim_generator_info, assertions, ingredients without ``file_path``) merged with
        tracemark's manifest as ``sign --manifest`` does (docs/credentials.md); an invalid
        one is a 422 ``BadManifestDefinition``."""
        allow(key, name, write=True)
        from tracemark.credentials import SignOptions
        from tracemark.credentials.definition import loads, parse_definition

        definition = None
        if manifest is not None:
            try:
                definition = parse_definition(loads(manifest))
            except ConfigError as exc:
                raise ApiError(422, "BadManifestDefinition", str(exc)) from None
        if definition is not None and definition.title is not None:
            title = title or definition.title
        try:
            sign_options = SignOptions(ai_generated=ai_generated, title=title or
                                       Path(image.filename or "upload").stem[:500] or "upload",
                                       author=author, max_pixels=settings.max_pixels,
                                       formats=settings.formats,
                                       source_type=digital_source_type,
                                       definition=definition, signer=settings.signer,
                                       tsa_url=settings.tsa_url)
        except ConfigError as exc:
            raise ApiError(422, "BadManifestDefinition" if definition is not None and
                           "definition" in exc.message else "BadDigitalSourceType",
                           exc.message) from None
        if state.creds is None:
            raise ApiError(409, "SigningNotConfigured",
                           "this service has no signing certificate (start it with --cert and --key "
                           "or --signer-command)")
        data = await read_upload(image)
        media = media_type(format)
        upload_name = (image.filename or "")[-255:] or None

        def work(job: Job) -> tuple[Any, bytes]:
            from tracemark.credentials import sign_image

            state.get(name)  # 404 before the decode
            load(data)  # the pixel limit, before anything is reserved
            # the job's commit point guards the store's commit inside sign_image: past the
            # deadline it raises there and the sign is rolled back (the answer: 503)
            with state.writing(name, job) as entry, entry.store.commit_guard(job.commit_point):
                return sign_image(entry.store, data, None, state.creds, sign_options,
                                  media_type=media, name=upload_name)
        try:
            res, signed = await state.run(work, weight=weigh(data))
        except ConfigError as exc:  # c2pa refused a field of the definition
            if definition is None or "definition" not in exc.message:
                raise
            raise ApiError(422, "BadManifestDefinition", exc.message) from None
        return Response(signed, media_type=media, headers={
            "X-Manifest-Id": str(res.manifest_id), "X-Manifest-Label": res.label,
            "X-Alpha": res.alpha or "none"})

    async def _verify(name: str | None, data: bytes) -> dict[str, Any]:
        def work(_job: Job) -> dict[str, Any]:
            from tracemark.credentials import VerifyOptions, verify_image

            with (state.reading(name) if name is not None
                  else contextlib.nullcontext()) as store:
                res = verify_image(data, store, VerifyOptions(
                    trust_pem=state.trust_pem, allowed_pem=state.allowed_pem,
                    trust_config=state.trust_config, max_pixels=settings.max_pixels,
                    formats=settings.formats))
            out = res.to_dict()
            out["source"] = "upload"
            return out
        return await state.run(work, weight=weigh(data))

    @app.post(f"{API_PREFIX}/collections/{{name}}/verify", tags=["credentials"],
              response_model=m.Verification)
    async def verify_in(name: str, key: Key, image: Upload) -> dict[str, Any]:
        """The embedded manifest's state, or the collection's manifest recovered through the
        watermark or the fingerprint."""
        allow(key, name, write=False)
        return await _verify(name, await read_upload(image))

    @app.post(f"{API_PREFIX}/verify", tags=["credentials"], response_model=m.Verification)
    async def verify_embedded(key: Key, image: Upload) -> dict[str, Any]:
        """The embedded manifest's validation state only (no collection)."""
        return await _verify(None, await read_upload(image))

    @app.get(f"{API_PREFIX}/collections/{{name}}/manifests/{{manifest_id}}", tags=["credentials"],
             response_model=m.ManifestDetail)
    async def get_manifest(name: str, manifest_id: Annotated[int, PathParam(ge=1, lt=2**62)],
                           key: Key) -> dict[str, Any]:
        allow(key, name, write=False)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                rec = store.get(manifest_id)
            return {**rec.summary(), "manifest": rec.manifest}
        return await state.run(work)

    app.include_router(page_router)  # the verification page at / (tracemark.service.page)
    from tracemark.service.softbinding import softbinding_router  # C2PA Soft Binding Resolution API
    app.include_router(softbinding_router(state), prefix=API_PREFIX)
    from tracemark.service.references import references_router  # registered images' previews
    app.include_router(references_router(state), prefix=API_PREFIX)
    from tracemark.service.guard import concepts_router  # the guard's protected concepts
    app.include_router(concepts_router(state), prefix=API_PREFIX)
    from tracemark.service.guard_prompt import guard_prompt_router  # prompt screening
    app.include_router(guard_prompt_router(state), prefix=API_PREFIX)
    from tracemark.service.guard_image import guard_image_router  # output screening
    app.include_router(guard_image_router(state), prefix=API_PREFIX)
    return app
