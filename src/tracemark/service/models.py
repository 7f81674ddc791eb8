"""The HTTP API's JSON bodies as pydantic models: what the OpenAPI schema says each route
returns (``/openapi.json``), field by field.

Every JSON route of :mod:`tracemark.service.app` declares one of these as its
``response_model``, so that the schema states which fields are always there (required),
which may be ``null`` (nullable), the closed sets of values (enums) and the units (in the
descriptions); FastAPI validates each answer against it. The wire format is the one the
routes answered before the models existed (same keys, same values): the models describe the
dicts the library builds (:meth:`tracemark.copydetect.Match.to_dict`,
:meth:`tracemark.credentials.VerifyResult.to_dict`,
:meth:`tracemark.credentials.ManifestRecord.summary`, :class:`tracemark.index.Reference`,
:meth:`tracemark.copydetect.CopyIndex.calibrate`), and ``tests/test_service_schema.py``
checks every answer against the schema (schemathesis' ``response_schema_conformance``).

A value added to one of the enums below (a new verification state, say) must be added here
too: an answer outside the model is a server error (500), not a silent change of contract.
The error body is :class:`tracemark.service.app.ErrorBody`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Health",
    "CollectionCreated",
    "CollectionList",
    "CollectionDeleted",
    "CollectionStats",
    "ImageAdded",
    "ImageRecord",
    "ImageList",
    "ImageRemoved",
    "Calibration",
    "CopyMatch",
    "SearchResult",
    "Detection",
    "Verification",
    "ManifestDetail",
    "VerifyState",
    "Route",
    "SignatureState",
    "ConceptKindName",
    "ConceptRecord",
    "ConceptList",
    "ConceptRemoved",
]

VerifyState = Literal["trusted", "valid", "invalid", "remote", "unsupported", "recovered",
                      "not_found"]
"""``Verification.state`` (:class:`tracemark.credentials.VerifyResult`)."""
Route = Literal["embedded", "sidecar", "remote", "watermark", "fingerprint"]
"""How a manifest was found: in the file, in a ``.c2pa`` sidecar, fetched from the URL the
file names, through the watermark, through the fingerprint. The service reads neither
sidecars nor remote manifests: it answers ``embedded``, ``watermark`` or ``fingerprint``."""
SignatureState = Literal["trusted", "valid", "invalid"]
"""A recovered manifest's own signature, validated as a sidecar of the file."""
ManifestState = Literal["pending", "active"]
"""A stored manifest: ``pending`` while its signing runs, ``active`` once signed."""

_STORE_ID = Field(description="The collection's store identifier (a UUID4 string): a "
                              "collection created again under the same name has a new one.")
_REGION = ("Four ``[x, y]`` corners in pixels (floats), or null when the match has no "
           "geometric verification.")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Health(_Out):
    status: Literal["ok"] = Field(description="Always ``ok`` when the service answers.")
    version: str = Field(description="The tracemark version serving.")
    collections: int = Field(ge=0, description="How many collections exist.")
    signing: bool = Field(description="Whether the service can sign (started with a "
                                      "certificate and key).")


class CollectionCreated(_Out):
    name: str = Field(description="The new collection's name.")
    store_id: str = _STORE_ID


class CollectionList(_Out):
    collections: list[str] = Field(description="Names of the collections the API key may "
                                                "read, sorted.")


class CollectionDeleted(_Out):
    deleted: str = Field(description="The deleted collection's name.")


class CollectionStats(_Out):
    name: str
    manifests: int = Field(ge=0, description="Stored manifests (signed images).")
    images: int = Field(ge=0, description="Registered images (fingerprints).")
    store_id: str = _STORE_ID


class ImageAdded(_Out):
    ref_id: int = Field(ge=1, description="The registered image's reference id (the "
                                          "existing one for a duplicate).")
    duplicate_of: int | None = Field(description="The reference whose pixels are the same "
                                                 "(nothing was added), else null.")
    store_id: str = _STORE_ID


