"""Prompt screening over HTTP.

* ``POST /v1/guard/prompt``: one generation request (:class:`GuardPromptIn`: its prompts,
  negative prompts and ``alpha``) screened against the protected concepts of several
  collections at once (``collections``; default: every collection the key may read), with
  one decision (:func:`tracemark.guard.screen.screen_with`): ``allow``, ``rewrite`` (with
  the rewritten prompt and the negative terms) or ``block``; each match names its
  collection (:class:`GuardPromptResult`). Each collection's decision keeps ``alpha``: over
  ``n`` collections a benign request is flagged with probability at most ``n * alpha``.
* ``POST /v1/collections/{name}/guard/calibrate``: calibrate the collection's prompt screen
  on the benign background and store the calibration with the collection
  (:meth:`tracemark.guard.ConceptRegistry.keep_calibration`), so that no replica needs to
  make one (:class:`GuardCalibrated`).

**Guards are cached** per (collection, its generation, the registry's change stamp, the
matchers) in :class:`GuardCache`, built in the worker pool. A collection whose stored
calibration does not fit its concepts (none stored, or concepts changed since) is
calibrated in memory once per stamp, at the first request that needs it: about 1 s with
the lexical matcher, 10-30 s with the semantic one on one core (1,200 benign requests
embedded). That request may then pass the service's ``request_timeout`` and be answered
503 ``Timeout``; the calibration goes on in its worker and is kept, so the request
succeeds when retried. The calibrate endpoint avoids this: call it after changing the
concepts. (The calibrate endpoint itself may time out the same way; the calibration is
then cached and a second call stores it at once.) A collection without concepts is not
screened and costs nothing.

Matchers: :attr:`tracemark.service.app.ServiceSettings.guard_matchers` (default: every
installed one, :func:`tracemark.guard.screen.default_matchers`).

Auth: a key that may read every collection screened (``prompt``; a named collection the
key may not read is 403) or write the collection (``calibrate``); 401 without a key.
Errors (``{"error": {"type", "message"}}``): 404 ``UnknownCollection``; 409
``ConceptsChanged`` (calibrate: the concepts changed while it ran; call again); 422
``ValidationError`` (a body outside the schema: unknown field, empty or overlong prompt,
too many prompts, ``alpha`` outside (0, 1)) or ``GuardInputError`` (what parsing the
prompts finds: no positive prompt left, more than ``MAX_PROMPTS`` parts after generator
syntax); 503 ``MissingExtraError`` or ``GuardModelError`` (the semantic model is missing or
damaged on the server: an installation problem), ``Busy`` or ``Timeout``.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tracemark.errors import ConfigError
from tracemark.guard.screen import DEFAULT_ALPHA
from tracemark.guard.types import MAX_PROMPT_CHARS, MAX_PROMPTS
from tracemark.service.app import NAME_RE, ApiError, Key, allow
from tracemark.service.jobs import Job
from tracemark.service.models import _Out

__all__ = ["GuardCache", "GuardPromptIn", "GuardPromptResult", "GuardCalibrated",
           "guard_prompt_router", "MAX_COLLECTIONS", "check_matchers"]

MAX_COLLECTIONS = 64
"""The most collections one prompt request names."""

PromptText = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=r"\S",
                                  description="A prompt (generator syntax is read: weights, "
                                              "AND, ::, --no); not blank.")]


class PromptIn(BaseModel):
    """A prompt with its weight and whether it is a negative prompt."""

    model_config = ConfigDict(extra="forbid")

    text: PromptText
    weight: float = Field(1.0, ge=-1000, le=1000, allow_inf_nan=False,
                          description="The prompt's weight (below 0: it steers away).")
    negative: bool = Field(False, description="A negative prompt.")


class GuardPromptIn(BaseModel):
    """One generation request to screen; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    collections: list[Annotated[str, Field(pattern=NAME_RE.pattern)]] | None = Field(
        None, min_length=1, max_length=MAX_COLLECTIONS,
        description="The collections whose concepts to screen against (default: every "
                    "collection the key may read).")
    prompts: list[PromptText | PromptIn] = Field(
        min_length=1, max_length=MAX_PROMPTS,
        description="The request's prompts, screened together (a concept split across "
                    "them is caught).")
    negative: list[PromptText] = Field(default_factory=list, max_length=MAX_PROMPTS,
                                       description="Negative prompts (naming a concept "
                                                   "there is allowed).")
    alpha: float = Field(DEFAULT_ALPHA, gt=0, lt=1,
                         description="False-positive rate of a decision on benign prompts, "
                                     "per collection.")


