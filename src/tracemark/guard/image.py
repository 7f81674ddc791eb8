"""Output screening: is a generated image a protected work? One decision and its evidence.

Three checks, each the one tracemark already has:

* **copy** -- copy detection against the collection's references
  (:meth:`tracemark.copydetect.CopyIndex.search_described`: retrieval, RANSAC verification,
  a p-value against the collection's calibrated background). A copy of an image that is a
  concept's reference (:attr:`Concept.references <tracemark.guard.types.Concept>`) names
  that concept; a copy of any other registered image is reported as a protected work of
  its own (a stand-in concept ``image-<ref_id>``, kind ``artwork``, the reference's owner).
  The copy keeps its matched region: ``query_region``, the reference's outline in the
  generated image's pixels (4 ``[x, y]`` corners), and ``region``, the part of the
  reference it covers.
* **watermark** -- tracemark's watermark (:mod:`tracemark.watermark`, blind detection of
  ``method`` with the collection's or the user's ``key``): a mark present at
  ``watermark_alpha`` means the image derives from a work marked with that key (stand-in
  concept ``watermarked-work`` with the payload as evidence).
* **manifest** -- a C2PA manifest (:func:`tracemark.credentials.manifest.read_manifest`)
  from another owner: one whose signer (the certificate's common name, organisation or
  issuer; authenticated by the signature) is not in ``own_signers``. Its ingredients and
  assertions *declare* a protected work when an ingredient's title, the manifest's title or
  a schema.org / Dublin Core assertion's text names a concept (the lexical matcher,
  :class:`tracemark.guard.lexical.LexicalMatcher`, score >= :data:`DECLARED_MIN_SCORE`), or
  when a manifest of the store carries a PDQ soft binding
  (:data:`~tracemark.credentials.manifest.SOFT_BINDING_FINGERPRINT`) within
  :data:`~tracemark.copydetect.decide.PDQ_MATCH_DISTANCE` bits of a registered image. The
  claim generator is reported but never makes a manifest the platform's own: anyone can
  write it.

**Decision rule** (:func:`decide`), the one place it is written:

* ``block`` -- a copy is significant (p-value <= ``alpha``; on an uncalibrated collection,
  the collection's own rule: :attr:`Match.decision <tracemark.copydetect.Match>`), or the
  key's watermark is present (p-value <= ``watermark_alpha``), or a foreign manifest whose
  signature validates (c2pa state ``valid`` or ``trusted``) declares a protected work;
* ``review`` -- weak evidence only: a copy with p in (``alpha``, ``10 * alpha``], a
  watermark score with p in (``watermark_alpha``, ``10 * watermark_alpha``], or a foreign
  manifest that declares a protected work but does not validate (``invalid``,
  ``unsupported``: its claim cannot be relied on, nor dismissed);
* ``allow`` -- otherwise.

The work splits in two so that batches run it on Ray (:mod:`tracemark.batch`):
:func:`inspect_image` (decode, describe, detect the mark, read the manifest: no index
needed, runs on a worker) and :func:`decide` (searches the collection and decides: runs
where the collection is open). :func:`screen_image` does both.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tracemark.errors import ConfigError, ReferenceNotFoundError
from tracemark.guard.types import (
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    Concept,
    ConceptKind,
    ConceptMatch,
    Evidence,
    Prompt,
    PromptSet,
)
from tracemark.imageio import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from tracemark.copydetect import CopyIndex, Match
    from tracemark.copydetect.describe import QueryDescriptors
    from tracemark.credentials.manifest import ManifestReading
    from tracemark.watermark.base import Detection

__all__ = ["DECISIONS", "DECLARED_MIN_SCORE", "REVIEW_FACTOR", "CopyFinding", "ImageFacts",
           "ImageScreening", "ManifestFinding", "decide", "inspect_image", "read_finding",
           "screen_image"]

DECISIONS = ("allow", "review", "block")
"""The decisions of output screening, weakest first."""
REVIEW_FACTOR = 10.0
"""Weak evidence: a p-value above the decision's alpha but at most this times it."""
DECLARED_MIN_SCORE = 0.9
"""The lexical score a manifest's text needs to declare a concept: the name or an alias
(1.0), split or in another script (0.9-1.0); one-edit misspellings (0.8) are not a
declaration."""
WATERMARK_CONCEPT = Concept(name="a work marked with this key", kind=ConceptKind.ARTWORK,
                            id="watermarked-work")
