"""A prompt-screening request as JSON: what ``tracemark guard prompt --from`` reads (one
object a line) and what the HTTP route's body holds besides the collections.

The shape (unknown keys are refused)::

    {"prompts": [PROMPT, ...], "negative": [TEXT, ...], "id": ID}   or   {"prompt": TEXT}

``PROMPT`` is a text (parsed for generator syntax, :func:`tracemark.guard.syntax.
parse_prompt`) or an object ``{"text", "weight", "negative"}``: its text is parsed the
same way, each part's weight multiplied by ``weight`` (default 1) and made negative when
``negative`` is true. ``negative`` (a text or a list of texts) are the negative prompts.
``id`` (a str of at most 200 characters, or an int) is echoed back. Every prompt of the
request is screened together (:class:`~tracemark.guard.types.PromptSet`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tracemark.errors import GuardInputError
from tracemark.guard.types import MAX_PROMPT_CHARS, MAX_PROMPTS, Prompt, PromptSet

__all__ = ["REQUEST_KEYS", "PROMPT_KEYS", "prompts_of", "request_of"]

REQUEST_KEYS = frozenset({"prompts", "prompt", "negative", "id"})
"""The keys a request object may have."""
PROMPT_KEYS = frozenset({"text", "weight", "negative"})
"""The keys a prompt object may have."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise GuardInputError(f"{what} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise GuardInputError(f"{what} is empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise GuardInputError(f"{what} is longer than {MAX_PROMPT_CHARS} characters "
                              f"({len(value)})")
    return value


def prompts_of(prompts: Any, negative: Any = None) -> PromptSet:
    """The :class:`PromptSet` of a request's ``prompts`` (a list of texts and prompt
    objects, module docstring) and ``negative`` (a text or a list of texts). Raises
    :class:`~tracemark.errors.GuardInputError` for an empty, blank or overlong text
    (longer than :data:`~tracemark.guard.types.MAX_PROMPT_CHARS`), a wrong type, an
    unknown key, no positive prompt, more than :data:`~tracemark.guard.types.MAX_PROMPTS`
    prompts (after parsing)."""
    from tracemark.guard.syntax import parse_prompt

    if isinstance(prompts, str) or not isinstance(prompts, list | tuple):
        raise GuardInputError("prompts must be a list of prompts")
    if not prompts:
        raise GuardInputError("no prompt to screen")
    if len(prompts) > MAX_PROMPTS:
        raise GuardInputError(f"more than {MAX_PROMPTS} prompts in one request")
    out: list[Prompt] = []
    for i, p in enumerate(prompts):
        if isinstance(p, dict):
            if unknown := set(p) - PROMPT_KEYS:
                raise GuardInputError(f"prompt {i}: unknown keys "
                                      f"{', '.join(sorted(map(str, unknown)))}")
            weight, neg = p.get("weight", 1.0), p.get("negative", False)
            if not isinstance(neg, bool):
                raise GuardInputError(f"prompt {i}: negative must be true or false")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise GuardInputError(f"prompt {i}: weight must be a number")
            parts = parse_prompt(_text(p.get("text"), f"prompt {i}'s text"))
            out.extend(replace(part, weight=part.weight * weight,
                               negative=part.negative or neg) for part in parts)
        else:
            out.extend(parse_prompt(_text(p, f"prompt {i}")))
    negs = [] if negative is None else [negative] if isinstance(negative, str) else negative
    if not isinstance(negs, list | tuple):
        raise GuardInputError("negative must be a text or a list of texts")
    for i, n in enumerate(negs):
        out.append(Prompt(_text(n, f"negative prompt {i}"), negative=True))
    if not any(p.text.strip() for p in out if not p.steers_away):
        raise GuardInputError("no positive prompt to screen")
    if len(out) > MAX_PROMPTS:
        raise GuardInputError(f"more than {MAX_PROMPTS} prompts in one request (after "
                              "parsing generator syntax)")
    return PromptSet(tuple(out))


def request_of(data: Any) -> tuple[PromptSet, str | int | None]:
    """A request object (module docstring) as ``(prompt set, its id or None)``. Raises
    :class:`~tracemark.errors.GuardInputError` for anything else: not an object, unknown
    keys, both or neither of ``prompt`` and ``prompts``, and :func:`prompts_of`'s
    errors."""
    if not isinstance(data, dict):
        raise GuardInputError(f"a request must be a JSON object, got {type(data).__name__}")
    if unknown := set(data) - REQUEST_KEYS:
        raise GuardInputError(f"unknown request keys: {', '.join(sorted(map(str, unknown)))} "
                              f"(known: {', '.join(sorted(REQUEST_KEYS))})")
    if ("prompt" in data) == ("prompts" in data):
        raise GuardInputError('a request has either "prompt" (a text) or "prompts" (a list)')
    rid = data.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)
                            or (isinstance(rid, str) and len(rid) > 200)):
        raise GuardInputError("id must be a str of at most 200 characters or an int")
    if "prompt" in data:
        _text(data["prompt"], "prompt")
        return prompts_of([data["prompt"]], data.get("negative")), rid
    return prompts_of(data["prompts"], data.get("negative")), rid
