"""The protected-concept registry: the concepts of a copy-detection collection, kept with
the collection's metadata (SQLite or PostgreSQL).

Each concept is one document of the collection's index (:meth:`tracemark.index.Index.
put_document`) named ``guard.concept.<id>``, holding UTF-8 JSON::

    {"format": "tracemark-concept", "version": 1, "concept": Concept.to_dict()}

and the document ``guard.concepts`` holds the registry's change stamp (32 hex digits,
drawn anew by every add, replace and remove). Readers refuse a version newer than
:data:`CONCEPT_FORMAT_VERSION` (:class:`~tracemark.errors.IndexFormatError`).

Lifecycle: the registry is a view of its collection, not a resource of its own. Its writes
are part of the collection's open transaction (:mod:`tracemark._lifecycle`): committed with
the collection (``commit()``, ``close()``, a clean ``with`` exit), rolled back with it.

References: a concept's ``references`` are ids of images registered in the same
collection; adding a concept that names an unregistered id raises
:class:`~tracemark.errors.ReferenceNotFoundError`. Removing an image *prunes* it from the
concepts: :meth:`ConceptRegistry.get` and :meth:`~ConceptRegistry.list` never answer an id
that is no longer registered (reference ids are never reused: ``refs.id`` is
``AUTOINCREMENT`` in SQLite and a sequence in PostgreSQL, so a pruned id cannot come back
naming another image), and :meth:`ConceptRegistry.prune` rewrites the stored documents.
Image removals do not change the stamp (prompt matchers do not read references).
"""

from __future__ import annotations

import builtins
import json
import secrets
from typing import TYPE_CHECKING, Any

from tracemark.errors import (
    ConceptExistsError,
    GuardInputError,
    IndexFormatError,
    ReferenceNotFoundError,
    UnknownConceptError,
)
from tracemark.guard.types import Concept

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tracemark.copydetect import CopyIndex
    from tracemark.credentials import CredentialStore
    from tracemark.guard.screen import Guard, GuardCalibration
    from tracemark.index import Index

__all__ = ["ConceptRegistry", "CONCEPT_PREFIX", "STAMP_DOC", "CALIBRATION_DOC",
           "CONCEPT_FORMAT", "CONCEPT_FORMAT_VERSION"]

CONCEPT_PREFIX = "guard.concept."
"""Name prefix of the concept documents: ``guard.concept.<id>``."""
STAMP_DOC = "guard.concepts"
"""The document holding the registry's change stamp."""
CALIBRATION_DOC = "guard.calibration"
"""The prompt screen's calibration (:class:`~tracemark.guard.screen.GuardCalibration`)."""
CONCEPT_FORMAT = "tracemark-concept"
CONCEPT_FORMAT_VERSION = 1
"""The version of a concept document this tracemark writes and the newest it reads."""


def _index_of(collection: Any) -> Index:
    """The :class:`~tracemark.index.Index` holding a collection's metadata: the index
    itself, a :class:`~tracemark.copydetect.CopyIndex`'s, or a
    :class:`~tracemark.credentials.CredentialStore`'s (the service's collections)."""
    from tracemark.copydetect import CopyIndex
    from tracemark.index import Index

    if isinstance(collection, Index):
        return collection
    if isinstance(collection, CopyIndex):
        return collection.index
    from tracemark.credentials import CredentialStore

    if isinstance(collection, CredentialStore):
        return collection.index.index
    raise GuardInputError("a concept registry needs an Index, a CopyIndex or a "
                          f"CredentialStore, got {type(collection).__name__}")