"""The stand-in concept of a watermark match (the mark names no concept)."""
_SCHEMA_PREFIXES = ("stds.schema-org.", "schema.org.", "dc", "c2pa.metadata", "cawg.metadata")
_TEXT_KEYS = ("name", "title", "headline", "alternateName", "about", "description",
              "keywords", "dc:title", "dc:subject", "dc:description", "isBasedOn", "author",
              "creator", "copyrightHolder", "copyrightNotice", "identifier")


@dataclass(frozen=True)
class ManifestFinding:
    """What a C2PA manifest says of the image: ``state`` (c2pa's validation,
    :attr:`ManifestReading.state <tracemark.credentials.manifest.ManifestReading>`),
    ``signer`` (the certificate's common name, else its issuer), ``issuer``, ``generator``
    (the claim generator's name; unauthenticated), ``own`` (the signer is in
    ``own_signers``), ``declared`` (the texts of its ingredients and assertions that name
    what the image is made from) and ``fingerprints`` (the PDQ soft bindings of the
    store's manifests, 32 bytes each)."""

    state: str
    signer: str | None = None
    issuer: str | None = None
    generator: str | None = None
    own: bool = False
    declared: tuple[str, ...] = ()
    fingerprints: tuple[bytes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "signer": self.signer, "issuer": self.issuer,
                "generator": self.generator, "own": self.own, "declared": list(self.declared),
                "fingerprints": [f.hex() for f in self.fingerprints]}


@dataclass(frozen=True)
class CopyFinding:
    """One copy of a registered image: ``ref_id`` and ``source`` of the reference,
    ``concepts`` (ids of the concepts it is a reference of; empty for a registered image no
    concept names), ``p_value`` (None on an uncalibrated collection), ``inliers``,
    ``query_region`` (the reference's outline in the screened image, 4 ``[x, y]`` corners,
    pixels), ``region`` (the screened image's outline in the reference's pixels) and
    ``decision`` (``block`` or ``review``)."""

    ref_id: int
    source: str | None
    concepts: tuple[str, ...]
    p_value: float | None
    score: float
    inliers: int
    query_region: list[list[float]] | None
    region: list[list[float]] | None
    decision: str

    def to_dict(self) -> dict[str, Any]:
        return {"ref_id": self.ref_id, "source": self.source, "concepts": list(self.concepts),
                "p_value": self.p_value, "score": round(float(self.score), 6),
                "inliers": self.inliers, "query_region": self.query_region,
                "region": self.region, "decision": self.decision}


@dataclass
class ImageFacts:
    """What :func:`inspect_image` computed of one image, before the collection is asked:
    the query's descriptors, the watermark detection (None without a key), the manifest
    reading (None without the file's bytes: an array was given) or why a check did not
    run (``skipped``), the image's ``[width, height]`` and the seconds taken. Picklable
    (a Ray task's result)."""

    query: QueryDescriptors
    size: tuple[int, int]
    detection: Detection | None = None
    reading: ManifestReading | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ImageScreening:
    """The answer of output screening for one image: ``decision`` (``allow``, ``review``,
    ``block``: the module's rule), ``matches`` (one :class:`ConceptMatch` per concept or
    protected work, flagged (blocking) first, with :class:`Evidence` of ``how`` ``image``,
    ``watermark`` or ``manifest``), ``copies`` (every copy found, with its regions),
    ``watermark`` (the detection, or None), ``manifest`` (what the manifest says, or None
    when the image has none), ``reasons`` (one line per piece of evidence that decided),
    ``alpha`` and ``watermark_alpha`` (the false-positive rates of the copy and watermark
    decisions), ``checks`` (each check: ``ran`` or why it was skipped) and ``seconds``."""

    decision: str
    matches: list[ConceptMatch] = field(default_factory=list)
    copies: list[CopyFinding] = field(default_factory=list)
    watermark: dict[str, Any] | None = None
    manifest: ManifestFinding | None = None
    reasons: list[str] = field(default_factory=list)
    alpha: float = 0.0
    watermark_alpha: float = 0.0
    checks: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def flagged(self) -> bool:
        return self.decision != "allow"

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": self.reasons,
                "matches": [m.to_dict() for m in self.matches],
                "copies": [c.to_dict() for c in self.copies], "watermark": self.watermark,
                "manifest": None if self.manifest is None else self.manifest.to_dict(),
                "alpha": self.alpha, "watermark_alpha": self.watermark_alpha,
                "checks": self.checks, "seconds": round(self.seconds, 6)}


