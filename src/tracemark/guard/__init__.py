"""The generation guard: keep a generator from drawing protected characters, artworks,
artists' styles, brands and people, before it draws (prompt screening) and after (output
screening).

* :mod:`~tracemark.guard.types` — the vocabulary: :class:`Concept`, :class:`Prompt`,
  :class:`PromptSet`, :class:`Evidence`, :class:`ConceptMatch`, :class:`PromptScreening`.
* :mod:`~tracemark.guard.registry` — :class:`ConceptRegistry`, a collection's protected
  concepts, kept with its metadata, and their prompt screen;
* :mod:`~tracemark.guard.lexical`, :mod:`~tracemark.guard.semantic` — the prompt matchers
  (names and their disguises; traits, with the ``guard`` extra's sentence model), behind
  :mod:`~tracemark.guard.matchers`' base and registry;
* :mod:`~tracemark.guard.screen` — :class:`Guard`: calibration on benign prompts
  (:mod:`~tracemark.guard.background`), the decision, and :mod:`~tracemark.guard.mitigate`'s
  rewrite; :mod:`~tracemark.guard.syntax` reads generator prompt syntax.

See docs/guard.md.
"""

from tracemark.guard.registry import ConceptRegistry
from tracemark.guard.screen import DEFAULT_ALPHA, Guard, GuardCalibration
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

__all__ = ["DEFAULT_ALPHA", "Concept", "ConceptKind", "ConceptMatch", "ConceptRegistry",
           "Evidence", "Guard", "GuardCalibration", "Prompt", "PromptScreening", "PromptSet",
           "concept_id"]