class PromptEvidence(_Out):
    how: Literal["name", "alias", "misspelling", "split", "script", "trait"] = Field(
        description="What matched: the name, an alias, a misspelling, a name split across "
                    "words or prompts, another script or look-alike letters, a trait "
                    "(semantic).")
    text: str = Field(description="The prompt's words.")
    matched: str = Field(description="The name, alias or trait they match.")
    prompt: int | None = Field(description="The prompt's index in the parsed request.")
    span: list[int] | None = Field(description="Character offsets in that prompt (end "
                                               "exclusive), or null.")
    score: float = Field(description="The matcher's own score in [0, 1].")


class PromptMatch(_Out):
    concept: str = Field(description="The concept's id.")
    name: str
    kind: Literal["character", "artwork", "style", "brand", "person"]
    owner: str
    collection: str = Field(description="The collection the concept is registered in.")
    score: float = Field(description="-log10 of the p-value.")
    p_value: float | None = Field(description="Of the score under the benign background.")
    flagged: bool = Field(description="p_value <= alpha.")
    evidence: list[PromptEvidence]


class GuardPromptResult(_Out):
    """:meth:`tracemark.guard.PromptScreening.to_dict` over several collections."""

    decision: Literal["allow", "rewrite", "block"]
    flagged: bool
    alpha: float
    collections: list[str] = Field(description="The collections screened against.")
    matches: list[PromptMatch] = Field(description="Flagged first, then by p-value.")
    rewritten: str | None = Field(description="With ``rewrite``: the positive prompts without "
                                              "the flagged concepts.")
    negative: list[str] = Field(description="When flagged: terms for the negative prompt "
                                            "(names, aliases, traits).")
    matchers: list[str] = Field(description="The matchers that ran.")
    seconds: float = Field(description="Screening time (calibration excluded).")


class GuardCalibrated(_Out):
    collection: str
    concepts: int = Field(ge=0, description="Concepts calibrated for.")
    matchers: list[str]
    size: int = Field(ge=0, description="Benign requests in the calibration.")
    stamp: str = Field(description="The digest of the concepts it fits.")
    seconds: float = Field(description="Time taken (0 when a cached calibration was stored).")


def check_matchers(names: list[str] | None) -> None:
    """Raise :class:`~tracemark.errors.ConfigError` for a matcher name that is not
    ``lexical`` or ``semantic`` (or another registered one), or an empty list."""
    if names is None:
        return
    import tracemark.guard.lexical  # noqa: F401 - registers itself
    from tracemark.guard.matchers import MATCHERS

    unknown = [n for n in names if n not in MATCHERS and n != "semantic"]
    if not names or unknown:
        raise ConfigError(f"guard_matchers: unknown {unknown or 'empty list'}; known: "
                          f"{', '.join(sorted({*MATCHERS, 'semantic'}))}")


class GuardCache:
    """Calibrated :class:`~tracemark.guard.Guard` s by (collection, generation, registry
    stamp, matchers); an entry is replaced when the stamp moves. Building one holds a lock
    per key, so concurrent requests calibrate once."""

    def __init__(self, matchers: list[str] | None) -> None:
        self.matchers = matchers
        self._guards: dict[tuple[str, int], tuple[str, Any]] = {}
        self._locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str, generation: int, store: Any) -> tuple[Any, float]:
        """The calibrated guard of the collection ``store`` now, and the seconds spent
        building it here (0 from the cache)."""
        from tracemark.guard import ConceptRegistry

        registry = ConceptRegistry(store)
        stamp = registry.stamp()
        slot = (name, generation)
        with self._lock:
            hit = self._guards.get(slot)
            if hit is not None and hit[0] == stamp:
                return hit[1], 0.0
            build_lock = self._locks.setdefault((name, generation, stamp), threading.Lock())
        with build_lock:
            with self._lock:
                hit = self._guards.get(slot)
                if hit is not None and hit[0] == stamp:
                    return hit[1], 0.0
            t0 = time.perf_counter()
            try:
                guard = registry.guard(self.matchers)
                if guard.concepts and guard.calibration is None:
                    guard.calibrate()
                with self._lock:
                    self._guards[slot] = (stamp, guard)
            finally:
                with self._lock:
                    self._locks.pop((name, generation, stamp), None)
            return guard, time.perf_counter() - t0

    def put(self, name: str, generation: int, stamp: str, guard: Any) -> None:
        with self._lock:
            self._guards[(name, generation)] = (stamp, guard)


