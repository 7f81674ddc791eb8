"""Registered images' previews over HTTP, for the verification page's copy matches.

``GET /v1/collections/{name}/references/{ref_id}/preview`` answers the small JPEG kept
with a registered image (:meth:`tracemark.credentials.CredentialStore.reference_preview`:
long side at most :data:`~tracemark.copydetect.describe.PREVIEW_MAX_SIDE` px, written at
registration -- the register route, ``tracemark index add``, signing -- in the collection's
metadata database, so every replica sharing that database serves it). A search match's
``region`` is in the reference's pixels (``reference_size``); on the preview it is that
region times ``preview_width / reference_size[0]``.

Auth as every collection route: an API key that may read the collection (401, 403).
Answers: 200 ``image/jpeg`` with ``ETag`` (a hash of the bytes) and ``Cache-Control:
private, no-cache`` (a browser keeps it but asks again, answered 304 while it is
unchanged: a collection deleted and created again reuses reference ids, so a cached
preview is never trusted blindly); 404 ``UnknownImage`` (no such reference), 404
``NoPreview`` (a reference registered before previews were kept: remove it and register
it again to get one), 404 ``UnknownCollection``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from tracemark.errors import ReferenceNotFoundError
from tracemark.service.app import ApiError, Key, allow
from tracemark.service.jobs import Job

__all__ = ["references_router", "PREVIEW_CACHE_CONTROL"]

PREVIEW_CACHE_CONTROL = "private, no-cache"
"""A preview's ``Cache-Control`` (RFC 9111): only the user's browser stores it, and it
revalidates with the ``ETag`` before each use."""


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 13.1.2: weak
    comparison, ``*`` matches any)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def references_router(state: Any) -> APIRouter:
    """The reference routes (module docstring) over the service state ``state``
    (:class:`tracemark.service.app._State`), mounted under ``/v1``."""
    router = APIRouter(tags=["collections"])

    @router.get("/collections/{name}/references/{ref_id}/preview", response_class=Response,
                summary="A registered image's preview (JPEG, long side <= 256 px).",
                responses={200: {"content": {"image/jpeg": {}},
                                 "description": "The preview (ETag; Cache-Control: private, "
                                                "no-cache)"},
                           304: {"description": "Not modified (If-None-Match)"},
                           404: {"description": "UnknownCollection, UnknownImage, or "
                                                "NoPreview (registered before previews "
                                                "were kept)"}})
    async def reference_preview(name: str,
                                ref_id: Annotated[int, PathParam(ge=1, lt=2**62)],
                                request: Request, key: Key) -> Response:
        """The preview of registered image ``ref_id``: where a search match's ``region``
        is drawn (scaled by ``preview_width / reference_size[0]``)."""
        allow(key, name, write=False)

        def work(_job: Job) -> bytes:
            with state.reading(name) as store:
                try:
                    data = store.reference_preview(ref_id)
                except ReferenceNotFoundError:
                    raise ApiError(404, "UnknownImage",
                                   f"no image {ref_id} in {name!r}") from None
            if data is None:
                raise ApiError(404, "NoPreview",
                               f"image {ref_id} was registered before previews were kept; "
                               "remove it and register it again to get one")
            return data
        data = await state.run(work)
        etag = _etag(data)
        headers = {"ETag": etag, "Cache-Control": PREVIEW_CACHE_CONTROL,
                   "X-Content-Type-Options": "nosniff"}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    return router
