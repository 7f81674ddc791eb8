"""Mitigation: a flagged request rewritten so a generator can draw what the user asked for
without the protected concept, and the terms for its negative prompt.

Published concept-erasure evaluations find that rewriting the prompt and adding the name
and distinctive keywords to the negative prompt removes most generations of a protected
character at little cost to the rest of the prompt; this module does both, as pure
functions over the matchers' evidence (spans in the prompts' texts).
"""

from __future__ import annotations

import re

from tracemark.errors import GuardInputError
from tracemark.guard.types import Concept, ConceptKind, ConceptMatch, PromptSet

__all__ = ["mitigate", "generic_for", "DEFAULT_GENERIC"]

DEFAULT_GENERIC: dict[ConceptKind, str] = {
    ConceptKind.CHARACTER: "an original character",
    ConceptKind.ARTWORK: "an original artwork",
    ConceptKind.STYLE: "an original style",
    ConceptKind.BRAND: "a generic brand",
    ConceptKind.PERSON: "a person",
}
"""What replaces a concept with no ``generic`` of its own, by kind."""

_ARTICLE_BEFORE = re.compile(r"(?i)\b(a|an|the)\s+$")
_ARTICLE = re.compile(r"(?i)^(a|an|the)\s+")


def generic_for(concept: Concept) -> str:
    """The words that stand in for ``concept``: its ``generic`` or its kind's default."""
    return concept.generic or DEFAULT_GENERIC[concept.kind]


def mitigate(prompts: PromptSet, matches: list[ConceptMatch]) -> tuple[str, list[str]]:
    """The positive prompts with every matched span replaced, and the negative terms.

    ``matches``: the matches to mitigate (typically the flagged ones), with evidence spans
    in ``prompts``' texts (evidence without a span or a prompt index is skipped). A span of
    a name, alias, misspelling or split name becomes the concept's :func:`generic_for`
    (an article before it is dropped when the generic brings its own; ``'s`` after it
    stays); a trait span (semantic evidence) becomes the generic when the prompt names the
    concept nowhere else, and is removed otherwise; the second part of a name split across
    prompts is removed. Whitespace and punctuation left behind are tidied. The rewritten
    positive prompts are joined with ``", "`` in order (weights are not written back).

    Returns ``(rewritten, negative)``: ``negative`` lists each matched concept's name,
    aliases and traits, once each, concepts in the order of ``matches``. Raises
    :class:`~tracemark.errors.GuardInputError` for a span outside its prompt."""
    if not isinstance(prompts, PromptSet):
        raise GuardInputError(f"mitigate takes a PromptSet, got {type(prompts).__name__}")
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for m in matches:
        generic = generic_for(m.concept)
        named_in: set[int] = set()
        spans = sorted((e for e in m.evidence if e.span is not None and e.prompt is not None),
                       key=lambda e: (e.how == "trait", e.prompt, e.span))
        for e in spans:
            if e.span is None or e.prompt is None:
                continue
            if not 0 <= e.prompt < len(prompts.prompts):
                raise GuardInputError(f"evidence names prompt {e.prompt} of "
                                      f"{len(prompts.prompts)}")
            text = prompts.prompts[e.prompt].text
            start, end = e.span
            if not 0 <= start <= end <= len(text):
                raise GuardInputError(f"evidence span {e.span} is outside its prompt")
            continuation = (e.how == "split" and not text[:start].strip()
                            and any(k.prompt is not None and k.prompt < e.prompt
                                    and k.how == "split" for k in spans))
            replace = "" if continuation or (e.how == "trait" and e.prompt in named_in) \
                else generic
            if replace:
                named_in.add(e.prompt)
            edits.setdefault(e.prompt, []).append((start, end, replace))
    rewritten = []
    for index, p in enumerate(prompts.prompts):
        if p.steers_away:
            continue
        out = _apply(p.text, edits.get(index, []))
        if out:
            rewritten.append(out)
    negative: list[str] = []
    seen: set[str] = set()
    for m in matches:
        for term in (*m.concept.names, *m.concept.traits):
            if term.casefold() not in seen:
                seen.add(term.casefold())
                negative.append(term)
    return ", ".join(rewritten), negative


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    # merge overlapping spans: the first (widest) replacement wins
    merged: list[list] = []
    for start, end, rep in sorted(edits, key=lambda x: (x[0], -x[1])):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = merged[-1][2] or rep
        else:
            merged.append([start, end, rep])
    out = text
    for start, end, rep in reversed(merged):
        before, after = out[:start], out[end:]
        if rep and _ARTICLE.match(rep) and _ARTICLE_BEFORE.search(before):
            before = _ARTICLE_BEFORE.sub("", before)
        if rep and not before.strip():
            rep = rep[0].upper() + rep[1:] if text[:1].isupper() else rep
        out = before + rep + after
    return _tidy(out)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(\s*[,;:])+", r"\1", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    text = re.sub(r"\b(a|an|the)\s+(a|an|the)\b", r"\2", text, flags=re.I)
    return text.strip(" ,;:")