# --- checking the inputs ------------------------------------------------------------------


def _check_alpha(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) \
            or not 0 < value < 1 or value * REVIEW_FACTOR >= 1:
        raise ConfigError(f"{what} must be a number in (0, {1 / REVIEW_FACTOR}), got {value!r}")
    return float(value)


def _check_signers(own_signers: Any) -> tuple[str, ...]:
    if isinstance(own_signers, str) or not isinstance(own_signers, Sequence | frozenset | set):
        raise ConfigError("own_signers must be a list of signer names")
    if not all(isinstance(s, str) and s.strip() for s in own_signers):
        raise ConfigError("own_signers must hold non-empty str")
    return tuple(s.strip().casefold() for s in own_signers)


# --- the worker's part: facts of one image ------------------------------------------------


def _file_bytes(image: Any) -> bytes | None:
    """The file's bytes when ``image`` is a file (path or bytes), else None."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | Path):
        try:
            return Path(image).read_bytes()
        except OSError:
            return None  # the loader has said what is wrong with it
    return None


def inspect_image(image: Any, *, key: Any = None, method: str = "lattice",
                  watermark_alpha: float = 1e-4, trust_pem: str | None = None,
                  allowed_pem: str | None = None, max_features: int | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, formats: Any = "default",
                  data: bytes | None = None) -> ImageFacts:
    """The facts of one image that need no collection: its copy-detection descriptors
    (:func:`tracemark.copydetect.describe.describe_query`), the watermark ``method``'s
    blind detection with ``key`` (skipped when ``key`` is None) and its C2PA manifest
    (:func:`~tracemark.credentials.manifest.read_manifest` with c2pa's trust settings
    ``trust_pem``/``allowed_pem``; skipped when the file's bytes are unknown: give ``data``
    beside an array).

    ``image``: a path, bytes or anything :func:`tracemark.imageio.load_image` takes.
    Raises the loader's typed errors (:class:`~tracemark.errors.EmptyImageError`,
    :class:`~tracemark.errors.CorruptImageError`,
    :class:`~tracemark.errors.ImageTooLargeError` past ``max_pixels``,
    :class:`~tracemark.errors.ImageTooSmallError` below PDQ's 5 px), the key's
    :class:`~tracemark.errors.WatermarkKeyError`, :class:`~tracemark.errors.ConfigError`
    for a bad ``watermark_alpha``."""
    from tracemark.copydetect.describe import DEFAULT_MAX_FEATURES, describe_query
    from tracemark.imageio import load_image, sniff_media_type

    t0 = time.perf_counter()
    wa = _check_alpha(watermark_alpha, "watermark_alpha")
    raw = data if data is not None else _file_bytes(image)
    rgb = load_image(raw if raw is not None else image, max_pixels=max_pixels,
                     formats=formats, name=str(image) if isinstance(image, str | Path) else None)
    facts = ImageFacts(query=describe_query(rgb, max_features=max_features or
                                            DEFAULT_MAX_FEATURES),
                       size=(int(rgb.shape[1]), int(rgb.shape[0])))
    if key is None:
        facts.skipped["watermark"] = "no key"
    else:
        from tracemark.watermark import get_method

        # detect at the review band's alpha: present at watermark_alpha is decided later
        facts.detection = get_method(method).detect(rgb, key, alpha=wa)
    if raw is None:
        facts.skipped["manifest"] = "no file bytes (an array was given)"
    else:
        from tracemark.credentials.manifest import read_manifest

        facts.reading = read_manifest(raw, sniff_media_type(raw[:64]), trust_pem=trust_pem,
                                      allowed_pem=allowed_pem)
    facts.seconds = time.perf_counter() - t0
    return facts


# --- what a manifest declares ---------------------------------------------------------------


def _strings(value: Any, out: list[str], depth: int = 0) -> None:
    """The strings of a JSON value (objects' values under :data:`_TEXT_KEYS` and lists)."""
    if depth > 6 or len(out) >= MAX_PROMPTS:
        return
    if isinstance(value, str):
        text = value.strip()[:MAX_PROMPT_CHARS]
        if text and not text.startswith(("http://", "https://", "urn:", "xmp.")):
            out.append(text)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k in _TEXT_KEYS or k.split(":")[-1] in _TEXT_KEYS:
                _strings(v, out, depth + 1)


def _fingerprints(store_json: str | None, manifest: dict[str, Any]) -> tuple[bytes, ...]:
    import json

    from tracemark.credentials.manifest import SOFT_BINDING_FINGERPRINT

    manifests = [manifest]
    if store_json:
        with contextlib.suppress(ValueError, AttributeError):  # an odd store: the active only
            manifests += list((json.loads(store_json).get("manifests") or {}).values())
    out: list[bytes] = []
    for man in manifests:
        for a in (man.get("assertions") or []) if isinstance(man, dict) else []:
            data = a.get("data") if isinstance(a, dict) else None
            if not isinstance(data, dict) or data.get("alg") != SOFT_BINDING_FINGERPRINT:
                continue
            for block in data.get("blocks") or []:
                try:
                    value = base64.b64decode(block.get("value", ""), validate=True)
                except (ValueError, AttributeError, TypeError):
                    continue
                if len(value) == 32 and value not in out:
                    out.append(value)
    return tuple(out)


def read_finding(reading: ManifestReading, own_signers: Sequence[str] = ()) -> ManifestFinding:
    """What ``reading`` says (:class:`ManifestFinding`): its signer, whether that signer is
    one of ``own_signers`` (case-insensitive, compared with the certificate's common name,
    organisation and issuer), and what its ingredients and assertions declare."""
    own = _check_signers(own_signers)
    man = reading.manifest or {}
    sig = man.get("signature_info") or {}
    names = [sig.get(k) for k in ("common_name", "issuer", "organization")]
    gen_info = man.get("claim_generator_info") or []
    generator = (gen_info[0].get("name") if gen_info and isinstance(gen_info[0], dict)
                 else man.get("claim_generator"))
    declared: list[str] = []
    if isinstance(man.get("title"), str):
        _strings(man["title"], declared)
    for ing in man.get("ingredients") or []:
        if isinstance(ing, dict):
            _strings(ing.get("title"), declared)
    for a in man.get("assertions") or []:
        if isinstance(a, dict) and str(a.get("label", "")).startswith(_SCHEMA_PREFIXES):
            _strings(a.get("data"), declared)
    return ManifestFinding(
        state=reading.state, signer=sig.get("common_name") or sig.get("issuer"),
        issuer=sig.get("issuer"), generator=generator if isinstance(generator, str) else None,
        own=any(isinstance(n, str) and n.strip().casefold() in own for n in names),
        declared=tuple(dict.fromkeys(declared))[:MAX_PROMPTS],
        fingerprints=_fingerprints(reading.store_json, man) if man else ())


# --- the collection's part: the decision ----------------------------------------------------


class _Matches:
    """ConceptMatch per concept (or stand-in), strongest decision kept."""

    def __init__(self) -> None:
        self.by_id: dict[str, ConceptMatch] = {}

    def add(self, concept: Concept, ev: Evidence, *, score: float, p_value: float | None,
            block: bool) -> None:
        m = self.by_id.get(concept.id)
        if m is None:
            m = self.by_id[concept.id] = ConceptMatch(concept, score, [], p_value, block)
        m.evidence.append(ev)
        m.score = max(m.score, score)
        m.flagged = m.flagged or block
        if p_value is not None and (m.p_value is None or p_value < m.p_value):
            m.p_value = p_value

    def ranked(self) -> list[ConceptMatch]:
        return sorted(self.by_id.values(), key=lambda m: (not m.flagged, -m.score, m.concept.id))


def _work(ci: CopyIndex, ref_id: int) -> Concept:
    """The stand-in concept of a registered image no concept names."""
    owner = ""
    with contextlib.suppress(ReferenceNotFoundError):  # removed meanwhile: no owner known
        owner = ci.index.get(ref_id).owner or ""
    return Concept(name=f"registered image {ref_id}", kind=ConceptKind.ARTWORK,
                   owner=owner[:200], references=(ref_id,), id=f"image-{ref_id}")


def _copy_level(m: Match, alpha: float) -> str | None:
    if m.p_value is None:  # uncalibrated: the collection's own rule, no review band
        return "block" if m.decision else None
    if m.p_value <= alpha:
        return "block"
    if m.p_value <= REVIEW_FACTOR * alpha:
        return "review"
    return None


def decide(facts: ImageFacts, collection: CopyIndex, *, concepts: Sequence[Concept] = (),
           own_signers: Sequence[str] = (), alpha: float | None = None,
           watermark_alpha: float = 1e-4, k: int = 10) -> ImageScreening:
    """Search ``collection`` for the image of ``facts`` and decide (the module's rule).

    ``concepts``: the protected concepts (the collection's concept registry); a copy of
    one of their references names them, and their names in a foreign manifest declare
    them. ``alpha``: the copy decision's false-positive rate (default the collection's
    :attr:`MatchConfig.alpha <tracemark.copydetect.MatchConfig>`, 1e-3);
    ``watermark_alpha``: the watermark's (default
    :data:`tracemark.watermark.DEFAULT_ALPHA`, 1e-4); both in (0, 0.1) so that the review
    band ``10 * alpha`` stays a probability. ``k``: copies verified and kept at most.
    Raises :class:`~tracemark.errors.ConfigError` for bad settings, the collection's
    errors (closed, unreachable vector store)."""
    t0 = time.perf_counter()
    a = _check_alpha(collection.config.alpha if alpha is None else alpha, "alpha")
    wa = _check_alpha(watermark_alpha, "watermark_alpha")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise ConfigError(f"k must be an int in [1, 1000], got {k!r}")
    concepts = tuple(concepts)
    if not all(isinstance(c, Concept) for c in concepts):
        raise ConfigError("concepts must be Concept records")
    own = _check_signers(own_signers)
    named: dict[int, list[Concept]] = {}
    for c in concepts:
        for r in c.references:
            named.setdefault(r, []).append(c)
    out = ImageScreening(decision="allow", alpha=a, watermark_alpha=wa,
                         checks={"copy": "ran", **{c: "skipped: " + why
                                                    for c, why in facts.skipped.items()}})
    found = _Matches()
    levels: list[str] = []

    # (a) copies of registered images
    for m in collection.search_described(facts.query, k=k):
        level = _copy_level(m, a)
        if level is None:
            continue
        owners = named.get(m.ref_id) or [_work(collection, m.ref_id)]
        out.copies.append(CopyFinding(
            ref_id=m.ref_id, source=m.source, concepts=tuple(c.id for c in named.get(m.ref_id, [])),
            p_value=m.p_value, score=m.score, inliers=m.inliers, query_region=m.query_region,
            region=m.region, decision=level))
        for c in owners:
            found.add(c, Evidence("image", f"image {m.ref_id}" + (f" ({m.source})" if m.source
                                                                  else ""),
                                  f"reference {m.ref_id}", score=m.score),
                      score=m.score, p_value=m.p_value, block=level == "block")
        levels.append(level)
        out.reasons.append(f"{level}: a copy of registered image {m.ref_id} "
                           + (f"(p={m.p_value:.3g})" if m.p_value is not None
                              else f"({m.inliers} inliers, uncalibrated collection)"))

    # (b) the watermark
    det = facts.detection
    if det is not None:
        out.checks["watermark"] = "ran"
        out.watermark = {"present": det.present, "p_value": det.p_value, "score": float(det.score),
                         "payload": None if det.payload is None else det.payload.hex(),
                         "method": det.method}
        p = det.p_value
        level = ("block" if det.present is True and (p is None or p <= wa) else
                 "review" if p is not None and p <= REVIEW_FACTOR * wa else None)
        if level is not None:
            payload = "0x" + det.payload.hex() if det.payload is not None else "unread"
            found.add(WATERMARK_CONCEPT, Evidence("watermark", f"payload {payload}", det.method,
                                                  score=1.0 - (p or 0.0)),
                      score=1.0 - (p or 0.0), p_value=p, block=level == "block")
            levels.append(level)
            out.reasons.append(f"{level}: the key's {det.method} watermark (p={p:.3g})"
                               if p is not None else f"{level}: the key's watermark")

    # (c) a manifest from another owner that declares a protected work
    if facts.reading is not None:
        out.checks["manifest"] = "ran"
        if facts.reading.state != "absent":
            fnd = read_finding(facts.reading, own)
            out.manifest = fnd
            if not fnd.own:
                _declared(fnd, collection, concepts, named, found, levels, out)

    out.matches = found.ranked()
    out.decision = "block" if "block" in levels else "review" if "review" in levels else "allow"
    out.seconds = facts.seconds + time.perf_counter() - t0
    return out


def _declared(fnd: ManifestFinding, ci: CopyIndex, concepts: tuple[Concept, ...],
              named: dict[int, list[Concept]], found: _Matches, levels: list[str],
              out: ImageScreening) -> None:
    """The protected works a foreign manifest declares (its names, its fingerprints)."""
    from tracemark.copydetect.decide import PDQ_MATCH_DISTANCE

    level = "block" if fnd.state in ("valid", "trusted") else "review"
    who = fnd.signer or "an unknown signer"
    if fnd.declared and concepts:
        from tracemark.guard.lexical import LexicalMatcher

        texts = [t for t in fnd.declared if t][:MAX_PROMPTS]
        prompts = PromptSet(tuple(Prompt(t) for t in texts))
        for cm in LexicalMatcher(concepts).match(prompts):
            evs = [e for e in cm.evidence if e.score >= DECLARED_MIN_SCORE]
            if not evs:
                continue
            for e in evs:
                found.add(cm.concept, Evidence("manifest", e.text, e.matched, prompt=e.prompt,
                                               span=e.span, score=e.score),
                          score=e.score, p_value=None, block=level == "block")
            levels.append(level)
            out.reasons.append(f"{level}: a {fnd.state} manifest signed by {who} declares "
                               f"{cm.concept.name!r}")
    if fnd.fingerprints and len(ci) > 0:
        for fp in fnd.fingerprints:
            row = np.frombuffer(fp, np.uint8)[None, :]
            for hit in ci.index.search("pdq", row, 3)[0]:
                if hit.score > PDQ_MATCH_DISTANCE:
                    continue
                for c in named.get(hit.ref_id) or [_work(ci, hit.ref_id)]:
                    found.add(c, Evidence("manifest", f"PDQ soft binding {fp.hex()[:16]}...",
                                          f"reference {hit.ref_id}",
                                          score=1 - hit.score / 256),
                              score=1 - hit.score / 256, p_value=None, block=level == "block")
                levels.append(level)
                out.reasons.append(f"{level}: a {fnd.state} manifest signed by {who} carries "
                                   f"the fingerprint of registered image {hit.ref_id} "
                                   f"({int(hit.score)} bits)")


def screen_image(image: Any, collection: CopyIndex, *, concepts: Sequence[Concept] = (),
                 key: Any = None, method: str = "lattice", own_signers: Sequence[str] = (),
                 trust_pem: str | None = None, allowed_pem: str | None = None,
                 alpha: float | None = None, watermark_alpha: float = 1e-4, k: int = 10,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, formats: Any = "default",
                 data: bytes | None = None) -> ImageScreening:
    """Screen one generated image against ``collection``: :func:`inspect_image` then
    :func:`decide` (see them and the module's decision rule for the arguments).

    ``image``: a path, bytes (the manifest is read from them) or an RGB ``uint8`` array
    ``(H, W, 3)`` (no manifest check unless ``data`` gives the file's bytes). ``key``: the
    collection's or the user's watermark key (str passphrase, bytes, or
    :class:`~tracemark.watermark.WatermarkKey`); None skips the watermark check.
    ``trust_pem``: PEM anchors c2pa trusts (a manifest under them reads ``trusted``).
    Returns an :class:`ImageScreening`; raises the loader's typed errors for a bad image
    and :class:`~tracemark.errors.ConfigError` for bad settings (checked before the image
    is read)."""
    _check_alpha(watermark_alpha, "watermark_alpha")
    if alpha is not None:
        _check_alpha(alpha, "alpha")
    own = _check_signers(own_signers)
    facts = inspect_image(image, key=key, method=method, watermark_alpha=watermark_alpha,
                          trust_pem=trust_pem, allowed_pem=allowed_pem,
                          max_features=collection.config.max_features, max_pixels=max_pixels,
                          formats=formats, data=data)
    return decide(facts, collection, concepts=concepts, own_signers=own, alpha=alpha,
                  watermark_alpha=watermark_alpha, k=k)