class ConceptRegistry:
    """The protected concepts of one collection (module docstring: storage, lifecycle,
    references).

    ``collection``: an open :class:`~tracemark.index.Index`,
    :class:`~tracemark.copydetect.CopyIndex` or :class:`~tracemark.credentials.
    CredentialStore`; the registry uses it, never closes or commits it. Writes on a
    read-only collection raise :class:`~tracemark.errors.IndexReadOnlyError`; any use after
    the collection closed raises its closed error."""

    def __init__(self, collection: Index | CopyIndex | CredentialStore) -> None:
        self._index = _index_of(collection)

    # --- writes (part of the collection's open transaction) ---------------------------

    def add(self, concept: Concept, *, replace: bool = False) -> Concept:
        """Register ``concept``; returns it. Raises :class:`~tracemark.errors.
        ConceptExistsError` when its id is registered (unless ``replace``: the concept
        then takes the place of the registered one), :class:`~tracemark.errors.
        ReferenceNotFoundError` when a reference id is not an image of the collection,
        :class:`~tracemark.errors.GuardInputError` when ``concept`` is not a
        :class:`Concept`."""
        if not isinstance(concept, Concept):
            raise GuardInputError(f"add takes a Concept, got {type(concept).__name__}")
        index = self._index
        with index._mutex:  # the check and the write see the same state
            if not replace and index.document(_doc(concept.id)) is not None:
                raise ConceptExistsError(f"concept {concept.id!r} is registered (replace it "
                                         "or remove it first)", source=concept.id)
            for ref in concept.references:
                if ref not in index:
                    raise ReferenceNotFoundError(
                        f"concept {concept.id!r}: no image {ref} in the collection (register "
                        "the reference image first)", source=concept.id)
            index.put_document(_doc(concept.id), _encode(concept))
            self._touch()
        return concept

    def remove(self, concept_id: str) -> Concept:
        """Unregister the concept ``concept_id``; returns it. Raises
        :class:`~tracemark.errors.UnknownConceptError` when none is registered."""
        index = self._index
        with index._mutex:
            concept = self.get(concept_id)
            index.delete_document(_doc(concept.id))
            self._touch()
        return concept

    def prune(self) -> dict[str, builtins.list[int]]:
        """Rewrite the concepts whose references name removed images without them;
        ``{concept id: the removed ids}`` of those rewritten (the stamp is unchanged)."""
        index = self._index
        out: dict[str, builtins.list[int]] = {}
        with index._mutex:
            for name, raw in index.documents(CONCEPT_PREFIX).items():
                stored = _decode(raw, name)
                live = index.registered(stored.references)
                gone = [r for r in stored.references if r not in live]
                if gone:
                    kept = tuple(r for r in stored.references if r not in gone)
                    index.put_document(name, _encode(_with_refs(stored, kept)))
                    out[stored.id] = gone
        return out

    # --- reads ------------------------------------------------------------------------

    def get(self, concept_id: str) -> Concept:
        """The concept ``concept_id`` (references to removed images left out). Raises
        :class:`~tracemark.errors.UnknownConceptError` when none is registered (any str
        that is not a registered id, malformed ones included)."""
        if not isinstance(concept_id, str):
            raise GuardInputError(f"a concept id must be a str, got {type(concept_id).__name__}")
        name = _doc(concept_id)
        if len(name) > 256 or "\x00" in name or self._index.document(name) is None:
            raise UnknownConceptError(f"no concept {concept_id!r} is registered",
                                      source=concept_id)
        return self._present(self._load(name))

    def list(self) -> builtins.list[Concept]:
        """Every registered concept, by id (references to removed images left out)."""
        docs = self._index.documents(CONCEPT_PREFIX)
        if not docs:
            return []
        concepts = [_decode(raw, name) for name, raw in docs.items()]
        live = self._index.registered({r for c in concepts for r in c.references})
        return [self._present(c, live) for c in concepts]

    def __contains__(self, concept_id: object) -> bool:
        return isinstance(concept_id, str) and len(concept_id) <= 120 \
            and "\x00" not in concept_id and self._index.document(_doc(concept_id)) is not None

    def __len__(self) -> int:
        return len(self._index.document_names(CONCEPT_PREFIX))

    def stamp(self) -> str:
        """The change stamp: a str that changes with every add, replace and remove (the
        open transaction's included; a rolled-back write's stamp is never seen again), ``""``
        before the first. A matcher built over :meth:`list` keeps it and rebuilds when it
        differs."""
        raw = self._index.document(STAMP_DOC)
        return "" if raw is None else raw.decode("ascii", "replace")

    # --- the prompt screen ------------------------------------------------------------

    def calibration(self) -> GuardCalibration | None:
        """The stored calibration of the prompt screen (document :data:`CALIBRATION_DOC`),
        or None; it may be stale (:meth:`GuardCalibration.fits`)."""
        from tracemark.errors import ConfigError
        from tracemark.guard.screen import GuardCalibration

        raw = self._index.document(CALIBRATION_DOC)
        if raw is None:
            return None
        try:
            return GuardCalibration.from_bytes(raw)
        except ConfigError:
            return None  # a damaged or newer calibration is made again, never trusted

    def calibrate(self, matchers: Sequence[str] | None = None) -> Guard:
        """Calibrate the prompt screen of these concepts on the default benign background
        and store the calibration with the collection (part of the open transaction);
        returns the calibrated :class:`~tracemark.guard.screen.Guard`."""
        from tracemark.guard.screen import Guard

        guard = Guard(self.list(), matchers=matchers)
        self.keep_calibration(guard.calibrate())
        return guard

    def keep_calibration(self, calibration: GuardCalibration) -> None:
        """Store ``calibration`` (made elsewhere, e.g. by a cached
        :class:`~tracemark.guard.screen.Guard` of these concepts) with the collection, as
        :meth:`calibrate` does (part of the open transaction). Raises
        :class:`~tracemark.errors.ConfigError` when it was made for other concepts than
        the registered ones (they changed since)."""
        from tracemark.errors import ConfigError
        from tracemark.guard.screen import concepts_stamp

        if calibration.stamp != concepts_stamp(self.list()):
            raise ConfigError("this calibration was made for other concepts than the "
                              "registered ones (they changed since): calibrate again")
        self._index.put_document(CALIBRATION_DOC, calibration.to_bytes())

    def guard(self, matchers: Sequence[str] | None = None, *, alpha: float | None = None
              ) -> Guard:
        """The prompt screen of the registered concepts, with the stored calibration when
        it fits them and ``matchers`` (default :func:`~tracemark.guard.screen.
        default_matchers`); otherwise the guard calibrates in memory at its first screen
        (:meth:`calibrate` keeps one)."""
        from tracemark.guard.screen import DEFAULT_ALPHA, Guard, concepts_stamp, default_matchers

        concepts = self.list()
        names = list(matchers) if matchers is not None else default_matchers()
        cal = self.calibration()
        if cal is not None and not cal.fits(concepts_stamp(concepts), names):
            cal = None
        return Guard(concepts, matchers=names, calibration=cal,
                     alpha=DEFAULT_ALPHA if alpha is None else alpha)

    # --- internals --------------------------------------------------------------------

    def _touch(self) -> None:
        self._index.put_document(STAMP_DOC, secrets.token_hex(16).encode("ascii"))

    def _load(self, name: str) -> Concept:
        raw = self._index.document(name)
        if raw is None:  # removed meanwhile by another handle
            raise UnknownConceptError(f"no concept {name.removeprefix(CONCEPT_PREFIX)!r} is "
                                      "registered", source=name)
        return _decode(raw, name)

    def _present(self, concept: Concept, live: set[int] | None = None) -> Concept:
        """``concept`` without the references that are no longer registered images."""
        if live is None:
            live = self._index.registered(concept.references)
        kept = tuple(r for r in concept.references if r in live)
        return concept if kept == concept.references else _with_refs(concept, kept)


