"""The generation guard's evaluation: detection per prompt kind, benign false positives,
confusion and latency of a prompt screen on a labelled set of requests.

The data set (benchmarks/data/guard/: ``concepts.json`` and ``prompts.jsonl``, written for
the project, CC0; see its README) holds invented protected concepts and requests of five
kinds: ``direct`` (the name or an alias), ``indirect`` (traits described without the
name), ``misspelled`` (typos, phonetic spellings, leetspeak, look-alike letters),
``split`` (the name broken up or across prompts, traits across a batch) and ``benign``
(everyday prompts, near-misses, names only in a negative prompt). Each concept and each
request belongs to one split: ``dev`` (for tuning thresholds) or ``test`` (the reported
figures).

:func:`run_guard_eval` calls a screen (any ``PromptSet -> PromptScreening`` callable: the
guard's own, or a baseline such as :func:`name_lookup_screen`) once per request of a split
and counts, as the ISC metrics of sscd-copy-detection count typed predictions against
typed ground truth:

* ``detected``: the request is flagged and the expected concept is among the flagged
  matches; the rate comes with its Wilson 95 % interval
  (:func:`tracemark.metrics.wilson_interval`);
* ``confused``: a concept other than the expected one is flagged (whether or not the
  expected one is too); ``wrong_only``: flagged, but not the expected concept;
* benign ``false positives``: any concept flagged on a benign request;
* latency: wall-clock time of each call (``time.perf_counter``), milliseconds, p50 / p95 /
  max over the split's requests, and the same divided by the request's prompt count.

A screen that raises a :class:`~tracemark.errors.TracemarkError` on a request is counted
under ``errors`` for that request (neither detected nor a false positive) and the run
carries on; any other exception is a bug and propagates. The result is plain JSON data;
:func:`format_markdown` renders it with the issue's targets (:data:`TARGETS`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracemark.errors import GuardInputError, TracemarkError
from tracemark.guard.types import (
    Concept,
    ConceptMatch,
    Evidence,
    Prompt,
    PromptScreening,
    PromptSet,
)
from tracemark.metrics.detection import wilson_interval

__all__ = ["KINDS", "POSITIVE_KINDS", "SPLITS", "TARGETS", "MINIMUMS", "GuardCase",
           "GuardDataset", "load_dataset", "dataset_counts", "run_guard_eval",
           "name_lookup_screen", "format_markdown", "Screen"]

RESULTS_VERSION = 1
KINDS = ("direct", "indirect", "misspelled", "split", "benign")
POSITIVE_KINDS = KINDS[:-1]
SPLITS = ("dev", "test")
TARGETS: dict[str, float] = {"direct": 0.99, "indirect": 0.90, "misspelled": 0.95,
                             "split": 0.95, "benign_fpr": 0.01,
                             "latency_ms_semantic": 20.0, "latency_ms_lexical": 1.0}
"""The issue's targets (issue 16, item 5): detection rates per kind (at least), the benign
false-positive rate (at most), and the p50 latency per prompt on one core, milliseconds (at
most): with the semantic model, and lexical matching only."""
MINIMUMS: dict[str, int] = {"concepts_dev": 20, "concepts_test": 50, "direct": 4,
                            "indirect": 4, "misspelled": 3, "split": 3, "benign": 1200}
"""What the data set must hold: concepts per split, requests per concept for each positive
kind, benign requests in all."""

Screen = Callable[[PromptSet], PromptScreening]
"""A prompt screen: one request in, its screening out."""


@dataclass(frozen=True)
class GuardCase:
    """One labelled request: ``concept`` is the expected concept's id (None for benign);
    ``variant`` says how the kind was made (``typo``, ``near_generic`` ...); ``near`` the
    concept a benign near-miss was written against."""

    id: str
    concept: str | None
    kind: str
    variant: str
    prompts: PromptSet
    split: str
    near: str | None = None


@dataclass(frozen=True)
class GuardDataset:
    """The concepts (with the split each belongs to) and the labelled requests."""

    concepts: tuple[Concept, ...]
    concept_split: dict[str, str]
    cases: tuple[GuardCase, ...]

    def concepts_of(self, split: str | None = None) -> list[Concept]:
        """The concepts of ``split`` (all when None)."""
        return [c for c in self.concepts if split is None or self.concept_split[c.id] == split]

    def cases_of(self, split: str | None = None) -> list[GuardCase]:
        """The requests of ``split`` (all when None), in file order."""
        return [c for c in self.cases if split is None or c.split == split]


def _bad(where: str, why: str) -> GuardInputError:
    return GuardInputError(f"{where}: {why}")


def _concept(raw: Any, where: str) -> tuple[Concept, str]:
    if not isinstance(raw, dict):
        raise _bad(where, "a concept must be a JSON object")
    data = dict(raw)
    split = data.pop("split", None)
    if split not in SPLITS:
        raise _bad(where, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        concept = Concept.from_dict(data)
    except GuardInputError as exc:
        raise _bad(where, str(exc)) from None
    return concept, split


def _case(raw: Any, where: str, known: dict[str, str]) -> GuardCase:
    if not isinstance(raw, dict):
        raise _bad(where, "a request must be a JSON object")
    extra = set(raw) - {"id", "concept", "kind", "variant", "prompts", "split", "near"}
    if extra:
        raise _bad(where, f"unknown fields: {', '.join(sorted(map(str, extra)))}")
    cid, kind, split = raw.get("id"), raw.get("kind"), raw.get("split")
    if not isinstance(cid, str) or not cid:
        raise _bad(where, "id must be a non-empty str")
    if kind not in KINDS:
        raise _bad(where, f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if split not in SPLITS:
        raise _bad(where, f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    concept, near = raw.get("concept"), raw.get("near")
    if kind == "benign":
        if concept is not None:
            raise _bad(where, "a benign request has concept null")
    elif concept not in known:
        raise _bad(where, f"unknown concept {concept!r}")
    for ref in (concept, near):
        if ref is not None and known.get(ref) != split:
            raise _bad(where, f"concept {ref!r} is not in split {split!r}"
                       if ref in known else f"unknown concept {ref!r}")
    prompts = raw.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise _bad(where, "prompts must be a non-empty list")
    try:
        parsed = []
        for p in prompts:
            if not isinstance(p, dict) or set(p) - {"text", "weight", "negative"}:
                raise GuardInputError("a prompt is {text, weight?, negative?}")
            negative = p.get("negative", False)
            if not isinstance(negative, bool):
                raise GuardInputError("negative must be true or false")
            parsed.append(Prompt(p.get("text"), p.get("weight", 1.0), negative))
        pset = PromptSet(tuple(parsed))
    except GuardInputError as exc:
        raise _bad(where, str(exc)) from None
    if not pset.positive:
        raise _bad(where, "a request needs a positive prompt")
    variant = raw.get("variant", "")
    if not isinstance(variant, str):
        raise _bad(where, "variant must be a str")
    return GuardCase(cid, concept, kind, variant, pset, split, near)


def load_dataset(root: Path | str) -> GuardDataset:
    """Read and validate ``root/concepts.json`` and ``root/prompts.jsonl``.

    Raises :class:`~tracemark.errors.GuardInputError` naming the file and line for a
    missing file, malformed JSON, a concept or request that does not validate (unknown
    kind or split, a request naming an unknown concept or one of another split, a benign
    request naming a concept, a request without a positive prompt), or duplicate ids."""
    root = Path(root)
    try:
        head = json.loads((root / "concepts.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuardInputError(f"{root / 'concepts.json'}: {exc}") from None
    items = head.get("concepts") if isinstance(head, dict) else None
    if not isinstance(items, list):
        raise GuardInputError(f"{root / 'concepts.json'}: expected {{\"concepts\": [...]}}")
    concepts, concept_split = [], {}
    for i, raw in enumerate(items):
        concept, split = _concept(raw, f"concepts.json concept {i}")
        if concept.id in concept_split:
            raise _bad(f"concepts.json concept {i}", f"duplicate id {concept.id!r}")
        concepts.append(concept)
        concept_split[concept.id] = split
    cases, ids = [], set()
    path = root / "prompts.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardInputError(f"{path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"prompts.jsonl line {n}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(where, f"not JSON ({exc.msg})") from None
        case = _case(raw, where, concept_split)
        if case.id in ids:
            raise _bad(where, f"duplicate id {case.id!r}")
        ids.add(case.id)
        cases.append(case)
    return GuardDataset(tuple(concepts), concept_split, tuple(cases))


def dataset_counts(dataset: GuardDataset) -> dict[str, Any]:
    """Per split: ``concepts``, requests per ``kind``, per (kind, variant), and the fewest
    requests of each positive kind that any concept of the split has (``min_per_concept``)."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        cases = dataset.cases_of(split)
        per_concept: dict[str, Counter[str]] = {c.id: Counter()
                                                for c in dataset.concepts_of(split)}
        for case in cases:
            if case.concept is not None:
                per_concept[case.concept][case.kind] += 1
        out[split] = {
            "concepts": len(per_concept),
            "kinds": dict(Counter(c.kind for c in cases)),
            "variants": {f"{k}/{v}": n for (k, v), n in
                         sorted(Counter((c.kind, c.variant) for c in cases).items())},
            "min_per_concept": {k: min((cnt[k] for cnt in per_concept.values()), default=0)
                                for k in POSITIVE_KINDS},
        }
    return out


