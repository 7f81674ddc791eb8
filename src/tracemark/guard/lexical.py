"""The lexical matcher: protected names and aliases in a prompt, however they are written.

Text is folded once (:func:`fold`) into letter tokens that remember where each letter came
from in the original prompt, so every piece of evidence carries a span of the text the
user wrote. Folding: NFKC (full-width and ligature forms), case folding, accents removed
(NFD, combining marks dropped), look-alike letters from Cyrillic and Greek read as the
Latin letters they imitate when they sit in a Latin word or when a whole word is made of
them (Unicode's confusables.txt, the Cyrillic and Greek rows that fold to one Latin
letter), other scripts transliterated to ASCII (``anyascii``; kana and Han one character a
token, as those scripts write no spaces), digits and ``@ $`` inside words read as the
letters they stand for (leetspeak: ``N1mbus``). Tokens break at spaces, punctuation,
lower-to-upper case changes (``CaptainNimbus``) and script changes.

A name matches a run of whole adjacent tokens whose letters, joined, spell it:

* ``name`` / ``alias``: the name's own words (any case, accents, ``'s`` after it, a plural
  ``s``/``es``), score 1.
* ``split``: the same letters across other boundaries (``Cap tain``, ``C-a-p-t-a-i-n``,
  ``captain.nimbus``, ``CaptainNimbus``) or across the end of one positive prompt and the
  start of another, neighbours or not, in either order (one piece of evidence per prompt),
  score 0.95 (0.9 across prompts).
  Only names of 5 letters or more: shorter runs are joined by chance.
* ``script``: spelled with look-alike letters, leetspeak, or in another script
  (transliterated), score 1.
* ``misspelling``: within an optimal-string-alignment distance (one edit: a substitution,
  insertion, deletion or swap of neighbours) that grows with the name's length: none up
  to 4 letters, 1 for 5-7, 2 for 8-11, 3 from 12 (:data:`EDIT_BUDGET`); or spelled by
  sound (the same Metaphone code, names of 6 letters or more, at most 45 % of the letters
  edited: :meth:`LexicalMatcher._sounds_like`). A correctly spelled ordinary word (in
  :func:`common_words`) is never a misspelling (``vendor`` is not ``Vantor``). Score
  ``0.9 - 0.1 * distance``. The run is one whitespace word or as many words as the name
  has, so chance joins of neighbouring words are not compared.

**Common-word names.** A name of one word (``Echo``; an article and one word, ``The
Kiss``, counts as one) can be an ordinary word: one in the English vocabulary of
:func:`common_words` (with the ``guard`` extra; without it, every one-word name is treated
as one). An invented one-word name (``Zorblax``) scores 1 wherever it appears. Such a mention scores 1 only with context:
written with a capital letter (not as the prompt's first word), followed by ``'s``, spelled
evasively (look-alike letters, digits, split), or with a word of the concept's kind
(:data:`KIND_WORDS`: ``painting`` for an artwork, ``style`` for a style) or of one of its
traits within :data:`CONTEXT_WORDS` words. Without context it scores
:data:`START_CAPITAL_SCORE` when capitalised as the first word of a prompt or sentence and
:data:`BARE_WORD_SCORE` otherwise (the calibration on benign prompts decides whether those
flag).
Names of two words or more match only whole (every word, in order).

Negative prompts (:attr:`~tracemark.guard.types.Prompt.steers_away`) are not searched:
they are where the mitigation writes the names.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import jellyfish
from anyascii import anyascii
from rapidfuzz.distance import OSA

from tracemark.guard.matchers import Matcher, register_matcher
from tracemark.guard.types import ConceptKind, ConceptMatch, Evidence, PromptSet

__all__ = ["LexicalMatcher", "Token", "fold", "tokens", "EDIT_BUDGET", "KIND_WORDS",
           "BARE_WORD_SCORE", "START_CAPITAL_SCORE", "CONTEXT_WORDS"]

BARE_WORD_SCORE = 0.5
"""The score of a one-word name met as a plain lower-case word with no context."""
START_CAPITAL_SCORE = 0.75
"""The score of a one-word name with no other context, capitalised as the first word of a
prompt or sentence (where any word is capitalised)."""
CONTEXT_WORDS = 4
"""How many words either side of a one-word name are read for context."""
PHONETIC_MIN_LETTERS = 6
"""Names at least this long also match phonetic spellings (``Zefiera`` for ``Zephyra``)."""
PHONETIC_EDIT_SHARE = 0.45
"""A phonetic spelling may differ from the name in at most this share of its letters."""
SPLIT_EDGE_TOKENS = 3
"""Tokens at the end and the start of each prompt joined across prompts that are not
neighbours (a name split over a batch, or in reverse order)."""
SPLIT_MIN_LETTERS = 5
"""Names shorter than this match only as their own word(s), never split."""

KIND_WORDS: dict[ConceptKind, frozenset[str]] = {
    ConceptKind.CHARACTER: frozenset(["character", "hero", "superhero", "villain", "cartoon", "anime", "manga", "comic", "mascot", "figure", "figurine", "cosplay", "fanart", "plush", "toy"]),
    ConceptKind.ARTWORK: frozenset(["painting", "artwork", "painted", "masterpiece", "print", "poster", "canvas", "fresco", "mural", "sculpture", "famous", "museum"]),
    ConceptKind.STYLE: frozenset(["style", "styled", "artist", "manner", "painter", "illustrator", "art", "inspired"]),
    ConceptKind.BRAND: frozenset(["logo", "brand", "branded", "product", "products", "trademark", "label", "packaging", "sneakers", "bottle", "can"]),
    ConceptKind.PERSON: frozenset(["portrait", "photo", "photograph", "actor", "actress", "singer", "celebrity", "famous", "person", "face"]),
}
"""Words that say what kind of thing a one-word name is (general category words)."""

_ARTICLES = frozenset({"the", "a", "an"})


def EDIT_BUDGET(letters: int) -> int:  # noqa: N802 - a table written as a function
    """The edits a misspelling of a ``letters``-letter name may have."""
    return 0 if letters <= 4 else 1 if letters <= 7 else 2 if letters <= 11 else 3


# Cyrillic and Greek letters that fold (confusables.txt, Unicode 15) to one Latin letter,
# after case folding.
_CONFUSABLE = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g", "ո": "n", "ս": "u",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ϲ": "c", "ϳ": "j", "μ": "u", "ω": "w",
}
_LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t",
         "8": "b", "9": "g", "@": "a", "$": "s"}
_NOSPACE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0e7f"
                      r"\uff66-\uff9f]")


@dataclass
class Token:
    """One run of letters: ``letters`` (folded ASCII), ``pos[i]``: the index in the
    original text of the character ``letters[i]`` came from; ``start``/``end``: its
    original span (end exclusive); ``word``: the index of its whitespace-separated word;
    ``evasive``: look-alike letters or leetspeak were read; ``foreign``: another script was
    transliterated; ``capital``: written with an upper-case first letter; ``prompt``: the
    prompt index (set by the matcher)."""

    letters: str
    pos: list[int]
    start: int
    end: int
    word: int
    evasive: bool = False
    foreign: bool = False
    capital: bool = False
    prompt: int = 0
    sep_before: str = field(default="", repr=False)


def _fold_char(c: str) -> str:
    out = []
    for k in unicodedata.normalize("NFKC", c).casefold():
        out.extend(m for m in unicodedata.normalize("NFD", k) if not unicodedata.combining(m))
    return "".join(out)


def fold(text: str) -> tuple[str, list[int]]:
    """``text`` folded (NFKC, case folding, accents removed; see the module doc), with the
    index in ``text`` each folded character came from (``len(pos) == len(folded)``, each
    ``0 <= pos[i] < len(text)``, non-decreasing). Idempotent: ``fold(fold(t)[0])[0] ==
    fold(t)[0]``. Letters of other scripts are kept as they are here (:func:`tokens`
    transliterates them)."""
    chars: list[str] = []
    pos: list[int] = []
    for i, c in enumerate(text):
        f = c if c.isascii() and not c.isupper() else _fold_char(c)
        chars.append(f)
        pos.extend([i] * len(f))
    return "".join(chars), pos


def _is_letter(c: str) -> bool:
    return c.isalnum()


def tokens(text: str) -> list[Token]:
    """The letter tokens of ``text`` (see the module doc), in order."""
    folded, pos = fold(text)
    out: list[Token] = []
    n = len(folded)
    word = 0
    i = 0
    sep = ""
    while i < n:
        c = folded[i]
        leetable = c in "@$" and 0 < i < n - 1 and _is_letter(folded[i - 1]) \
            and _is_letter(folded[i + 1])
        if not (_is_letter(c) or leetable) or c == "_":
            if c.isspace():
                word += 1
            sep += c
            i += 1
            continue
        if _NOSPACE.match(c):
            t = anyascii(c).lower()
            letters = "".join(ch for ch in t if ch.isalnum())
            if letters:
                out.append(Token(letters, [pos[i]] * len(letters), pos[i], pos[i] + 1, word,
                                 foreign=True, sep_before=sep))
            sep = ""
            i += 1
            continue
        j = i
        while j < n:
            d = folded[j]
            if _is_letter(d) and not _NOSPACE.match(d):
                # a lower-to-upper change in the original starts a new token (camelCase)
                if j > i and text[pos[j]].isupper() and text[pos[j - 1]].islower() \
                        and pos[j] != pos[j - 1]:
                    break
                j += 1
            elif d in "@$" and j + 1 < n and _is_letter(folded[j + 1]) and j > i:
                j += 1
            else:
                break
        run = folded[i:j]
        rpos = pos[i:j]
        out.extend(_word_token(text, run, rpos, word, sep))
        sep = ""
        i = j
    return out


def _word_token(text: str, run: str, rpos: list[int], word: int, sep: str) -> list[Token]:
    latin = [ch.isascii() for ch in run]
    has_alpha = any(ch.isalpha() for ch in run)
    if not has_alpha:
        return []  # numbers are not names
    evasive = foreign = False
    letters: list[str] = []
    lpos: list[int] = []
    all_confusable = all(ch.isascii() or ch in _CONFUSABLE for ch in run)
    mixed = any(latin) and not all(latin)
    for ch, p in zip(run, rpos, strict=True):
        if ch.isascii():
            if ch in _LEET:
                if not any(x.isalpha() for x in run if x not in _LEET):
                    return []
                evasive = True
                ch = _LEET[ch]
            letters.append(ch)
            lpos.append(p)
        elif ch in _CONFUSABLE and (mixed or all_confusable):
            evasive = True
            letters.append(_CONFUSABLE[ch])
            lpos.append(p)
        else:
            foreign = True
            t = "".join(x for x in anyascii(ch).lower() if x.isalnum())
            letters.extend(t)
            lpos.extend([p] * len(t))
    if not letters:
        return []
    first = text[rpos[0]]
    return [Token("".join(letters), lpos, rpos[0], rpos[-1] + 1, word, evasive, foreign,
                  first.isupper() or (not first.isascii() and first != first.lower()),
                  sep_before=sep)]


@dataclass(frozen=True)
class _Entry:
    concept: int
    text: str  # the name or alias as registered
    how: str  # name | alias
    words: tuple[str, ...]  # folded words, articles included
    key: str  # the letters of the content words
    single: bool  # one content word: needs context
    script: bool  # the name is written in another script


@functools.cache
def common_words() -> frozenset[str] | None:
    """Whole words of the BERT base uncased WordPiece vocabulary (about 20,000 English
    words and common names, from the ``guard`` extra's tokenizer file): a one-word name in
    it is an ordinary word that needs context to count as the concept (``echo``), a name
    outside it (``zorblax``) does not. None when the extra is not installed: every
    one-word name then needs context."""
    import json

    from tracemark.errors import GuardModelError, MissingExtraError
    from tracemark.guard.encoder import TOKENIZER_FILE, TOKENIZER_PACKAGE, package_file

    try:
        vocab = json.loads(package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE).read_bytes())
        vocab = vocab["model"]["vocab"]
    except (MissingExtraError, GuardModelError, OSError, ValueError, KeyError, TypeError):
        return None
    return frozenset(w for w in vocab if w.isascii() and w.isalpha() and len(w) > 1)


def _ordinary_word(stream: list[Token], i: int, j: int) -> bool:
    """Whether tokens ``i..j`` are one correctly spelled ordinary word (in
    :func:`common_words`, or its plural): not a misspelling of a name, however close
    (``vendor`` is not ``Vantor``)."""
    if any(stream[k].word != stream[i].word for k in range(i, j + 1)):
        return False
    words = common_words()
    if words is None:
        return False
    w = "".join(stream[k].letters for k in range(i, j + 1))
    return w in words or (w.endswith("s") and w[:-1] in words) \
        or (w.endswith("es") and w[:-2] in words)


def _is_common(key: str) -> bool:
    words = common_words()
    return True if words is None else key in words


def _entry(ci: int, text: str, how: str) -> _Entry | None:
    toks = tokens(text)
    words = tuple(t.letters for t in toks)
    content = list(words)
    while len(content) > 1 and content[0] in _ARTICLES:
        content = content[1:]
    key = "".join(content)
    if not key:
        return None
    single = len(content) == 1 and not any(t.foreign for t in toks) and _is_common(key)
    return _Entry(ci, text, how, words, key, single, any(t.foreign for t in toks))


@register_matcher
class LexicalMatcher(Matcher):
    """Names, aliases and their disguises in the positive prompts (see the module doc).

    Core dependencies only (``anyascii`` transliterates, ``rapidfuzz`` measures edit
    distances). Built once over the concepts; :meth:`match` costs well under a millisecond
    per prompt for a hundred concepts with five aliases each
    (``benchmarks/bench_guard_lexical.py``)."""

    name = "lexical"

    def _prepare(self) -> None:
        self._exact: dict[str, list[_Entry]] = defaultdict(list)
        # fuzzy candidates by (first letter, length) and (last letter, length)
        self._by_first: dict[tuple[str, int], list[_Entry]] = defaultdict(list)
        self._by_last: dict[tuple[str, int], list[_Entry]] = defaultdict(list)
        self._context: list[frozenset[str]] = []
        self._phonetic: dict[str, list[_Entry]] = defaultdict(list)
        longest = 0
        for ci, c in enumerate(self.concepts):
            ctx = set(KIND_WORDS[c.kind])
            for trait in c.traits:
                ctx.update(t.letters for t in tokens(trait) if len(t.letters) > 3)
            self._context.append(frozenset(ctx))
            for k, text in enumerate(c.names):
                e = _entry(ci, text, "name" if k == 0 else "alias")
                if e is None:
                    continue
                self._exact[e.key].append(e)
                if len(e.key) >= PHONETIC_MIN_LETTERS and not e.script:
                    code = jellyfish.metaphone(e.key)
                    if len(code) >= 3:
                        self._phonetic[code].append(e)
                if EDIT_BUDGET(len(e.key)) and not e.script:
                    self._by_first[e.key[0], len(e.key)].append(e)
                    if e.key[-1] != e.key[0]:
                        self._by_last[e.key[-1], len(e.key)].append(e)
                longest = max(longest, len(e.key))
        self._longest = longest + 3

    # --- matching -------------------------------------------------------------------------

    def _match(self, prompts: PromptSet) -> list[ConceptMatch]:
        stream: list[Token] = []
        texts: dict[int, str] = {}
        edges: list[list[Token]] = []  # each positive prompt's tokens, in order
        for index, p in enumerate(prompts.prompts):
            if p.steers_away:
                continue
            texts[index] = p.text
            mine = tokens(p.text)
            for t in mine:
                t.prompt = index
                stream.append(t)
            if mine:
                edges.append(mine)
        found: dict[int, list[Evidence]] = defaultdict(list)
        n = len(stream)
        for i in range(n):
            joined = ""
            for j in range(i, n):
                joined += stream[j].letters
                if len(joined) > self._longest:
                    break
                self._window(stream, i, j, joined, texts, found)
        # a name split across prompts that are not neighbours (a batch composed into one
        # image: "Captain", "a dog", "Nimbus"; or in reverse order): the end of one prompt
        # joined to the start of another, every ordered pair the stream did not join
        for a, tail in enumerate(edges):
            for b, head in enumerate(edges):
                if b == a or b == a + 1:
                    continue
                mini = tail[-SPLIT_EDGE_TOKENS:] + head[:SPLIT_EDGE_TOKENS]
                cut = min(len(tail), SPLIT_EDGE_TOKENS)
                for i in range(cut):
                    joined = "".join(t.letters for t in mini[i:cut])
                    for j in range(cut, len(mini)):
                        joined += mini[j].letters
                        if len(joined) > self._longest:
                            break
                        self._window(mini, i, j, joined, texts, found)
        out = []
        for ci, evs in found.items():
            kept = _non_overlapping(evs)
            out.append(ConceptMatch(self.concepts[ci], max(e.score for e in kept), kept))
        out.sort(key=lambda m: -m.score)
        return out

    def _window(self, stream: list[Token], i: int, j: int, joined: str,
                texts: dict[int, str], found: dict[int, list[Evidence]]) -> None:
        hits: list[tuple[_Entry, int, int]] = []  # entry, distance, letters used
        for cut in (0, 1, 2):
            if cut and len(stream[j].letters) <= cut + 1:
                break
            key = joined[:len(joined) - cut] if cut else joined
            if cut == 1 and not joined.endswith("s") or cut == 2 and not joined.endswith("es"):
                continue
            for e in self._exact.get(key, ()):
                hits.append((e, 0, len(key)))
            if hits:
                break
        if not hits and len(joined) >= 5 and not _ordinary_word(stream, i, j):
            hits = self._fuzzy(stream, i, j, joined)
        for e, dist, _ in hits:
            self._evidence(stream, i, j, e, dist, texts, found)

    def _fuzzy(self, stream: list[Token], i: int, j: int,
               joined: str) -> list[tuple[_Entry, int, int]]:
        m = len(joined)
        first, last = joined[0], joined[-1]
        cands = []
        for n in range(m - 3, m + 4):
            cands.extend(self._by_first.get((first, n), ()))
            cands.extend(e for e in self._by_last.get((last, n), ()) if e.key[0] != first)
        run = stream[i:j + 1]
        if any(t.prompt != run[0].prompt for t in run):
            return []
        words = len({t.word for t in run})
        out: list[tuple[_Entry, int, int]] = []
        if not cands:
            return self._sounds_like(joined, words)
        for e in cands:
            budget = EDIT_BUDGET(len(e.key))
            if abs(len(e.key) - m) > budget:
                continue
            if words != 1 and words != len(e.words) - (e.words[0] in _ARTICLES
                                                         and len(e.words) > 1):
                continue
            d = OSA.distance(joined, e.key, score_cutoff=budget)
            if d <= budget:
                out.append((e, d, m))
        return out or self._sounds_like(joined, words)

    def _sounds_like(self, joined: str, words: int) -> list[tuple[_Entry, int, int]]:
        """Names spelled by sound (``Bumbelrut`` for ``Bumbleroot``): the same Metaphone
        code (Philips 1990, through ``jellyfish``) and at most
        :data:`PHONETIC_EDIT_SHARE` of the name's letters edited; names of
        :data:`PHONETIC_MIN_LETTERS` letters or more."""
        if not self._phonetic or len(joined) < PHONETIC_MIN_LETTERS - 1:
            return []
        cands = self._phonetic.get(jellyfish.metaphone(joined), ())
        out = []
        for e in cands:
            if words != 1 and words != len(e.words) - (e.words[0] in _ARTICLES
                                                         and len(e.words) > 1):
                continue
            limit = int(PHONETIC_EDIT_SHARE * len(e.key))
            d = OSA.distance(joined, e.key, score_cutoff=limit)
            if abs(len(e.key) - len(joined)) <= 3 and d <= limit:
                out.append((e, d, len(joined)))
        return out

    def _evidence(self, stream: list[Token], i: int, j: int, e: _Entry, dist: int,
                  texts: dict[int, str], found: dict[int, list[Evidence]]) -> None:
        run = stream[i:j + 1]
        prompts = sorted({t.prompt for t in run})
        # optional leading article of the name, when the prompt has it
        if e.words[0] in _ARTICLES and len(e.words) > 1 and i > 0 \
                and stream[i - 1].letters == e.words[0] and stream[i - 1].prompt == run[0].prompt:
            run = [stream[i - 1], *run]
        content = list(e.words)
        while len(content) > 1 and content[0] in _ARTICLES:
            content = content[1:]
        body = [t for t in run if not (t is run[0] and t.letters in _ARTICLES and len(run) > 1)]
        whole = len(prompts) == 1 and len(body) == len(content) and all(
            a.letters == b or (k == len(body) - 1 and a.letters[len(b):] in ("s", "es")
                               and a.letters.startswith(b))
            for k, (a, b) in enumerate(zip(body, content, strict=True))) and all(
            body[k].word != body[k - 1].word and body[k].sep_before.isspace()
            for k in range(1, len(body)))
        if dist:
            how, score = "misspelling", 0.9 - 0.1 * dist
        elif e.script or any(t.evasive or t.foreign for t in run) and not e.script:
            how, score = "script", 1.0
        elif len(prompts) > 1:
            how, score = "split", 0.9
        elif whole:
            how, score = e.how, 1.0
        else:
            how, score = "split", 0.95
        if how == "split" and len(e.key) < SPLIT_MIN_LETTERS:
            return
        if e.single and how in ("name", "alias"):
            score = self._context_score(stream, i, j, e)
        for p in prompts:
            part = [t for t in run if t.prompt == p]
            start, end = part[0].start, part[-1].end
            text = texts[p]
            # a plural ending read into the name belongs to the span; 's stays outside
            found[e.concept].append(Evidence(how, text[start:end], e.text, p, (start, end),
                                             round(score, 6)))

    def _context_score(self, stream: list[Token], i: int, j: int, e: _Entry) -> float:
        if self._has_context(stream, i, j, e):
            return 1.0
        return START_CAPITAL_SCORE if stream[i].capital else BARE_WORD_SCORE

    def _has_context(self, stream: list[Token], i: int, j: int, e: _Entry) -> bool:
        first = stream[i]
        text_start = i == 0 or stream[i - 1].prompt != first.prompt \
            or any(ch in ".!?\n" for ch in first.sep_before)
        if first.capital and not text_start:
            return True
        if j + 1 < len(stream) and stream[j + 1].letters == "s" \
                and stream[j + 1].word == stream[j].word and stream[j + 1].prompt == first.prompt:
            return True  # possessive 's
        ctx = self._context[e.concept]
        near = range(max(0, i - CONTEXT_WORDS), min(len(stream), j + 1 + CONTEXT_WORDS))
        return any(stream[k].letters in ctx and stream[k].prompt == first.prompt
                   and not i <= k <= j for k in near)


def _non_overlapping(evs: Iterable[Evidence]) -> list[Evidence]:
    """The best evidence per region: higher score first, then longer span."""
    ordered = sorted(evs, key=lambda e: (-e.score, -(e.span[1] - e.span[0]) if e.span else 0))
    kept: list[Evidence] = []
    for e in ordered:
        if e.span is None or not any(
                k.prompt == e.prompt and k.span and k.span[0] < e.span[1] and e.span[0] < k.span[1]
                for k in kept):
            kept.append(e)
    kept.sort(key=lambda e: (e.prompt or 0, e.span or (0, 0)))
    return kept
