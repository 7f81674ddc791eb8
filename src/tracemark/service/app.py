"""The HTTP service: FastAPI app over collections (credential stores) and API keys.

A *collection* is a :class:`~tracemark.credentials.CredentialStore` under
``<data>/collections/<name>``: its copy-detection index (register, remove, search), its
watermark key (embed, detect; the key never leaves the server) and its manifest store
(sign, verify). Every endpoint but ``/v1/health`` and ``/metrics`` needs an API key
(``Authorization: Bearer tm_...`` or ``X-API-Key``) scoped to the collection and to read or
write. Blocking work runs in worker threads, at most ``max_concurrency`` at once, each
bounded by ``request_timeout``; every client mistake is a 4xx JSON error
``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import sqlalchemy as sa
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tracemark._db import schema_name
from tracemark.errors import (
    ClosedError,
    ConfigError,
    ImageError,
    ImageTooLargeError,
    IndexLockedError,
    ManifestNotFoundError,
    PayloadError,
    ReferenceNotFoundError,
    TracemarkError,
    UnsupportedFormatError,
    WatermarkEmbedError,
)
from tracemark.imageio import media_type
from tracemark.service.keys import ApiKey, KeyStore, service_engine

if TYPE_CHECKING:
    from tracemark.credentials import CredentialStore

__all__ = ["ServiceSettings", "create_app", "ApiError"]

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
"""Collection names: 1-48 characters, so that their database schemas stay valid names."""
API_PREFIX = "/v1"


@dataclass
class ServiceSettings:
    data_dir: Path
    database_url: str | None = None
    """Metadata database (API keys, manifests); default SQLite files in ``data_dir``."""
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    request_timeout: float = 30.0
    max_concurrency: int = 4
    vector_flush_seconds: float = 30.0
    """Adds are acknowledged after the database commit; FAISS files are rewritten at most
    this often (0: after every write)."""
    cert: Path | None = None
    key: Path | None = None
    trust: Path | None = None


class ApiError(Exception):
    """An error with an HTTP status, rendered as ``{"error": {"type", "message"}}``."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


