"""The generation guard over HTTP: a collection's protected concepts.

* ``GET /v1/collections/{name}/concepts``: every concept (:class:`~tracemark.service.models.
  ConceptList`, with the registry's change stamp);
* ``POST /v1/collections/{name}/concepts``: register one (a JSON :class:`ConceptIn`; 201
  with its record; ``?replace=true`` replaces a concept of the same id);
* ``GET /v1/collections/{name}/concepts/{concept_id}``: one concept;
* ``DELETE /v1/collections/{name}/concepts/{concept_id}``: remove one (its reference
  images stay registered: remove them through ``/images``).

The concepts are kept with the collection's metadata (:class:`tracemark.guard.
ConceptRegistry`), so every replica sharing the collection's database serves them; a
write is committed before it is answered, as every collection write. A concept's
``references`` are ids of images registered in the collection (``POST .../images``);
removed images are left out of the answers.

Auth as every collection route: a key that may read the collection (GET) or write it
(POST, DELETE); 401, 403. Errors: 404 ``UnknownCollection``, 404 ``UnknownConcept`` (no
concept of that id), 404 ``UnknownImage`` (a reference id that is not a registered image of
the collection), 409 ``ConceptExists`` (that id is registered and ``replace`` was not
asked), 422 ``ValidationError`` (a body outside the schema: unknown field, unknown kind,
too many aliases...) or ``GuardInputError`` (a name of spaces only, control characters).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from tracemark.errors import (
    ConceptExistsError,
    GuardInputError,
    ReferenceNotFoundError,
    UnknownConceptError,
)
from tracemark.guard import Concept, ConceptRegistry
from tracemark.guard.types import MAX_ALIASES, MAX_NAME_CHARS, MAX_TRAITS
from tracemark.service import models as m
from tracemark.service.app import ApiError, Key, allow
from tracemark.service.jobs import Job

__all__ = ["concepts_router", "ConceptIn"]

_TEXT = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
"""Text with a character that is not a space, and no control character (Unicode Cc)."""
CONCEPT_ID = r"^[a-z0-9][a-z0-9-]{0,119}$"
"""A concept id (:func:`tracemark.guard.concept_id`)."""
MAX_REFERENCES = 256
"""The most reference images one concept names through the service."""

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=_TEXT)]
Trait = Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]


class ConceptIn(BaseModel):
    """A concept to register (:class:`tracemark.guard.Concept`); unknown fields are
    refused."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="The concept's name.")
    kind: m.ConceptKindName = Field("character", description="What the concept is.")
    owner: str = Field("", max_length=MAX_NAME_CHARS, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
                       description="Who holds the rights.")
    aliases: list[Name] = Field(default_factory=list, max_length=MAX_ALIASES,
                                description="Other names and spellings, any script.")
    traits: list[Trait] = Field(default_factory=list, max_length=MAX_TRAITS,
                                description="Distinctive traits, short phrases.")
    generic: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")] = Field(
        "", description="What a rewritten prompt says instead of the concept (empty: from "
                        "the kind).")
    references: list[Annotated[int, Field(ge=1, lt=2**62)]] = Field(
        default_factory=list, max_length=MAX_REFERENCES,
        description="Ids of images registered in the collection (POST .../images).")
    id: str | None = Field(None, pattern=CONCEPT_ID,
                           description="The concept's id; default: derived from the name.")


ConceptId = Annotated[str, PathParam(pattern=CONCEPT_ID, description="A concept's id.")]


def _unknown(name: str, concept_id: str) -> ApiError:
    return ApiError(404, "UnknownConcept", f"no concept {concept_id!r} in {name!r}")


def concepts_router(state: Any) -> APIRouter:
    """The concept routes (module docstring) over the service state ``state``
    (:class:`tracemark.service.app._State`), mounted under ``/v1``."""
    router = APIRouter(tags=["guard"])

    @router.get("/collections/{name}/concepts", response_model=m.ConceptList)
    async def list_concepts(name: str, key: Key) -> dict[str, Any]:
        """The collection's protected concepts, by id, and the registry's change stamp."""
        allow(key, name, write=False)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                registry = ConceptRegistry(store)
                return {"concepts": [c.to_dict() for c in registry.list()],
                        "stamp": registry.stamp()}
        return await state.run(work)

    @router.post("/collections/{name}/concepts", status_code=201, response_model=m.ConceptRecord,
                 responses={201: {"description": "Registered (committed)"},
                            404: {"description": "UnknownCollection, or UnknownImage (a "
                                               "reference that is not a registered image)"},
                            409: {"description": "ConceptExists: that id is registered "
                                               "(replace=true replaces it)"}})
    async def add_concept(name: str, body: ConceptIn, key: Key,
                          replace: Annotated[bool, Query(description="Replace a concept of "
                                                         "the same id.")] = False
                          ) -> dict[str, Any]:
        """Register a protected concept in the collection."""
        allow(key, name, write=True)
        try:
            concept = Concept.from_dict(body.model_dump(exclude_none=True))
        except GuardInputError as exc:
            raise ApiError(422, "GuardInputError", exc.message) from None

        def work(job: Job) -> dict[str, Any]:
            with state.writing(name, job) as entry:
                try:
                    added = ConceptRegistry(entry.store).add(concept, replace=replace)
                except ConceptExistsError as exc:
                    raise ApiError(409, "ConceptExists", exc.message) from None
                except ReferenceNotFoundError as exc:
                    raise ApiError(404, "UnknownImage", exc.message) from None
                state.commit(entry, job)
            return added.to_dict()
        return await state.run(work)

    @router.get("/collections/{name}/concepts/{concept_id}", response_model=m.ConceptRecord,
                responses={404: {"description": "UnknownCollection or UnknownConcept"}})
    async def get_concept(name: str, concept_id: ConceptId, key: Key) -> dict[str, Any]:
        """One protected concept."""
        allow(key, name, write=False)

        def work(_job: Job) -> dict[str, Any]:
            with state.reading(name) as store:
                try:
                    return ConceptRegistry(store).get(concept_id).to_dict()
                except UnknownConceptError:
                    raise _unknown(name, concept_id) from None
        return await state.run(work)

    @router.delete("/collections/{name}/concepts/{concept_id}", response_model=m.ConceptRemoved,
                   responses={404: {"description": "UnknownCollection or UnknownConcept"}})
    async def remove_concept(name: str, concept_id: ConceptId, key: Key) -> dict[str, Any]:
        """Remove a protected concept (its reference images stay registered)."""
        allow(key, name, write=True)

        def work(job: Job) -> dict[str, Any]:
            with state.writing(name, job) as entry:
                try:
                    ConceptRegistry(entry.store).remove(concept_id)
                except UnknownConceptError:
                    raise _unknown(name, concept_id) from None
                state.commit(entry, job)
            return {"removed": concept_id}
        return await state.run(work)

    return router
