"""The generation guard: keep a generator from drawing protected characters, artworks,
artists' styles, brands and people, before it draws (prompt screening) and after (output
screening).

* :mod:`~tracemark.guard.types` — the vocabulary: :class:`Concept`, :class:`Prompt`,
  :class:`PromptSet`, :class:`Evidence`, :class:`ConceptMatch`, :class:`PromptScreening`.
* :mod:`~tracemark.guard.registry` — :class:`ConceptRegistry`, a collection's protected
  concepts, kept with its metadata.

See docs/guard.md.
"""

from tracemark.guard.registry import ConceptRegistry
from tracemark.guard.types import (
    Concept,
    ConceptKind,
    ConceptMatch,
    Evidence,
    Prompt,
    PromptScreening,
    PromptSet,
    concept_id,
)

__all__ = ["Concept", "ConceptKind", "ConceptMatch", "ConceptRegistry", "Evidence", "Prompt",
           "PromptScreening", "PromptSet", "concept_id"]
