"""The semantic prompt matcher: catches a protected concept described by its traits
without its name ("a blue hedgehog in red sneakers who runs faster than sound").

Published results on copyrighted characters (He et al. 2024, "Fantastic Copyrighted
Beasts and How (Not) to Generate Them") show that a few of a character's distinctive
traits in a prompt are enough for a generator to draw it. So the matcher asks how many of
a concept's DISTINCT traits the request describes, not whether any one phrase resembles
the concept: a generic near-miss ("a cartoon mouse") resembles at most one trait, an
indirect description resembles several.

* At build (:meth:`SemanticMatcher._prepare`): every concept's traits are embedded with
  all-MiniLM-L6-v2 (:mod:`tracemark.guard.encoder`); the embeddings are cached per
  concept list (:data:`_TRAIT_CACHE`), so rebuilding a matcher over the same concepts is
  free.
* At match: the POSITIVE prompts of the request (:attr:`PromptSet.positive`, screened
  together, so traits split across prompts add up; negative prompts and negative weights
  never contribute) are cut into short parts with their character spans
  (:func:`prompt_parts`): clauses (cut at punctuation and at connecting words) and
  windows of :data:`WINDOW` words. Every part is short, so it is embedded whole: the
  model's 128-token truncation never hides the end of a long prompt. All parts are
  embedded in one batch.
* Score: each trait is matched to a part of the prompt, greedily by cosine similarity
  ``s``, and every part (with the parts that overlap it) carries at most one trait: a
  near-miss phrase that resembles two traits of a concept at once ("fallen glass apples"
  for "glass apples on the grass" and "apple trees made of glass") counts once, while an
  indirect description that names several traits in several phrases counts each. Only
  parts of at most :data:`ASSIGN_WORDS` words carry traits. Each matched trait counts
  ``clip((s - LOW) / (HIGH - LOW), 0, 1)`` (a soft match); the concept's score is
  :data:`BEST_WEIGHT` times the best soft match plus the sum of the next
  ``MAX_TRAITS - 1``, in ``[0, MAX_TRAITS - 1 + BEST_WEIGHT]``: one trait alone scores at
  most ``BEST_WEIGHT``, two near-verbatim traits ``1 + BEST_WEIGHT``. Monotone in "more
  distinct traits, more closely". Calibration (:mod:`tracemark.guard.screen`) turns it
  into a p-value on benign prompts.

The constants were chosen on development data only: the hand-written
``benchmarks/data/guard/dev_semantic.json`` and the ``dev`` split of the evaluation set
(20 concepts), never on its ``test`` split. On the dev split, against the default benign
background, assigning traits to distinct parts raised indirect detection from 0.66 (the
mean of the two best traits, no assignment) to 0.925, and windows starting at every word
instead of every second word to 0.95 (windows of 3 or 5 words did worse), with 1 of 423
benign prompts of the split flagged. Latency: ``benchmarks/bench_guard_semantic.py``.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from tracemark.guard.encoder import SentenceEncoder, sentence_encoder
from tracemark.guard.matchers import Matcher, register_matcher
from tracemark.guard.types import Concept, ConceptMatch, Evidence, PromptSet

__all__ = ["SemanticMatcher", "Part", "prompt_parts", "WINDOW", "STRIDE", "LOW", "HIGH",
           "MAX_TRAITS", "BEST_WEIGHT", "ASSIGN_WORDS"]

WINDOW = 4
"""Words per window part."""
STRIDE = 1
"""Words between the starts of consecutive windows."""
LOW = 0.35
"""Cosine similarity (MiniLM-L6-v2) at and below which a part does not match a trait."""
HIGH = 0.9
"""Cosine similarity at and above which a part matches a trait fully (near-verbatim)."""
MAX_TRAITS = 4
"""The most traits (each on its own part of the prompt) a concept's score adds up."""
BEST_WEIGHT = 0.25
"""The weight of the best-matched trait in the score; every further trait counts fully."""
ASSIGN_WORDS = 8
"""Parts of at most this many words carry a trait (longer clauses and the whole prompt are
embedded for :func:`prompt_parts`' callers but would let one part stand for every trait)."""
WHOLE_WORDS = 24
"""Prompts (and clauses) of at most this many words are also embedded whole."""