class _BodyLimit:
    """ASGI middleware: a request body (chunked or not) larger than ``limit`` bytes stops
    being read at the limit and is answered 413 -- nothing past it is buffered or spooled."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        answered = False

        async def limited() -> Any:
            nonlocal seen, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
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
    if isinstance(exc, ImageError | UnsupportedFormatError):
        return 415
    if isinstance(exc, ManifestNotFoundError | ReferenceNotFoundError):
        return 404
    if isinstance(exc, IndexLockedError | ClosedError):
        return 409
    if isinstance(exc, ConfigError | PayloadError | WatermarkEmbedError):
        return 422  # WatermarkEmbedError: this image cannot carry a mark that reads back
    return 400


def _error(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


class CollectionIn(BaseModel):
    name: str = Field(pattern=NAME_RE.pattern, description="Lower-case letters, digits, - and _.")


class _State:
    """What the app holds: settings, key store, open collections, limits, metrics."""

    def __init__(self, settings: ServiceSettings) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "collections").mkdir(exist_ok=True)
        self.engine = service_engine(settings.data_dir, settings.database_url)
        self.keys = KeyStore(self.engine)
        self.limiter = anyio.CapacityLimiter(settings.max_concurrency)
        self._open: dict[str, CredentialStore] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._registry_lock = threading.Lock()
        self._flushed: dict[str, float] = {}
        self.creds: Any = None
        self.trust_pem: str | None = None
        if settings.cert is not None and settings.key is not None:
            from tracemark.credentials import load_signing_credentials

            self.creds = load_signing_credentials(settings.cert, settings.key)
        if settings.trust is not None:
            from tracemark.credentials import load_trust_anchors

            self.trust_pem = load_trust_anchors(settings.trust)
        self.registry = CollectorRegistry()
        self.requests = Counter("tracemark_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("tracemark_request_seconds", "Request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.in_flight = Gauge("tracemark_work_in_flight", "Blocking jobs running",
                               registry=self.registry)

    # --- collections ---------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.settings.data_dir / "collections" / name

    def names(self) -> list[str]:
        root = self.settings.data_dir / "collections"
        return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def collection(self, name: str) -> CredentialStore:
        from tracemark.credentials import CredentialStore

        with self._registry_lock:
            store = self._open.get(name)
            if store is None:
                if not NAME_RE.match(name) or not self.path(name).is_dir():
                    raise ApiError(404, "UnknownCollection", f"no collection {name!r}")
                store = CredentialStore.open(self.path(name), **self._store_db(name))
                self._open[name] = store
                self._locks[name] = threading.Lock()
            return store

    def commit(self, name: str, store: CredentialStore) -> None:
        """Make a collection's write durable before it is acknowledged: the database commit.
        The FAISS files follow at most every ``vector_flush_seconds`` (and on shutdown); a
        crash in between is repaired from the database when the index is opened."""
        now = time.monotonic()
        last = self._flushed.get(name, 0.0)
        write = now - last >= self.settings.vector_flush_seconds
        store.commit(write_vectors=write)
        if write:
            self._flushed[name] = now

    def write_lock(self, name: str) -> threading.Lock:
        self.collection(name)
        lock = self._locks.get(name)
        if lock is None:  # deleted meanwhile
            raise ApiError(404, "UnknownCollection", f"no collection {name!r}")
        return lock

    def create(self, name: str) -> CredentialStore:
        from tracemark.credentials import CredentialStore

        with self._registry_lock:
            if self.path(name).exists():
                raise ApiError(409, "CollectionExists", f"collection {name!r} exists")
            store = CredentialStore.create(self.path(name), **self._store_db(name))
            self._open[name] = store
            self._locks[name] = threading.Lock()
            return store

    def delete(self, name: str) -> None:
        """Close and delete a collection: its directory, and its schemas in a shared
        database. In-flight writes finish first; a search still running may fail."""
        import shutil
        import uuid

        from tracemark.credentials import CredentialStore

        store = self.collection(name)
        with self._locks[name], self._registry_lock:
            store.close()
            self._open.pop(name, None)
            self._locks.pop(name, None)
            self._flushed.pop(name, None)
            where = self._store_db(name)
            if where:
                CredentialStore.drop(where["database_url"], where["schema"])
            trash = self.path(name).with_name(f".deleted-{name}-{uuid.uuid4().hex[:8]}")
            self.path(name).rename(trash)  # the name is free at once
        shutil.rmtree(trash, ignore_errors=True)

    def _store_db(self, name: str) -> dict[str, Any]:
        """Where a collection's manifests live: its own SQLite file, or a schema of its own
        in the service's database."""
        if self.settings.database_url is None:
            return {}
        return {"database_url": self.settings.database_url,
                "schema": schema_name("tm_col", name)}

    def close(self) -> None:
        with self._registry_lock:
            for store in self._open.values():
                store.close()
            self._open.clear()
        self.engine.dispose()  # reversible: the app may start again (the key store stays open)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run blocking ``fn`` in a worker thread: bounded concurrency and a timeout."""
        try:
            with anyio.fail_after(self.settings.request_timeout):
                return await anyio.to_thread.run_sync(
                    self._tracked(fn), limiter=self.limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise ApiError(503, "Timeout",
                           f"the request took longer than {self.settings.request_timeout} s") from None

    def _tracked(self, fn: Callable[[], T]) -> Callable[[], T]:
        def call() -> T:
            self.in_flight.inc()
            try:
                return fn()
            finally:
                self.in_flight.dec()
        return call


def api_key(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The API key of a request (``Authorization: Bearer`` or ``X-API-Key``), or 401."""
    token = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token:
        raise ApiError(401, "MissingApiKey", "send an API key: Authorization: Bearer tm_...")
    key = request.app.state.tm.keys.check(token)
    if key is None:
        raise ApiError(401, "InvalidApiKey", "unknown or revoked API key")
    return key


Key = Annotated[ApiKey, Depends(api_key)]
Upload = Annotated[UploadFile, File(description="The image file.")]


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
    )
    app.state.tm = state
    app.add_middleware(_BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)

    # --- errors ----------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.type, exc.message)

    @app.exception_handler(TracemarkError)
    async def _tm_error(_req: Request, exc: TracemarkError) -> JSONResponse:
        return _error(_status_for(exc), type(exc).__name__, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg", ""))
                 for e in exc.errors()]
        return _error(422, "ValidationError", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "HTTPError", str(exc.detail))

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


    def allow(key: ApiKey, collection: str | None, *, write: bool) -> None:
        if not key.allows(collection, write=write):
            what = "write" if write else "read"
            where = f"collection {collection!r}" if collection else "this endpoint"
            raise ApiError(403, "Forbidden", f"this API key may not {what} {where}")

    async def read_upload(image: UploadFile) -> bytes:
        data = await image.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "PayloadTooLarge",
                           f"uploads are limited to {settings.max_upload_bytes} bytes")
        if not data:
            raise ApiError(415, "EmptyImageError", "the upload is empty")
        return data

    def load(data: bytes) -> Any:
        from tracemark.imageio import load_image

        return load_image(data, max_pixels=settings.max_pixels, name="upload")

    # --- health, metrics ------------------------------------------------------------

    @app.get(f"{API_PREFIX}/health", tags=["service"])
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

        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    # --- collections -----------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections", status_code=201, tags=["collections"])
    async def create_collection(body: CollectionIn, key: Key) -> dict[str, Any]:
        """Create a collection (needs a write key for all collections, ``*``)."""
        if "*" not in key.collections:
            allow(key, None, write=True)
            raise ApiError(403, "Forbidden", "creating collections needs a key scoped to '*'")
        allow(key, body.name, write=True)
        store = await state.run(lambda: state.create(body.name))
        return {"name": body.name, "store_id": store.store_id}

    @app.get(f"{API_PREFIX}/collections", tags=["collections"])
    def list_collections(key: Key) -> dict[str, Any]:
        """The collections this key may read."""
        return {"collections": [n for n in state.names() if key.allows(n, write=False)]}

    @app.delete(f"{API_PREFIX}/collections/{{name}}", tags=["collections"])
    async def delete_collection(name: str, key: Key) -> dict[str, Any]:
        """Delete a collection with everything in it: images, watermark key, manifests
        (needs a write key for all collections, ``*``)."""
        allow(key, name, write=True)
        if "*" not in key.collections:
            raise ApiError(403, "Forbidden", "deleting collections needs a key scoped to '*'")
        await state.run(lambda: state.delete(name))
        return {"deleted": name}

    @app.get(f"{API_PREFIX}/collections/{{name}}", tags=["collections"])
    async def collection_stats(name: str, key: Key) -> dict[str, Any]:
        allow(key, name, write=False)

        def work() -> dict[str, Any]:
            store = state.collection(name)
            return {"name": name, "manifests": len(store), "images": store.fingerprint_count(),
                    "store_id": store.store_id}
        return await state.run(work)

    @app.post(f"{API_PREFIX}/collections/{{name}}/images", status_code=201, tags=["collections"])
    async def add_image(name: str, key: Key, image: Upload,
                        source: Annotated[str | None, Form(max_length=1000)] = None,
                        owner: Annotated[str | None, Form(max_length=1000)] = None,
                        license: Annotated[str | None, Form(max_length=1000)] = None) -> dict[str, Any]:
        """Register an image in the collection (acknowledged once durable)."""
        allow(key, name, write=True)
        data = await read_upload(image)

        def work() -> dict[str, Any]:
            store = state.collection(name)
            rgb = load(data)
            with state.write_lock(name):
                res = store.add_fingerprint(rgb, source=source or image.filename, owner=owner,
                                            license=license)
                state.commit(name, store)
            return {"ref_id": res.id, "duplicate_of": res.duplicate_of}
        return await state.run(work)

    @app.get(f"{API_PREFIX}/collections/{{name}}/images", tags=["collections"])
    async def list_images(name: str, key: Key, limit: int = 100,
                          offset: Annotated[int, Query(ge=0, lt=2**62)] = 0) -> dict[str, Any]:
        allow(key, name, write=False)
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(422, "ValidationError", "limit must be 1..1000 and offset >= 0")

        def work() -> dict[str, Any]:
            refs = state.collection(name).list_fingerprints(limit=limit, offset=offset)
            return {"images": [r.__dict__ for r in refs]}
        return await state.run(work)

    @app.delete(f"{API_PREFIX}/collections/{{name}}/images/{{ref_id}}", tags=["collections"])
    async def remove_image(name: str, ref_id: Annotated[int, PathParam(ge=1, lt=2**62)], key: Key) -> dict[str, Any]:
        allow(key, name, write=True)

        def work() -> dict[str, Any]:
            store = state.collection(name)
            with state.write_lock(name):
                removed = store.remove_fingerprint(ref_id)
                state.commit(name, store)
            if not removed:
                raise ApiError(404, "UnknownImage", f"no image {ref_id} in {name!r}")
            return {"removed": ref_id}
        return await state.run(work)

    @app.post(f"{API_PREFIX}/collections/{{name}}/search", tags=["collections"])
    async def search(name: str, key: Key, image: Upload,
                     k: Annotated[int, Form(ge=1, le=50)] = 5) -> dict[str, Any]:
        """Edited copies of registered images: ranked matches with the copy decision."""
        allow(key, name, write=False)
        data = await read_upload(image)

        def work() -> dict[str, Any]:
            store = state.collection(name)
            return {"matches": [m.to_dict() for m in store.search(load(data), k=k)]}
        return await state.run(work)

    # --- watermark -------------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections/{{name}}/watermark/embed", tags=["watermark"],
              response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
    async def embed(name: str, key: Key, image: Upload,
                    payload: Annotated[str, Form(description="0..2^64-1, decimal or 0x hex")],
                    format: Annotated[str, Form(pattern="^(png|jpg|webp)$")] = "png",
                    quality: Annotated[int, Form(ge=1, le=100)] = 92) -> Response:
        """Embed the collection's watermark carrying ``payload``; returns the image. Header
        ``X-Alpha``: ``kept`` (the upload's alpha channel is unchanged in a png or webp
        result), ``flattened`` (a jpg has none: the image over white) or ``none`` (opaque)."""
        allow(key, name, write=True)
        try:
            value = int(payload, 0)
        except ValueError:
            raise ApiError(422, "PayloadError", "payload must be an integer (decimal or 0x...)") from None
        if not 0 <= value < 1 << 64:
            raise ApiError(422, "PayloadError", "payload must be in 0..2^64-1")
        data = await read_upload(image)

        def work() -> tuple[bytes, str]:
            from tracemark.imageio import (
                colour_under_alpha,
                composite,
                encode_image,
                encode_image_with_alpha,
                has_alpha_channel,
                load_image_with_alpha,
            )

            colour, alpha = load_image_with_alpha(data, max_pixels=settings.max_pixels,
                                                  name="upload")
            marked = state.collection(name).mark(composite(colour, alpha), value)
            fmt = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[format]
            q = None if fmt == "PNG" else quality
            if alpha is not None and has_alpha_channel(fmt):
                return encode_image_with_alpha(colour_under_alpha(marked, colour, alpha, out=marked),
                                               alpha, fmt, quality=q), "kept"
            return encode_image(marked, fmt, quality=q), "none" if alpha is None else "flattened"
        out, alpha_state = await state.run(work)
        media = media_type(format)
        return Response(out, media_type=media, headers={"X-Alpha": alpha_state})

    @app.post(f"{API_PREFIX}/collections/{{name}}/watermark/detect", tags=["watermark"])
    async def detect(name: str, key: Key, image: Upload) -> dict[str, Any]:
        """Detect the collection's watermark: presence, calibrated p-value, payload."""
        allow(key, name, write=False)
        data = await read_upload(image)

        def work() -> dict[str, Any]:
            det = state.collection(name).read_mark(load(data))
            return {"present": bool(det.present), "payload": det.payload_int,
                    "payload_hex": None if det.payload is None else "0x" + det.payload.hex(),
                    "p_value": det.p_value, "score": float(det.score)}
        return await state.run(work)

    # --- credentials -----------------------------------------------------------------

    @app.post(f"{API_PREFIX}/collections/{{name}}/sign", tags=["credentials"],
              response_class=Response,
              responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}})
    async def sign(name: str, key: Key, image: Upload,
                   format: Annotated[str, Form(pattern="^(png|jpg|webp)$")] = "jpg",
                   ai_generated: Annotated[bool, Form()] = False,
                   title: Annotated[str | None, Form(max_length=500)] = None,
                   author: Annotated[str | None, Form(max_length=500)] = None) -> Response:
        """Watermark and sign the image with a C2PA manifest stored in the collection."""
        allow(key, name, write=True)
        if state.creds is None:
            raise ApiError(409, "SigningNotConfigured",
                           "this service has no signing certificate (start it with --cert/--key)")
        data = await read_upload(image)
        media = media_type(format)

        def work() -> tuple[Any, bytes]:
            from tracemark.credentials import SignOptions, sign_image

            store = state.collection(name)
            load(data)  # the pixel limit, before anything is reserved
            with state.write_lock(name):
                return sign_image(store, data, None, state.creds,
                                  SignOptions(ai_generated=ai_generated, title=title or "upload",
                                              author=author, max_pixels=settings.max_pixels),
                                  media_type=media)
        res, signed = await state.run(work)
        return Response(signed, media_type=media, headers={
            "X-Manifest-Id": str(res.manifest_id), "X-Manifest-Label": res.label,
            "X-Alpha": res.alpha or "none"})

    async def _verify(name: str | None, data: bytes) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from tracemark.credentials import VerifyOptions, verify_image

            store = state.collection(name) if name is not None else None
            res = verify_image(data, store, VerifyOptions(trust_pem=state.trust_pem,
                                                          max_pixels=settings.max_pixels))
            out = res.to_dict()
            out["source"] = "upload"
            return out
        return await state.run(work)

    @app.post(f"{API_PREFIX}/collections/{{name}}/verify", tags=["credentials"])
    async def verify_in(name: str, key: Key, image: Upload) -> dict[str, Any]:
        """The embedded manifest's state, or the collection's manifest recovered through the
        watermark or the fingerprint."""
        allow(key, name, write=False)
        return await _verify(name, await read_upload(image))

    @app.post(f"{API_PREFIX}/verify", tags=["credentials"])
    async def verify_embedded(key: Key, image: Upload) -> dict[str, Any]:
        """The embedded manifest's validation state only (no collection)."""
        return await _verify(None, await read_upload(image))

    @app.get(f"{API_PREFIX}/collections/{{name}}/manifests/{{manifest_id}}", tags=["credentials"])
    async def get_manifest(name: str, manifest_id: Annotated[int, PathParam(ge=1, lt=2**62)],
                           key: Key) -> dict[str, Any]:
        allow(key, name, write=False)

        def work() -> dict[str, Any]:
            rec = state.collection(name).get(manifest_id)
            return {**rec.summary(), "manifest": rec.manifest}
        return await state.run(work)

    return app
