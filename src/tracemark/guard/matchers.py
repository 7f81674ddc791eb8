"""The base of the guard's prompt matchers, and their one registry.

A matcher is built once over the registered concepts (it precomputes what it needs:
normalised names, trait embeddings) and then answers :meth:`Matcher.match` for each
request: the concepts the request's prompts point at, each with the matcher's raw score
and its evidence. Matchers do not decide: calibration turns scores into p-values on
benign prompts and the screen decides (:mod:`tracemark.guard.screen`). Concrete matchers
register with :func:`register_matcher`; tests run the same conformance checks on each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, TypeVar

from tracemark.errors import ConfigError
from tracemark.guard.types import Concept, ConceptMatch, PromptSet

__all__ = ["Matcher", "MATCHERS", "register_matcher", "matcher_class"]


class Matcher(ABC):
    """Finds protected concepts in the prompts of one request.

    ``name``: the registry name. ``optional_extra``: the extra a matcher needs beyond the
    core (``guard`` for the semantic model), or None. Subclasses implement
    :meth:`_prepare` (called once with the concepts) and :meth:`_match`."""

    name: ClassVar[str]
    optional_extra: ClassVar[str | None] = None

    def __init__(self, concepts: Sequence[Concept]) -> None:
        if not all(isinstance(c, Concept) for c in concepts):
            raise ConfigError("a matcher takes Concept records")
        ids = [c.id for c in concepts]
        if len(set(ids)) != len(ids):
            raise ConfigError("concept ids must be unique")
        self.concepts: tuple[Concept, ...] = tuple(concepts)
        self._prepare()

    def _prepare(self) -> None:  # noqa: B027 - an optional hook
        """Precompute what :meth:`_match` needs from :attr:`concepts`."""

    def match(self, prompts: PromptSet) -> list[ConceptMatch]:
        """The concepts ``prompts`` point at, unflagged, with this matcher's raw score
        (higher: more certainly the concept) and evidence; concepts with no evidence are
        left out. Raises :class:`~tracemark.errors.GuardInputError` for a malformed
        request."""
        if not isinstance(prompts, PromptSet):
            from tracemark.errors import GuardInputError

            raise GuardInputError(f"match takes a PromptSet, got {type(prompts).__name__}")
        if not self.concepts:
            return []
        return self._match(prompts)

    @abstractmethod
    def _match(self, prompts: PromptSet) -> list[ConceptMatch]:
        """:meth:`match` on a valid request and a non-empty concept list."""


MATCHERS: dict[str, type[Matcher]] = {}
"""Registered matchers by name."""

M = TypeVar("M", bound=type[Matcher])


def register_matcher(cls: M) -> M:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if cls.name in MATCHERS and MATCHERS[cls.name] is not cls:
        raise ConfigError(f"a matcher named {cls.name!r} is already registered")
    MATCHERS[cls.name] = cls
    return cls


def matcher_class(name: str) -> type[Matcher]:
    """The matcher registered as ``name``; :class:`~tracemark.errors.ConfigError` names the
    known ones otherwise."""
    try:
        return MATCHERS[name]
    except KeyError:
        raise ConfigError(f"unknown matcher {name!r}; known: {', '.join(sorted(MATCHERS))}") \
            from None