_WORD = re.compile(r"[^\W_]{1,32}(?:['’][^\W_]{1,32})?", re.UNICODE)
"""A word: letters and digits (a longer run is cut every 32 characters, so a window of
:data:`WINDOW` words stays well under the model's 128 tokens), with one apostrophe."""
_BREAK = re.compile(r"[,;:.!?()\[\]{}|/\n\r\t\"“”]+|\s[-–—]+\s")
_CONNECTORS = frozenset(
    ["and", "or", "but", "with", "who", "which", "that", "while", "whose", "wearing", "holding",
     "plus", "also"])


@dataclass(frozen=True)
class Part:
    """A part of one prompt: ``prompt``, the prompt's index in the request; ``span``,
    character offsets in that prompt (end exclusive); ``text``, the prompt's text there."""

    prompt: int
    span: tuple[int, int]
    text: str


def prompt_parts(text: str, prompt: int = 0) -> list[Part]:
    """The parts of ``text`` the matcher embeds, each at most :data:`WHOLE_WORDS` words:
    the whole text when short enough; its clauses (runs of words between punctuation,
    each also cut before a connecting word such as "with", "who", "and"); and windows of
    :data:`WINDOW` words every :data:`STRIDE` words over the whole text (windows cross
    clause boundaries, so a trait cut by a comma is still seen). Spans are character
    offsets in ``text``; parts with the same span are given once, in text order."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return []
    spans: set[tuple[int, int]] = set()
    if len(words) <= WHOLE_WORDS:
        spans.add((words[0][0], words[-1][1]))
    # clauses: words grouped between punctuation breaks, then cut before connectors
    breaks = [m.start() for m in _BREAK.finditer(text)]
    clause: list[tuple[int, int]] = []
    bi = 0

    def close() -> None:
        if clause:
            for i in range(0, len(clause), WHOLE_WORDS):
                chunk = clause[i:i + WHOLE_WORDS]
                spans.add((chunk[0][0], chunk[-1][1]))
            clause.clear()

    for start, end in words:
        while bi < len(breaks) and breaks[bi] < start:
            close()
            bi += 1
        if text[start:end].casefold() in _CONNECTORS and clause:
            close()
        clause.append((start, end))
    close()
    if len(words) > WINDOW:
        last = len(words) - WINDOW
        for i in [*range(0, last + 1, STRIDE), *([last] if last % STRIDE else [])]:
            spans.add((words[i][0], words[i + WINDOW - 1][1]))
    return [Part(prompt, s, text[s[0]:s[1]]) for s in sorted(spans)]


class _Traits:
    """The embedded traits of one concept list: ``vectors`` float32 [n_traits, 384];
    ``owner[i]``: the concept index of trait ``i``; ``text[i]``: the trait."""

    def __init__(self, concepts: tuple[Concept, ...], encoder: SentenceEncoder) -> None:
        texts: list[str] = []
        owner: list[int] = []
        for ci, c in enumerate(concepts):
            for t in c.traits:
                texts.append(t)
                owner.append(ci)
        self.text = texts
        self.owner = np.asarray(owner, dtype=np.int64)
        self.vectors = encoder.encode(texts)


_TRAIT_CACHE: OrderedDict[tuple, _Traits] = OrderedDict()
"""Embedded traits by (encoder, concepts' ids and traits): the last few concept lists."""
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


@register_matcher
class SemanticMatcher(Matcher):
    """Concepts whose distinct traits the request's positive prompts describe (sentence
    embeddings, all-MiniLM-L6-v2: the ``guard`` extra). Scores in [0, 1] (see the module
    docstring); evidence: ``how="trait"``, the part's text and span in its prompt, the
    trait it matched, and their cosine similarity, for each trait with a non-zero soft
    match. Concepts without traits are never matched here (the lexical matcher finds
    their names).

    ``encoder``: another :class:`~tracemark.guard.encoder.SentenceEncoder` than the
    process's shared one-thread encoder. Raises
    :class:`~tracemark.errors.MissingExtraError` without the ``guard`` extra,
    :class:`~tracemark.errors.GuardModelError` when its files are damaged."""

    name = "semantic"
    optional_extra = "guard"

    def __init__(self, concepts, *, encoder: SentenceEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else sentence_encoder()
        super().__init__(concepts)

    def _prepare(self) -> None:
        key = (self.encoder.identity, tuple((c.id, c.traits) for c in self.concepts))
        with _CACHE_LOCK:
            traits = _TRAIT_CACHE.get(key)
            if traits is not None:
                _TRAIT_CACHE.move_to_end(key)
        if traits is None:
            traits = _Traits(self.concepts, self.encoder)
            with _CACHE_LOCK:
                _TRAIT_CACHE[key] = traits
                while len(_TRAIT_CACHE) > _CACHE_SIZE:
                    _TRAIT_CACHE.popitem(last=False)
        self._traits = traits
        n = len(self.concepts)
        counts = np.bincount(traits.owner, minlength=n)
        # [n_concepts, most traits]: each concept's trait indices, padded with n_traits
        # (a slot never matched)
        table = np.full((n, max(int(counts.max(initial=0)), 1)), len(traits.text), np.int64)
        fill = np.zeros(n, np.int64)
        for ti, ci in enumerate(traits.owner):
            table[ci, fill[ci]] = ti
            fill[ci] += 1
        self._table = table

    def parts(self, prompts: PromptSet) -> list[Part]:
        """The parts of the request's positive prompts, in prompt and text order (the
        prompt index is the prompt's position in ``prompts.prompts``)."""
        out: list[Part] = []
        for i, p in enumerate(prompts.prompts):
            if not p.steers_away:
                out.extend(prompt_parts(p.text, i))
        return out

    def scores(self, prompts: PromptSet) -> tuple[np.ndarray, list[list[tuple[int, int, float]]],
                                                 list[Part]]:
        """The request's concept scores float64 [n_concepts]; per concept the matched
        ``(trait index, part index, cosine)`` triples, best first; and the parts."""
        parts = self.parts(prompts)
        tr = self._traits
        n = len(self.concepts)
        empty: list[list[tuple[int, int, float]]] = [[] for _ in range(n)]
        if not parts or not len(tr.text):
            return np.zeros(n), empty, parts
        vecs = self.encoder.encode([p.text for p in parts])
        # einsum, not BLAS: OpenBLAS's thread pool would spin beside the model on one core
        sims = np.einsum("td,pd->tp", tr.vectors, vecs)
        short = [i for i, p in enumerate(parts) if len(_WORD.findall(p.text)) <= ASSIGN_WORDS]
        cols = np.asarray(short or range(len(parts)), np.int64)
        kept = [parts[i] for i in cols]
        start = np.array([p.span[0] for p in kept])
        end = np.array([p.span[1] for p in kept])
        prompt = np.array([p.prompt for p in kept])
        overlap = ((prompt[:, None] == prompt[None, :]) & (start[:, None] < end[None, :])
                   & (start[None, :] < end[:, None]))
        sub = sims[:, cols]
        best = sub.max(axis=1)
        score = np.zeros(n)
        matched = empty
        for ci in np.unique(tr.owner[best > LOW]):
            rows = self._table[ci][self._table[ci] < len(tr.text)]
            m = sub[rows].copy()
            got: list[tuple[int, int, float]] = []
            while len(got) < MAX_TRAITS:
                t, q = np.unravel_index(int(np.argmax(m)), m.shape)
                if m[t, q] <= LOW:
                    break
                got.append((int(rows[t]), int(cols[q]), float(m[t, q])))
                m[t, :] = -1.0
                m[:, overlap[q]] = -1.0
            soft = [min(max((c - LOW) / (HIGH - LOW), 0.0), 1.0) for _, _, c in got]
            score[ci] = BEST_WEIGHT * soft[0] + sum(soft[1:]) if soft else 0.0
            matched[ci] = got
        return score, matched, parts

    def _match(self, prompts: PromptSet) -> list[ConceptMatch]:
        score, matched, parts = self.scores(prompts)
        out: list[ConceptMatch] = []
        for ci in np.flatnonzero(score > 0):
            evidence = [Evidence(how="trait", text=parts[q].text,
                                 matched=self._traits.text[t], prompt=parts[q].prompt,
                                 span=parts[q].span, score=c)
                        for t, q, c in matched[ci]]
            out.append(ConceptMatch(concept=self.concepts[ci], score=float(score[ci]),
                                    evidence=evidence))
        out.sort(key=lambda m: -m.score)
        return out
