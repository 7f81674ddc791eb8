"""The generation guard's vocabulary: protected concepts, the prompts of one generation
request, the evidence a matcher finds, and the screening's answer.

These records are the only language between the guard's parts (the concept registry, the
lexical and semantic matchers, calibration, mitigation, output screening) and its users
(the CLI, the service, the evaluation in ``benchmarks/``), as typed ground-truth and match
records are between methods and evaluation in sscd-copy-detection's ISC metrics.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tracemark.errors import GuardInputError

__all__ = ["ConceptKind", "Concept", "Prompt", "PromptSet", "Evidence", "ConceptMatch",
           "PromptScreening", "MAX_PROMPT_CHARS", "MAX_PROMPTS", "MAX_REQUEST_WORDS",
           "concept_id"]

MAX_PROMPT_CHARS = 8_000
"""The longest prompt screened, characters (after NFC normalisation); longer prompts are
refused with :class:`~tracemark.errors.GuardInputError` rather than truncated, so nothing
past a cut escapes the screen. Generators read far less (CLIP's text encoder: 77 tokens)."""
MAX_PROMPTS = 64
"""The most prompts in one request (positive, negative, a batch composed into one image)."""
MAX_REQUEST_WORDS = 2_000
"""The most words (runs of letters or digits) in all the prompts of one request together,
about 2,500 tokens: generators read far fewer (CLIP 77, T5 encoders 256-512), and the
semantic matcher's work grows with the words (about 1.1 parts a word, a few ms a part on
one core), so a longer request is refused (:class:`~tracemark.errors.GuardInputError`)
rather than truncated or left to run for minutes."""
_WORDS = re.compile(r"[^\W_]+")
MAX_NAME_CHARS = 200
MAX_TRAITS = 64
MAX_ALIASES = 256


class ConceptKind(StrEnum):
    """What a protected concept is."""

    CHARACTER = "character"
    ARTWORK = "artwork"
    STYLE = "style"
    """An artist's style."""
    BRAND = "brand"
    PERSON = "person"


_SLUG = re.compile(r"[^a-z0-9]+")


def concept_id(name: str) -> str:
    """A concept's identifier from its name: ASCII lower case, runs of other characters
    made one ``-`` (``"Captain Nimbus"`` -> ``captain-nimbus``); a name with no ASCII
    letter or digit is identified by its code points (``u4e00-u4e8c``)."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = _SLUG.sub("-", text).strip("-")
    if not slug:
        slug = "-".join(f"u{ord(c):04x}" for c in name.strip())[:120]
    return slug[:120]


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise GuardInputError(f"{what} must be a str, got {type(value).__name__}")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise GuardInputError(f"{what} is empty")
    if len(value) > limit:
        raise GuardInputError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise GuardInputError(f"{what} holds control characters")
    return value


def _texts(values: Any, what: str, limit: int, most: int) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise GuardInputError(f"{what} must be a list of str")
    if len(values) > most:
        raise GuardInputError(f"{what}: more than {most}")
    out: list[str] = []
    for v in values:
        t = _text(v, what, limit)
        if t.casefold() not in {o.casefold() for o in out}:
            out.append(t)
    return tuple(out)


@dataclass(frozen=True)
class Concept:
    """A protected concept: a character, an artwork, an artist's style, a brand, a person.

    ``aliases``: other names and spellings, in any script (the name itself is always
    matched). ``traits``: short phrases that together make the concept recognisable
    without its name ("a blue hedgehog", "red sneakers with white straps"); prompts that
    describe several of them are caught by the semantic matcher. ``generic``: what the
    mitigation writes in place of the concept ("an original cartoon hedgehog"); default
    from ``kind``. ``references``: ids of the concept's registered reference images in
    the collection (output screening). Validated when built:
    :class:`~tracemark.errors.GuardInputError` for empty, oversized or control-character
    text, wrong types, an unknown kind."""

    name: str
    kind: ConceptKind = ConceptKind.CHARACTER
    owner: str = ""
    aliases: tuple[str, ...] = ()
    traits: tuple[str, ...] = ()
    generic: str = ""
    references: tuple[int, ...] = ()
    id: str = ""
    """Derived from ``name`` (:func:`concept_id`) when empty."""

    def __post_init__(self) -> None:
        name = _text(self.name, "concept name", MAX_NAME_CHARS)
        object.__setattr__(self, "name", name)
        try:
            object.__setattr__(self, "kind", ConceptKind(self.kind))
        except ValueError:
            raise GuardInputError(f"unknown concept kind {self.kind!r}; one of "
                                  f"{', '.join(k.value for k in ConceptKind)}") from None
        if not isinstance(self.owner, str) or len(self.owner) > MAX_NAME_CHARS:
            raise GuardInputError(f"owner must be a str of at most {MAX_NAME_CHARS} characters")
        object.__setattr__(self, "owner", self.owner.strip())
        aliases = tuple(a for a in _texts(list(self.aliases), "alias", MAX_NAME_CHARS,
                                          MAX_ALIASES) if a.casefold() != name.casefold())
        object.__setattr__(self, "aliases", aliases)
        object.__setattr__(self, "traits", _texts(list(self.traits), "trait", 200, MAX_TRAITS))
        if self.generic:
            object.__setattr__(self, "generic", _text(self.generic, "generic", 200))
        refs = self.references
        if isinstance(refs, str | bytes) or not all(
                isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in refs):
            raise GuardInputError("references must be non-negative image ids")
        object.__setattr__(self, "references", tuple(refs))
        cid = self.id or concept_id(name)
        if not isinstance(cid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,119}", cid):
            raise GuardInputError(f"bad concept id {cid!r} (lower-case ASCII letters, digits "
                                  "and -, at most 120)")
        object.__setattr__(self, "id", cid)

    @property
    def names(self) -> tuple[str, ...]:
        """The name and its aliases."""
        return (self.name, *self.aliases)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind.value, "owner": self.owner,
                "aliases": list(self.aliases), "traits": list(self.traits),
                "generic": self.generic, "references": list(self.references)}

    @classmethod
    def from_dict(cls, data: Any) -> Concept:
        """From :meth:`to_dict`'s shape (a JSON object); unknown keys and wrong types are
        :class:`~tracemark.errors.GuardInputError`."""
        if not isinstance(data, dict):
            raise GuardInputError(f"a concept must be a JSON object, got {type(data).__name__}")
        known = {"id", "name", "kind", "owner", "aliases", "traits", "generic", "references"}
        if unknown := set(data) - known:
            raise GuardInputError(f"unknown concept fields: {', '.join(sorted(map(str, unknown)))}")
        if "name" not in data:
            raise GuardInputError("a concept needs a name")
        return cls(name=data["name"], kind=data.get("kind", "character"),
                   owner=data.get("owner", ""), aliases=tuple(data.get("aliases", ())),
                   traits=tuple(data.get("traits", ())), generic=data.get("generic", ""),
                   references=tuple(data.get("references", ())), id=data.get("id", ""))


@dataclass(frozen=True)
class Prompt:
    """One prompt of a generation request. ``weight``: the prompt's weight (a negative
    weight, as Midjourney's ``::-0.5``, steers away like a negative prompt);
    ``negative``: a negative prompt (what the generator is told to avoid)."""

    text: str
    weight: float = 1.0
    negative: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise GuardInputError(f"a prompt must be a str, got {type(self.text).__name__}")
        text = unicodedata.normalize("NFC", self.text)
        if len(text) > MAX_PROMPT_CHARS:
            raise GuardInputError(f"a prompt is longer than {MAX_PROMPT_CHARS} characters "
                                  f"({len(text)})")
        object.__setattr__(self, "text", text)
        if not isinstance(self.weight, int | float) or self.weight != self.weight \
                or abs(self.weight) == float("inf"):
            raise GuardInputError("a prompt's weight must be a finite number")
        object.__setattr__(self, "weight", float(self.weight))

    @property
    def steers_away(self) -> bool:
        """Negative prompts and negative weights: what the image is steered away from."""
        return self.negative or self.weight < 0


@dataclass(frozen=True)
class PromptSet:
    """The prompts of one generation request, screened as one: positive and negative
    prompts, weighted parts, a batch composed into one image. A concept split across
    prompts is caught because the positive prompts are screened together."""

    prompts: tuple[Prompt, ...]

    def __post_init__(self) -> None:
        if not self.prompts:
            raise GuardInputError("no prompt to screen")
        if len(self.prompts) > MAX_PROMPTS:
            raise GuardInputError(f"more than {MAX_PROMPTS} prompts in one request")
        if not all(isinstance(p, Prompt) for p in self.prompts):
            raise GuardInputError("PromptSet takes Prompt records")
        words = sum(len(_WORDS.findall(p.text)) for p in self.prompts)
        if words > MAX_REQUEST_WORDS:
            raise GuardInputError(f"the request's prompts hold {words} words together; at "
                                  f"most {MAX_REQUEST_WORDS} are screened")

    @classmethod
    def of(cls, positive: str | list[str], negative: str | list[str] | None = None) -> PromptSet:
        """Positive prompt(s) and negative prompt(s) as plain text."""
        pos = [positive] if isinstance(positive, str) else list(positive)
        neg = [] if negative is None else [negative] if isinstance(negative, str) \
            else list(negative)
        return cls(tuple([Prompt(p) for p in pos] + [Prompt(n, negative=True) for n in neg]))

    @property
    def positive(self) -> tuple[Prompt, ...]:
        return tuple(p for p in self.prompts if not p.steers_away)


@dataclass(frozen=True)
class Evidence:
    """Why a concept matched: ``how`` (``name``, ``alias``, ``misspelling``, ``split``,
    ``script`` (another script or look-alike letters), ``trait`` (semantic), ``image``
    (a copy of a reference), ``watermark``, ``manifest``); ``text``: the words of the
    prompt (or what the image carries); ``matched``: the name, alias or trait they match;
    ``prompt``: the prompt's index in the request; ``span``: character offsets in that
    prompt (end exclusive), or None; ``score``: the matcher's own score (similarity in
    [0, 1] for traits and spellings)."""

    how: str
    text: str
    matched: str
    prompt: int | None = None
    span: tuple[int, int] | None = None
    score: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "text": self.text, "matched": self.matched,
                "prompt": self.prompt, "span": None if self.span is None else list(self.span),
                "score": round(float(self.score), 6)}


@dataclass
class ConceptMatch:
    """One concept a request (or an image) matched: its score (higher: more certainly the
    concept), the p-value of that score under the benign background (None before
    calibration), whether it is flagged, and the evidence."""

    concept: Concept
    score: float
    evidence: list[Evidence] = field(default_factory=list)
    p_value: float | None = None
    flagged: bool = False
    collection: str | None = None
    """The collection whose concept this is, when a request was screened against several
    (:func:`tracemark.guard.screen.screen_with`); None otherwise (and then left out of
    :meth:`to_dict`)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"concept": self.concept.id, "name": self.concept.name,
               "kind": self.concept.kind.value, "owner": self.concept.owner,
               "score": round(float(self.score), 6), "p_value": self.p_value,
               "flagged": self.flagged, "evidence": [e.to_dict() for e in self.evidence]}
        if self.collection is not None:
            out["collection"] = self.collection
        return out


@dataclass
class PromptScreening:
    """The answer to one request: ``decision`` (``allow``, ``rewrite``: flagged, with a
    mitigation that keeps the user's intent, or ``block``: flagged and no mitigation kept
    anything), the matches (flagged first, by score), the mitigation (``prompt``: the
    rewritten positive prompt, ``negative``: terms for the negative prompt) when flagged,
    ``alpha``: the false-positive rate of the decision on benign prompts, and the time
    taken, seconds."""

    decision: str
    matches: list[ConceptMatch]
    alpha: float
    rewritten: str | None = None
    negative: list[str] = field(default_factory=list)
    seconds: float = 0.0
    matchers: list[str] = field(default_factory=list)
    """The matchers that ran (``lexical``; ``semantic`` when its model is installed)."""

    @property
    def flagged(self) -> bool:
        return any(m.flagged for m in self.matches)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "flagged": self.flagged, "alpha": self.alpha,
                "matches": [m.to_dict() for m in self.matches], "rewritten": self.rewritten,
                "negative": self.negative, "matchers": self.matchers,
                "seconds": round(self.seconds, 6)}
