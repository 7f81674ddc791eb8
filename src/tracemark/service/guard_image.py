"""Output screening over HTTP: ``POST /v1/collections/{name}/guard/image``.

A generated image (multipart field ``image``) is screened against the collection
(:func:`tracemark.guard.image.screen_image`): copies of its registered images (with the
region in the upload), the collection's own watermark (its key never leaves the server),
and a C2PA manifest from a signer other than the service's own (the service's signing
certificate's common name and organisation, plus the form field ``own_signers``) that
declares a protected work. Answers one decision (``allow``, ``review``, ``block``) and its
evidence (:class:`GuardImageResult`). The concepts are the collection's registered ones
(:class:`tracemark.guard.ConceptRegistry`), or those given in the form field ``concepts``
(a JSON array of concept objects, :meth:`tracemark.guard.Concept.from_dict`) instead.

Auth: an API key that may read the collection (401, 403). Errors (``{"error": {"type",
"message"}}``): 404 ``UnknownCollection``; 413 an upload past the byte or pixel limit;
415 an empty, corrupt or unsupported image; 422 a bad form value (``alpha``, ``concepts``:
``GuardInputError``/``ConfigError``) or an image below the size copy detection needs.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form
from pydantic import Field

from tracemark.errors import ConfigError, GuardInputError
from tracemark.service.app import ApiError, Key, Upload, allow, read_limited, upload_weight
from tracemark.service.jobs import Job
from tracemark.service.models import _REGION, _Out

__all__ = ["GuardImageResult", "guard_image_router"]

Decision = Literal["allow", "review", "block"]


class GuardEvidence(_Out):
    how: Literal["image", "watermark", "manifest"] = Field(
        description="A copy of a registered image, the collection's watermark, or a "
                    "foreign C2PA manifest's declaration.")
    text: str = Field(description="What the image carries (the reference, the payload, the "
                                  "manifest's words).")
    matched: str = Field(description="What it matched (a reference, the method, a name).")
    prompt: int | None = Field(description="For a manifest: the index of the declared text.")
    span: list[int] | None = Field(description="Character offsets in that text, or null.")
    score: float = Field(description="The check's own score in [0, 1].")


class GuardConceptMatch(_Out):
    concept: str = Field(description="The concept's id; ``image-<ref_id>`` for a registered "
                                     "image no concept names, ``watermarked-work`` for the "
                                     "watermark.")
    name: str
    kind: str
    owner: str
    score: float
    p_value: float | None = Field(description="The strongest evidence's p-value, or null.")
    flagged: bool = Field(description="Whether this match blocks.")
    evidence: list[GuardEvidence]


class GuardCopy(_Out):
    ref_id: int = Field(description="The registered image's id.")
    source: str | None
    concepts: list[str] = Field(description="Concepts this image is a reference of.")
    p_value: float | None = Field(description="Null on an uncalibrated collection.")
    score: float
    inliers: int = Field(ge=0)
    query_region: list[list[float]] | None = Field(
        description="The reference's outline in the upload's pixels. " + _REGION)
    region: list[list[float]] | None = Field(
        description="The upload's outline in the reference's pixels. " + _REGION)
    decision: Literal["review", "block"]


class GuardManifest(_Out):
    state: str = Field(description="c2pa's validation: trusted, valid, invalid, remote, "
                                   "unsupported, unreadable.")
    signer: str | None
    issuer: str | None
    generator: str | None = Field(description="The claim generator (unauthenticated).")
    own: bool = Field(description="Signed by the service or a listed own signer: not "
                                  "evidence.")
    declared: list[str] = Field(description="Texts of its ingredients and assertions.")
    fingerprints: list[str] = Field(description="PDQ soft bindings, hex.")


class GuardImageResult(_Out):
    """:meth:`tracemark.guard.image.ImageScreening.to_dict`."""

    decision: Decision
    reasons: list[str]
    matches: list[GuardConceptMatch]
    copies: list[GuardCopy]
    watermark: dict[str, Any] | None = Field(description="present, p_value, score, payload "
                                                         "(hex), method; null: not checked.")
    manifest: GuardManifest | None = Field(description="Null when the upload has none.")
    alpha: float
    watermark_alpha: float
    checks: dict[str, str] = Field(description="copy, watermark, manifest: ``ran`` or why "
                                               "skipped.")
    seconds: float


_ERRORS = {401: {"description": "Missing or unknown API key"},
           403: {"description": "The key may not read the collection"},
           404: {"description": "UnknownCollection"},
           413: {"description": "Upload too large (bytes or pixels)"},
           415: {"description": "Empty, corrupt or unsupported image"},
           422: {"description": "Bad form value, or an image too small"}}


def _service_signers(creds: Any) -> list[str]:
    """The service's own signing certificate's common name and organisation."""
    if creds is None:
        return []
    return [m.group(1) for m in re.finditer(r"(?:^|,)(?:CN|O)=((?:\\.|[^,])+)", creds.subject)]


def _concepts(text: str | None) -> list[Any]:
    from tracemark.guard import Concept

    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GuardInputError(f"concepts: not JSON ({exc})") from exc
    if not isinstance(data, list):
        raise GuardInputError("concepts must be a JSON array of concept objects")
    return [Concept.from_dict(d) for d in data]


def guard_image_router(state: Any) -> APIRouter:
    """The output-screening route (module docstring) over the service state ``state``
    (:class:`tracemark.service.app._State`), mounted under ``/v1``."""
    router = APIRouter(tags=["guard"])
    settings = state.settings

    @router.post("/collections/{name}/guard/image", response_model=GuardImageResult,
                 responses=_ERRORS,
                 summary="Screen a generated image: one decision and its evidence.")
    async def guard_image(
            name: str, key: Key, image: Upload,
            alpha: Annotated[float | None, Form(gt=0, lt=0.1, description=(
                "Copy decision's false-positive rate [default: the collection's]"))] = None,
            own_signers: Annotated[str, Form(max_length=2000, description=(
                "Other own signers, comma-separated (besides the service's)"))] = "",
            concepts: Annotated[str | None, Form(max_length=1_000_000, description=(
                "JSON array of concept objects, instead of the collection's registered "
                "concepts"))] = None) -> dict[str, Any]:
        """Screen the upload (module docstring): ``block`` when a copy is significant, the
        collection's watermark is present or a foreign valid manifest declares a protected
        work; ``review`` on weak evidence; ``allow`` otherwise."""
        allow(key, name, write=False)
        data = await read_limited(image, settings.max_upload_bytes)
        try:
            listed = _concepts(concepts)
        except GuardInputError as exc:
            raise ApiError(422, "GuardInputError", exc.message) from None
        signers = _service_signers(state.creds) + [s.strip() for s in own_signers.split(",")
                                                   if s.strip()]

        def work(_job: Job) -> dict[str, Any]:
            from tracemark.guard.image import screen_image

            with state.reading(name) as store:
                if concepts is None:  # the collection's own concepts
                    from tracemark.guard import ConceptRegistry

                    chosen = ConceptRegistry(store).list()
                else:
                    chosen = listed
                try:
                    res = screen_image(data, store.index, concepts=chosen,
                                       key=store.watermark_key, method=store.watermark_method,
                                       own_signers=signers, trust_pem=state.trust_pem,
                                       allowed_pem=state.allowed_pem, alpha=alpha,
                                       max_pixels=settings.max_pixels, formats=settings.formats)
                except ConfigError as exc:
                    raise ApiError(422, "ConfigError", exc.message) from None
            return res.to_dict()
        return await state.run(work, weight=upload_weight(data, settings))

    return router