class ImageRecord(_Out):
    """A registered image (:class:`tracemark.index.Reference`)."""

    id: int = Field(ge=1, description="Reference id.")
    content_hash: str = Field(description="SHA-256 (hex) of the decoded pixels.")
    source: str | None = Field(description="The upload's file name or the given source.")
    owner: str | None
    license: str | None
    notes: str | None
    added_at: str = Field(description="When it was registered, UTC ISO 8601.")


class ImageList(_Out):
    images: list[ImageRecord] = Field(description="In id order, ``limit`` from ``offset``.")


class ImageRemoved(_Out):
    removed: int = Field(ge=1, description="The removed reference id.")


class Calibration(_Out):
    """The learnt background (:meth:`tracemark.copydetect.decide.NullModel.summary`) and
    what was used."""

    background_rows: int = Field(ge=0, description="Descriptor rows of the normalisation "
                                                   "background.")
    null_samples: int = Field(ge=0, description="Null-distribution samples (best raw "
                                                "scores of background searches).")
    null_quantiles: dict[str, float] = Field(
        description="Quantiles of the null samples, keyed by the quantile (``0.5``, "
                    "``0.9``, ``0.99``, ``1.0``); empty without samples.")
    smallest_supported_p_value: float | None = Field(
        description="The smallest p-value the samples measure (1 / (samples + 1)), or null.")
    recommended_background: int = Field(ge=1, description="Background images recommended "
                                                          "for the default alpha.")
    warning: str | None = Field(default=None, description="Present when the samples are too "
                                "few to measure the default alpha's p-values.")
    used: int = Field(ge=0, description="Background images used.")
    failed: int = Field(ge=0, description="Uploads that could not be read as images.")
    in_collection: int = Field(ge=0, description="Uploads left out: registered references.")


class CopyMatch(_Out):
    """One ranked copy-detection match (:class:`tracemark.copydetect.Match`)."""

    ref_id: int = Field(description="The matched reference's id.")
    source: str | None = Field(description="The reference's source, as registered.")
    score: float = Field(description="Calibrated: 1 - p-value; uncalibrated: the "
                                     "normalised score (higher: more certainly a copy).")
    p_value: float | None = Field(description="Against the collection's calibrated "
                                              "background; null when uncalibrated.")
    raw_score: float = Field(description="The score before calibration.")
    inliers: int = Field(ge=0, description="Geometrically verified keypoint matches.")
    similarity: float = Field(description="Descriptor similarity (max inner product over "
                                          "region rows), before normalisation.")
    pdq_distance: int | None = Field(description="PDQ Hamming distance, bits of 256; null "
                                                 "when not computed.")
    region: list[list[float]] | None = Field(description="The query's outline in the "
                                             "reference's pixels. " + _REGION)
    query_region: list[list[float]] | None = Field(description="The reference's outline in "
                                                   "the query's pixels. " + _REGION)
    flipped: bool = Field(description="The copy is mirrored.")
    decision: bool = Field(description="Whether this match counts as a copy.")
    transform: list[list[float]] | None = Field(
        default=None, description="3x3 row-major transform from query pixels to reference "
                                  "pixels, or null.")
    reference_size: list[int] | None = Field(
        default=None, description="The reference's ``[width, height]`` in pixels, or null.")


class SearchResult(_Out):
    matches: list[CopyMatch] = Field(description="Best first, at most ``k``.")


class Detection(_Out):
    present: bool | None = Field(description="Whether the collection's watermark is there; "
                                             "null when the method cannot tell.")
    payload: int | None = Field(ge=0, le=2**64 - 1, description="The 64-bit payload read, or "
                                                                "null.")
    payload_hex: str | None = Field(pattern="^0x[0-9a-f]{16}$",
                                    description="The payload's 8 bytes in hex, or null.")
    p_value: float | None = Field(description="Calibrated p-value of the detection (smaller: "
                                              "more certainly marked), or null.")
    score: float = Field(description="The detector's raw score.")