def _rate(k: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"n": 0, "k": 0, "rate": None, "ci95": None}
    lo, hi = wilson_interval(k, n)
    return {"n": n, "k": k, "rate": round(k / n, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def _pct(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _latency(ms: Sequence[float]) -> dict[str, float | None]:
    return {"p50": _round(_pct(ms, 0.5)), "p95": _round(_pct(ms, 0.95)),
            "max": _round(max(ms) if ms else None),
            "mean": _round(sum(ms) / len(ms) if ms else None)}


def _flagged(screening: PromptScreening) -> list[str]:
    if not isinstance(screening, PromptScreening):
        raise TypeError(f"a screen returns a PromptScreening, got {type(screening).__name__}")
    return [m.concept.id for m in screening.matches if m.flagged]


def run_guard_eval(screen: Screen, dataset: GuardDataset, *, split: str = "test",
                   meta: dict[str, Any] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   warmup: int = 3) -> dict[str, Any]:
    """Screen every request of ``split`` once and count (see the module docstring).

    ``screen``: built by the caller over the concepts it registers (usually
    ``dataset.concepts_of(split)``). ``meta``: what to record about the screen (matchers,
    threads, command). ``warmup``: untimed calls on the first requests before timing (a
    lazily loaded model is not counted as a request's latency). Returns JSON data:
    ``kinds`` (per positive kind: n, k detected, rate, ci95, confused, wrong_only, missed,
    errors, per variant), ``benign`` (false positives, with rate and ci95, per variant),
    ``latency_ms`` (request and per_prompt: p50, p95, max, mean), ``failures`` (missed
    positives and flagged benign requests, with what was flagged), ``targets``,
    environment. Raises :class:`~tracemark.errors.GuardInputError` for an unknown split or
    one without requests."""
    if split not in SPLITS:
        raise GuardInputError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    cases = dataset.cases_of(split)
    if not cases:
        raise GuardInputError(f"split {split!r} has no requests")
    for case in cases[:max(0, warmup)]:
        with contextlib.suppress(TracemarkError):
            screen(case.prompts)
    tallies: dict[str, Counter[str]] = defaultdict(Counter)
    variants: dict[str, Counter[str]] = defaultdict(Counter)
    request_ms: list[float] = []
    prompt_ms: list[float] = []
    failures: list[dict[str, Any]] = []
    confusion: Counter[tuple[str, str]] = Counter()
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        try:
            screening = screen(case.prompts)
            error = None
        except TracemarkError as exc:
            screening, error = None, f"{type(exc).__name__}: {exc}"
        dt = 1000 * (time.perf_counter() - t0)
        request_ms.append(dt)
        prompt_ms.append(dt / len(case.prompts.prompts))
        t, v = tallies[case.kind], variants[f"{case.kind}/{case.variant}"]
        t["n"] += 1
        v["n"] += 1
        if screening is None:
            t["errors"] += 1
            v["errors"] += 1
            failures.append({"id": case.id, "kind": case.kind, "variant": case.variant,
                             "expected": case.concept, "flagged": [], "error": error})
        else:
            flagged = _flagged(screening)
            if case.kind == "benign":
                if flagged:
                    t["k"] += 1
                    v["k"] += 1
                    failures.append({"id": case.id, "kind": case.kind, "variant": case.variant,
                                     "near": case.near, "flagged": flagged})
            else:
                hit = case.concept in flagged
                wrong = [f for f in flagged if f != case.concept]
                t["k"] += hit
                v["k"] += hit
                t["confused"] += bool(wrong)
                t["wrong_only"] += bool(wrong) and not hit
                t["missed"] += not flagged
                for w in wrong:
                    confusion[(str(case.concept), w)] += 1
                if not hit:
                    failures.append({"id": case.id, "kind": case.kind, "variant": case.variant,
                                     "expected": case.concept, "flagged": flagged})
        if progress is not None:
            progress(i + 1, len(cases))
    kinds = {}
    for kind in POSITIVE_KINDS:
        t = tallies[kind]
        kinds[kind] = {**_rate(t["k"], t["n"]), "confused": t["confused"],
                       "wrong_only": t["wrong_only"], "missed": t["missed"],
                       "errors": t["errors"],
                       "variants": {name.split("/", 1)[1]: {**_rate(c["k"], c["n"]),
                                                            "errors": c["errors"]}
                                    for name, c in sorted(variants.items())
                                    if name.startswith(kind + "/")}}
    b = tallies["benign"]
    benign = {**_rate(b["k"], b["n"]), "errors": b["errors"],
              "variants": {name.split("/", 1)[1]: {**_rate(c["k"], c["n"]), "errors": c["errors"]}
                           for name, c in sorted(variants.items()) if name.startswith("benign/")}}
    return {
        "version": RESULTS_VERSION,
        "split": split,
        "concepts": len(dataset.concepts_of(split)),
        "requests": len(cases),
        "kinds": kinds,
        "benign": benign,
        "confusion": [{"expected": e, "flagged": f, "n": n}
                      for (e, f), n in confusion.most_common()],
        "latency_ms": {"request": _latency(request_ms), "per_prompt": _latency(prompt_ms)},
        "failures": failures,
        "targets": TARGETS,
        "meta": dict(meta or {}),
        "environment": {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        "python": sys.version.split()[0], "machine": platform.machine(),
                        "processor": platform.processor() or platform.machine(),
                        "platform": platform.platform(), "cpus": os.cpu_count()},
    }


def _names_pattern(names: Iterable[str]) -> re.Pattern[str]:
    alts = sorted({n.casefold() for n in names}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, alts)) + r")(?!\w)")


def name_lookup_screen(concepts: Sequence[Concept]) -> Screen:
    """A baseline screen: flags a concept when its name or an alias appears whole
    (case-folded, at word boundaries) in a positive prompt; nothing else. It is what a
    plain keyword block list catches, and the floor the guard is compared with."""
    patterns = [(c, _names_pattern(c.names)) for c in concepts]

    def screen(prompts: PromptSet) -> PromptScreening:
        t0 = time.perf_counter()
        matches = []
        for concept, pattern in patterns:
            hits = [(i, m) for i, p in enumerate(prompts.prompts) if not p.steers_away
                    for m in pattern.finditer(p.text.casefold())]
            if hits:
                ev = [Evidence("name", m.group(0), m.group(0), i, m.span()) for i, m in hits]
                matches.append(ConceptMatch(concept, 1.0, ev, None, True))
        return PromptScreening("block" if matches else "allow", matches, 0.0,
                               seconds=time.perf_counter() - t0, matchers=["names"])

    return screen


def _fmt_rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "–"
    return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def format_markdown(result: dict[str, Any], command: str = "") -> str:
    """A Markdown report of :func:`run_guard_eval`'s result: one table of rates with their
    95 % intervals and the targets (met, or the shortfall), then latency and confusion."""
    meta = result.get("meta", {})
    semantic = "semantic" in str(meta.get("matchers", ""))
    lat_target = TARGETS["latency_ms_semantic" if semantic else "latency_ms_lexical"]
    env = result["environment"]
    lines = [f"Split `{result['split']}`: {result['concepts']} concepts, "
             f"{result['requests']} requests; screen: {meta.get('screen', '?')}"
             f" (matchers: {meta.get('matchers', '?')}, threads: {meta.get('threads', '?')}); "
             f"{env['date']}, {env['processor']}, {env.get('cpus', '?')} cores, "
             f"Python {env['python']}.", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += ["| kind | requests | detected | rate [95 % CI] | target | met | confused |",
              "|---|---:|---:|---|---:|---|---:|"]
    for kind in POSITIVE_KINDS:
        r = result["kinds"][kind]
        met = "–" if r["rate"] is None else ("yes" if r["rate"] >= TARGETS[kind]
                                             else f"no ({r['rate'] - TARGETS[kind]:+.3f})")
        lines.append(f"| {kind} | {r['n']} | {r['k']} | {_fmt_rate(r)} | >= {TARGETS[kind]} "
                     f"| {met} | {r['confused']} |")
    b = result["benign"]
    met = "–" if b["rate"] is None else ("yes" if b["rate"] <= TARGETS["benign_fpr"]
                                         else f"no ({b['rate'] - TARGETS['benign_fpr']:+.3f})")
    lines.append(f"| benign (false positives) | {b['n']} | {b['k']} | {_fmt_rate(b)} | "
                 f"<= {TARGETS['benign_fpr']} | {met} | – |")
    lat = result["latency_ms"]
    p50 = lat["per_prompt"]["p50"]
    met = "yes" if p50 is not None and p50 <= lat_target else f"no ({p50} ms)"
    lines += ["", "| latency, ms | p50 | p95 | max | mean |", "|---|---:|---:|---:|---:|"]
    for name in ("request", "per_prompt"):
        x = lat[name]
        lines.append(f"| {name.replace('_', ' ')} | {x['p50']} | {x['p95']} | {x['max']} "
                     f"| {x['mean']} |")
    lines += ["", f"Latency target (p50 per prompt, {'semantic' if semantic else 'lexical'}): "
              f"<= {lat_target} ms: {met}."]
    rows = [(f"{k}/{v}", r) for k in POSITIVE_KINDS
            for v, r in result["kinds"][k]["variants"].items()]
    rows += [(f"benign/{v}", r) for v, r in result["benign"]["variants"].items()]
    lines += ["", "| variant | requests | flagged as expected (benign: any) | rate |",
              "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['n']} | {r['k']} | {r['rate']} |" for name, r in rows]
    if result["confusion"]:
        top = ", ".join(f"{c['expected']} -> {c['flagged']} ({c['n']})"
                        for c in result["confusion"][:10])
        lines += ["", f"Most confused (expected -> flagged): {top}."]
    return "\n".join(lines)
