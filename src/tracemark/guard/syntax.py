"""Prompt syntax: the weights and negative parts generators read, parsed into
:class:`~tracemark.guard.types.Prompt` records so that a name hidden in syntax is still
screened and a part the generator steers away from is treated as negative.

What each syntax means (and what :func:`parse_prompt` makes of it):

* AUTOMATIC1111 / ComfyUI emphasis: ``(word:1.3)`` weighs ``word`` 1.3, ``(word)`` 1.1,
  ``((word))`` 1.21, ``[word]`` 1/1.1. The brackets and weights are dropped and the words
  kept in place; a part weighted 0 or below (``(word:-1)``) is moved to a prompt of its
  own with that weight (it steers away). ``\\(`` is a literal bracket.
* A1111 prompt editing ``[from:to:step]`` (``from`` until ``step``, then ``to``),
  ``[to:step]``, ``[from::step]`` and alternation ``[a|b]``: the generator draws every
  word at some step, so all are kept, separated by spaces.
* Composable diffusion ``a AND b :0.5``: each part a prompt of its own, with the weight
  written after it (``:w``, default 1).
* Midjourney multi-prompts ``a::2 b::-0.5``: each part a prompt with the weight after its
  ``::`` (default 1; a negative weight steers away).
* Midjourney ``--no a, b``: a negative prompt ``a, b``; other ``--param value`` options
  (``--ar 16:9``, ``--v 6``) are dropped.

Spans in evidence refer to the parsed prompts' texts (:attr:`Prompt.text`), which are the
user's words without the syntax.
"""

from __future__ import annotations

import re

from tracemark.errors import GuardInputError
from tracemark.guard.types import MAX_PROMPT_CHARS, Prompt

__all__ = ["parse_prompt"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_MJ_OPTION = re.compile(r"(?:^|\s)--([a-zA-Z]+)(?:\s+((?:(?!\s--[a-zA-Z]).)*))?", re.S)
_MJ_PART = re.compile(rf"::\s*({_NUM})?")
_AND = re.compile(r"\s+AND\s+")
_TRAILING_WEIGHT = re.compile(rf"\s*:\s*({_NUM})\s*$")
_EMPHASIS = 1.1


def parse_prompt(text: str) -> list[Prompt]:
    """The parts of one prompt as generators read it (see the module doc), in order:
    positive parts first with their weights, then parts that steer away (negative weight
    or ``--no``). A prompt with no syntax comes back as one :class:`Prompt` with its text.
    Raises :class:`~tracemark.errors.GuardInputError` for a non-str or a prompt longer
    than :data:`~tracemark.guard.types.MAX_PROMPT_CHARS`."""
    if not isinstance(text, str):
        raise GuardInputError(f"a prompt must be a str, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise GuardInputError(f"a prompt is longer than {MAX_PROMPT_CHARS} characters")
    negatives: list[Prompt] = []

    def option(m: re.Match[str]) -> str:
        if m.group(1).lower() == "no" and m.group(2) and m.group(2).strip():
            negatives.append(Prompt(m.group(2).strip(), negative=True))
        return " "

    body = _MJ_OPTION.sub(option, text)
    parts: list[tuple[str, float]] = []
    if "::" in body:
        last = 0
        for m in _MJ_PART.finditer(body):
            parts.append((body[last:m.start()], float(m.group(1)) if m.group(1) else 1.0))
            last = m.end()
        if body[last:].strip():
            parts.append((body[last:], 1.0))
    else:
        for piece in _AND.split(body):
            w = _TRAILING_WEIGHT.search(piece)
            if w and not piece.rstrip().endswith(")"):
                parts.append((piece[:w.start()], float(w.group(1))))
            else:
                parts.append((piece, 1.0))
    positive: list[Prompt] = []
    for piece, weight in parts:
        kept, away = _emphasis(piece)
        if kept.strip():
            (positive if weight >= 0 else negatives).append(Prompt(_tidy(kept), weight))
        for words, w in away:
            negatives.append(Prompt(_tidy(words), w * (weight if weight > 0 else 1.0)))
    out = positive + negatives
    return out or [Prompt(text.strip())]


def _tidy(text: str) -> str:
    return re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,")


def _emphasis(text: str) -> tuple[str, list[tuple[str, float]]]:
    """``text`` with A1111 brackets resolved: the kept words and the parts weighted <= 0."""
    out: list[str] = []
    away: list[tuple[str, float]] = []
    # a stack of (opening bracket, index in out where its content starts)
    stack: list[tuple[str, int]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c in "([":
            stack.append((c, len(out)))
            i += 1
            continue
        if c in ")]" and stack and stack[-1][0] == ("(" if c == ")" else "["):
            opening, start = stack.pop()
            content = "".join(out[start:])
            del out[start:]
            weight = _EMPHASIS if opening == "(" else 1 / _EMPHASIS
            m = re.fullmatch(rf"(.*?):\s*({_NUM})\s*", content, re.S) if opening == "(" else None
            if m:
                content, weight = m.group(1), float(m.group(2))
            elif opening == "[":
                # prompt editing [from:to:step] / [to:step] / [from::step], alternation [a|b]
                content = " ".join(p for p in re.split(r"[:|]", content)
                                   if p.strip() and not re.fullmatch(rf"\s*{_NUM}\s*", p))
            if weight <= 0 and not any(o == "(" for o, _ in stack):
                away.append((content, weight))
                out.append(" ")
            else:
                out.append(f" {content} ")
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out), away