class Verification(_Out):
    """What ``verify`` found (:class:`tracemark.credentials.VerifyResult`)."""

    source: str = Field(description="Always ``upload`` in the service.")
    state: VerifyState = Field(description="``trusted``/``valid``/``invalid``: c2pa's own "
                               "validation state of the embedded manifest (``valid``: signed "
                               "and intact, the signer not trusted); ``remote``: the file names "
                               "a remote manifest (``remote_url``), which the service never "
                               "fetches; ``unsupported``: a manifest c2pa does not validate "
                               "(its code in ``codes.failure``); ``recovered``: found through "
                               "the watermark or the fingerprint; ``not_found``.")
    route: Route | None = Field(description="Where the manifest came from, or null.")
    confidence: float | None = Field(description="In [0, 1]: 1.0 embedded, 1 - p-value for "
                                     "the watermark, the copy score for the fingerprint.")
    manifest_id: int | None = Field(description="The collection's manifest id, or null.")
    label: str | None = Field(description="The manifest's C2PA label, or null.")
    codes: dict[str, list[str]] = Field(description="c2pa validation codes by kind "
                                        "(``success``, ``informational``, ``failure``).")
    manifest: dict[str, Any] | None = Field(description="The manifest store as c2pa reads "
                                            "it (JSON), or null.")
    signature: SignatureState | None = Field(description="A recovered manifest's own "
                                             "signature state, or null.")
    recovered: dict[str, Any] | None = Field(description="Beside an invalid embedded "
                                             "manifest: what the watermark or fingerprint "
                                             "names, or null.")
    evidence: dict[str, Any] = Field(description="What each route saw (free-form).")
    seconds: float = Field(ge=0, description="Time taken, seconds.")
    c2pa_state: str | None = Field(
        description="c2pa's validation state as c2pa-python's Reader gives it (``Trusted``, "
                    "``Valid``, ``Invalid``), or null when c2pa read no manifest.")
    remote_url: str | None = Field(description="The remote manifest's URL the file names "
                                   "(state ``remote``), or null.")


class ManifestDetail(_Out):
    """A stored manifest (:meth:`tracemark.credentials.ManifestRecord.summary`) with its
    JSON."""

    id: int = Field(ge=1)
    state: ManifestState
    created_at: str = Field(description="UTC ISO 8601.")
    label: str | None = Field(description="The C2PA label; null while pending.")
    title: str | None
    author: str | None
    ai_generated: bool
    source_type: str | None = Field(description="The IPTC digital source type (a name such "
                                    "as ``trainedAlgorithmicMedia``) the image was created "
                                    "with; null for an edit, and for a signing recorded "
                                    "before stores kept it.")
    media_type: str | None = Field(description="The signed file's media type.")
    ref_id: int | None = Field(description="The fingerprint reference of the signed image.")
    file_sha256: str | None = Field(description="SHA-256 (hex) of the signed file.")
    signer: str | None = Field(description="The signing certificate's subject.")
    manifest: dict[str, Any] | None = Field(description="The manifest store's JSON; null "
                                            "while pending.")


ConceptKindName = Literal["character", "artwork", "style", "brand", "person"]
"""A protected concept's kind (:class:`tracemark.guard.ConceptKind`)."""


class ConceptRecord(_Out):
    """A protected concept (:meth:`tracemark.guard.Concept.to_dict`)."""

    id: str = Field(description="The concept's id: lower-case ASCII letters, digits and -, "
                                "derived from the name unless given.")
    name: str
    kind: ConceptKindName
    owner: str = Field(description="Who holds the rights (empty when not given).")
    aliases: list[str] = Field(description="Other names and spellings, any script.")
    traits: list[str] = Field(description="Distinctive traits, short phrases.")
    generic: str = Field(description="What a rewritten prompt says instead (empty: from the "
                                     "kind).")
    references: list[int] = Field(description="Ids of the concept's reference images in the "
                                              "collection (removed images left out).")


class ConceptList(_Out):
    concepts: list[ConceptRecord] = Field(description="Every concept of the collection, by id.")
    stamp: str = Field(description="The registry's change stamp: changes with every add, "
                                   "replace and remove; empty before the first.")


class ConceptRemoved(_Out):
    removed: str = Field(description="The removed concept's id.")