def _doc(concept_id: str) -> str:
    return CONCEPT_PREFIX + concept_id


def _with_refs(concept: Concept, refs: tuple[int, ...]) -> Concept:
    return Concept.from_dict({**concept.to_dict(), "references": list(refs)})


def _encode(concept: Concept) -> bytes:
    return json.dumps({"format": CONCEPT_FORMAT, "version": CONCEPT_FORMAT_VERSION,
                       "concept": concept.to_dict()}, ensure_ascii=False,
                      sort_keys=True).encode("utf-8")


def _decode(raw: bytes, name: str) -> Concept:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"concept document {name!r} is not UTF-8 JSON ({exc})",
                               source=name) from None
    if not isinstance(doc, dict) or doc.get("format") != CONCEPT_FORMAT \
            or not isinstance(doc.get("version"), int):
        raise IndexFormatError(f"document {name!r} is not a tracemark concept", source=name)
    if doc["version"] > CONCEPT_FORMAT_VERSION:
        raise IndexFormatError(f"concept document {name!r} has version {doc['version']}, "
                               f"newer than this tracemark reads (up to "
                               f"{CONCEPT_FORMAT_VERSION}); upgrade tracemark", source=name)
    try:
        return Concept.from_dict(doc.get("concept"))
    except GuardInputError as exc:
        raise IndexFormatError(f"concept document {name!r} is corrupt: {exc.message}",
                               source=name) from None