def guard_prompt_router(state: Any) -> APIRouter:
    """The prompt-screening routes (module docstring) over the service state ``state``
    (:class:`tracemark.service.app._State`), mounted under ``/v1``; the guard cache is
    ``state.prompt_guards``."""
    router = APIRouter(tags=["guard"])
    matchers = state.settings.guard_matchers
    check_matchers(matchers)
    cache = state.prompt_guards = GuardCache(None if matchers is None else list(matchers))
    if getattr(state.settings, "guard_warmup", False):
        threading.Thread(target=_warm_up, args=(matchers,), name="tracemark-guard-warmup",
                         daemon=True).start()

    @router.post("/guard/prompt", response_model=GuardPromptResult,
                 summary="Screen a generation request's prompts: one decision, mitigation.",
                 responses={403: {"description": "A named collection the key may not read"},
                            404: {"description": "UnknownCollection"},
                            422: {"description": "ValidationError or GuardInputError"},
                            503: {"description": "MissingExtraError or GuardModelError (the "
                                                 "server's semantic model), Busy, Timeout"}})
    async def guard_prompt(body: GuardPromptIn, key: Key) -> dict[str, Any]:
        """Screen the request against the protected concepts of ``collections`` (module
        docstring): ``allow``, ``rewrite`` (``rewritten`` and ``negative`` given) or
        ``block``."""
        from tracemark.guard.request import prompts_of
        from tracemark.guard.screen import screen_with

        if body.collections is None:
            names = [n for n in state.names() if key.allows(n, write=False)]
        else:
            names = list(dict.fromkeys(body.collections))
            for name in names:
                allow(key, name, write=False)
        prompts = [p if isinstance(p, str) else p.model_dump() for p in body.prompts]
        ps = prompts_of(prompts, body.negative)  # GuardInputError: 422

        def work(_job: Job) -> dict[str, Any]:
            guards = {}
            for name in names:
                entry = state.get(name)  # 404
                with state.reading(name) as store:
                    guards[name] = cache.get(name, entry.generation, store)[0]
            res = screen_with(guards, ps, alpha=body.alpha)
            if not res.matchers:
                res.matchers = list(cache.matchers or [])
            return {**res.to_dict(), "collections": names}
        return await state.run(work)

    @router.post("/collections/{name}/guard/calibrate", response_model=GuardCalibrated,
                 summary="Calibrate the collection's prompt screen and store it.",
                 responses={404: {"description": "UnknownCollection"},
                            409: {"description": "ConceptsChanged: the concepts changed "
                                                 "while it ran; call again"},
                            503: {"description": "MissingExtraError or GuardModelError, Busy, "
                                                 "Timeout (the calibration goes on and is "
                                                 "kept: call again to store it)"}})
    async def guard_calibrate(name: str, key: Key) -> dict[str, Any]:
        """Calibrate the prompt screen of the collection's concepts on the benign background
        and store it with the collection (every replica uses it)."""
        from tracemark.guard import ConceptRegistry

        if not key.allows(name, write=True):
            raise ApiError(403, "Forbidden", f"this API key may not write collection {name!r}")

        def work(job: Job) -> dict[str, Any]:
            entry = state.get(name)
            with state.reading(name) as store:
                stamp = ConceptRegistry(store).stamp()
                guard, seconds = cache.get(name, entry.generation, store)
            if guard.calibration is None:  # no concepts: a calibration of nothing
                guard.calibrate()
            cal = guard.calibration
            with state.writing(name, job) as writing:
                registry = ConceptRegistry(writing.store)
                if registry.stamp() != stamp:
                    raise ApiError(409, "ConceptsChanged", "the concepts changed while the "
                                   "calibration ran: call again")
                registry.keep_calibration(cal)
                state.commit(writing, job)
            return {"collection": name, "concepts": len(guard.concepts),
                    "matchers": list(guard.matchers or []), "size": cal.size,
                    "stamp": cal.stamp, "seconds": round(seconds, 3)}
        return await state.run(work)

    return router


def _warm_up(matchers: list[str] | None) -> None:
    """Embed the default benign background with the process's sentence encoder (its cache
    keeps the embeddings: :data:`tracemark.guard.encoder.CACHE_TEXTS`), so a guard's first
    calibration re-embeds only its concepts' near-misses. Best effort: any failure is left
    to the first real calibration to report."""
    import contextlib

    from tracemark.guard import Concept
    from tracemark.guard.background import background_prompts
    from tracemark.guard.screen import Guard, default_matchers

    names = default_matchers() if matchers is None else list(matchers)
    if "semantic" not in names:
        return
    with contextlib.suppress(Exception):
        guard = Guard([Concept("warm-up", traits=("warm-up",))], matchers=["semantic"])
        guard.calibrate(background_prompts())
