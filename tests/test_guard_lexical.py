"""The lexical matcher, the prompt-syntax parser and the mitigation (issue 16 items 2, 3).

Concepts are invented here; evasions are generated from each name by rules (spacing,
hyphens, leetspeak, look-alike letters, edits), so the tests exercise the kind of case and
not one spelling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracemark.errors import GuardInputError
from tracemark.guard.lexical import EDIT_BUDGET, LexicalMatcher, fold, tokens
from tracemark.guard.matchers import MATCHERS, matcher_class
from tracemark.guard.mitigate import mitigate
from tracemark.guard.syntax import parse_prompt
from tracemark.guard.types import Concept, Prompt, PromptSet

_SYL = ["ka", "zor", "blin", "vex", "mur", "tal", "quon", "dri", "fen", "lox", "sar", "py",
        "gral", "tum", "wex", "oth", "nar", "bel", "cyr", "dov"]


def _name(rng: random.Random, parts: int) -> str:
    return " ".join("".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3))).title()
                    for _ in range(parts))


def _concepts(seed: int = 0, n: int = 12) -> list[Concept]:
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        name = _name(rng, rng.choice([1, 2, 2, 3]))
        if name.casefold() in seen or len(name.replace(" ", "")) < 6:
            continue
        seen.add(name.casefold())
        out.append(Concept(name, aliases=(_name(rng, 2),), traits=("a glowing green visor",)))
    return out


CONCEPTS = _concepts()
MATCHER = LexicalMatcher(CONCEPTS)
TEMPLATES = ["a photo of {} at the beach", "{} riding a bicycle, watercolor",
             "an oil painting of {} in a forest", "portrait of {}, highly detailed"]


def _hits(text: str | PromptSet, matcher: LexicalMatcher = MATCHER) -> dict[str, list]:
    ps = PromptSet.of(text) if isinstance(text, str) else text
    return {m.concept.id: m for m in matcher.match(ps)}


def _check_span(ps: PromptSet, m) -> None:
    for e in m.evidence:
        assert 0 <= e.span[0] < e.span[1] <= len(ps.prompts[e.prompt].text)
        assert ps.prompts[e.prompt].text[e.span[0]:e.span[1]] == e.text
        assert 0 <= e.score <= 1


# --- conformance ---------------------------------------------------------------------------


def test_registered_and_conformant():
    assert MATCHERS["lexical"] is LexicalMatcher and matcher_class("lexical") is LexicalMatcher
    assert LexicalMatcher([]).match(PromptSet.of("anything")) == []
    with pytest.raises(GuardInputError):
        MATCHER.match("a str, not a PromptSet")  # type: ignore[arg-type]
    for m in MATCHER.match(PromptSet.of("just a cat")):
        assert not m.flagged and m.p_value is None


# --- each evasion kind -----------------------------------------------------------------------


def _variants(name: str, rng: random.Random) -> dict[str, str]:
    letters = name.replace(" ", "")
    leet = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
    cyr = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у"}
    swap = list(letters.lower())
    k = rng.randrange(1, len(swap) - 2)
    swap[k], swap[k + 1] = swap[k + 1], swap[k]
    cut = max(2, len(name) // 2)
    return {
        "name": name.upper() if rng.random() < 0.5 else name.lower(),
        "accents": name.replace("a", "á").replace("o", "ö").replace("e", "é"),
        "possessive": name + "'s",
        "plural": name + "s",
        "spaced": " ".join(letters),
        "hyphens": "-".join(letters),
        "dotted": ".".join(name.split()) if " " in name else name[:cut] + " " + name[cut:],
        "camel": "".join(w.title() for w in name.split()),
        "leet": "".join(leet.get(c, c) if i % 2 else c for i, c in enumerate(name)),
        "homoglyph": "".join(cyr.get(c, c) for c in name),
        "misspelled": "".join(swap) if EDIT_BUDGET(len(letters)) else name,
    }


@pytest.mark.parametrize("kind", ["name", "accents", "possessive", "plural", "spaced",
                                  "hyphens", "dotted", "camel", "leet", "homoglyph",
                                  "misspelled"])
def test_each_evasion_kind_is_caught(kind):
    rng = random.Random(kind)
    missed = []
    for c in CONCEPTS:
        for name in c.names:
            written = _variants(name, rng)[kind]
            text = rng.choice(TEMPLATES).format(written)
            ps = PromptSet.of(text)
            hit = _hits(ps).get(c.id)
            if hit is None or hit.score < 0.6:
                missed.append(text)
                continue
            _check_span(ps, hit)
            assert any(written.replace("'s", "") in e.text or e.text in written
                       for e in hit.evidence), (text, hit.evidence)
    assert not missed, missed


def test_evidence_kinds_and_original_spans():
    c = Concept("Captain Nimbus", aliases=("Nimbus Man", "キャプテン・ニンバス", "Капитан Нимбус"))
    m = LexicalMatcher([c])
    cases = {"a photo of a Captain Nimbus figure": ("name", "Captain Nimbus"),
             "nimbus man at noon": ("alias", "nimbus man"),
             "Cap tain Nim bus": ("split", "Cap tain Nim bus"),
             "Captian Nimbsu flying": ("misspelling", "Captian Nimbsu"),
             "N1mbus Man": ("script", "N1mbus Man"),
             "キャプテン・ニンバスの絵": ("script", "キャプテン・ニンバス"),
             "Капитан Нимбус в городе": ("script", "Капитан Нимбус")}
    for text, (how, span_text) in cases.items():
        ps = PromptSet.of(text)
        (hit,) = m.match(ps)
        (e,) = hit.evidence
        assert (e.how, e.text, e.prompt) == (how, span_text, 0), text
        _check_span(ps, hit)


def test_split_across_positive_prompts_not_negative_ones():
    c = CONCEPTS[1]
    words = c.name.split()
    if len(words) < 2:
        c = next(x for x in CONCEPTS if " " in x.name)
        words = c.name.split()
    ps = PromptSet.of([f"a portrait of {words[0]}", " ".join(words[1:]) + " at dawn"])
    hit = _hits(ps)[c.id]
    assert {e.prompt for e in hit.evidence} == {0, 1} and all(e.how == "split"
                                                               for e in hit.evidence)
    _check_span(ps, hit)
    # the name only in a negative prompt, or steered away by weight: nothing
    assert c.id not in _hits(PromptSet.of("a quiet lake", c.name))
    assert _hits(PromptSet((Prompt("a quiet lake"), Prompt(c.name, weight=-0.5)))) == {}


# --- near misses that must not match ---------------------------------------------------------


def test_benign_near_misses():
    nimbus = Concept("Nimbus", aliases=("Captain Nimbus",))
    mouse = Concept("Marlo Mouse", traits=("a cartoon mouse with red shorts",))
    echo = Concept("Echo", kind="character")
    m = LexicalMatcher([nimbus, mouse, echo])
    for text in ["a nimbostratus cloud over hills", "a cartoon mouse eating cheese",
                 "a captain on a ship", "mouse and keyboard on a desk", "the echoes of a cave",
                 "an echolocating bat", "marlon and a mouse", "a nimbused saint icon"]:
        assert all(h.score <= 0.5 for h in m.match(PromptSet.of(text))), text
    # a common word as a name needs context: capital letter mid-prompt or a kind word
    assert _hits("an echo in the hall", m)["echo"].score == 0.5
    assert _hits("a painting of Echo", m)["echo"].score == 1.0
    assert _hits("echo as an anime character", m)["echo"].score == 1.0


def test_short_names_need_exact_matches():
    m = LexicalMatcher([Concept("Zix")])
    assert _hits("Zix on a hill", m)
    for text in ["Zax on a hill", "Z ix on a hill", "zixy on a hill"]:
        assert not _hits(text, m), text


def test_random_benign_text_rarely_matches():
    rng = random.Random(5)
    words = ["a", "the", "of", "in", "on", "with", "red", "blue", "small", "large", "cat", "dog", "tree", "house", "river", "mountain", "city", "night", "morning", "painting", "photo", "portrait", "watercolor", "sketch", "garden", "forest", "boat", "car", "bicycle", "woman", "man", "child", "old", "young", "smiling", "running", "sitting"]
    flagged = 0
    for _ in range(500):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 20)))
        flagged += any(h.score > 0.5 for h in MATCHER.match(PromptSet.of(text)))
    assert flagged <= 5


# --- the normaliser ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_fold_idempotent_and_offsets_map_back(text):
    folded, pos = fold(text)
    assert fold(folded)[0] == folded
    assert len(pos) == len(folded)
    assert all(0 <= p < len(text) for p in pos) and pos == sorted(pos)
    for t in tokens(text):
        assert 0 <= t.start < t.end <= len(text)
        assert all(t.start <= p < t.end for p in t.pos) and len(t.pos) == len(t.letters)
        assert t.letters.isascii() and t.letters.isalnum()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_match_never_crashes_and_spans_are_in_text(text):
    text = "".join(c for c in text if c.isprintable())
    ps = PromptSet.of(text)
    for m in MATCHER.match(ps):
        _check_span(ps, m)


# --- bad input ------------------------------------------------------------------------------


def test_bad_input():
    assert MATCHER.match(PromptSet.of("")) == []
    with pytest.raises(GuardInputError):
        Prompt(123)  # type: ignore[arg-type]
    with pytest.raises(GuardInputError):
        Prompt("x" * 8001)
    tail = " " + CONCEPTS[0].name
    long = ("a quiet lake " * 700)[:8000 - len(tail)] + tail
    assert len(long) <= 8000 and CONCEPTS[0].id in _hits(long)
    ctrl = f"a\x00b\x1b[31m {CONCEPTS[0].name}\x07"
    assert CONCEPTS[0].id in _hits(ctrl)
    with pytest.raises(GuardInputError):
        parse_prompt(None)  # type: ignore[arg-type]
    with pytest.raises(GuardInputError):
        parse_prompt("y" * 8001)


# --- prompt syntax ----------------------------------------------------------------------------


def test_parse_prompt_syntaxes():
    name = CONCEPTS[0].name
    first, _, rest = name.partition(" ")
    assert parse_prompt("a plain prompt") == [Prompt("a plain prompt")]
    assert parse_prompt(f"a photo of ({name}:1.3), ((sharp))")[0].text == \
        f"a photo of {name}, sharp"
    p = parse_prompt("a cat::2 a hat::-0.5 a dog")
    assert [(x.text, x.weight, x.steers_away) for x in p] == \
        [("a cat", 2.0, False), ("a dog", 1.0, False), ("a hat", -0.5, True)]
    p = parse_prompt(f"a lake --no {name}, boats --ar 16:9 --v 6")
    assert [(x.text, x.negative) for x in p] == [("a lake", False), (f"{name}, boats", True)]
    p = parse_prompt("a cat :1.2 AND a dog :-0.5")
    assert [(x.text, x.weight) for x in p] == [("a cat", 1.2), ("a dog", -0.5)]
    p = parse_prompt("a (blurry:-1) cat")
    assert [(x.text, x.weight) for x in p] == [("a cat", 1.0), ("blurry", -1.0)]
    assert parse_prompt(r"\(literal\) [a|b]")[0].text == "(literal) a b"
    # a name hidden in syntax is still found; one steered away by a weight is not
    for hidden in [f"[{name[:3]}:{name[3:]}:0.5] at sea", f"(({name})) at sea",
                   f"[{name}] at sea", f"at sea AND {name} :0.8"]:
        assert CONCEPTS[0].id in _hits(PromptSet(tuple(parse_prompt(hidden)))), hidden
    assert not _hits(PromptSet(tuple(parse_prompt(f"at sea::1 {name}::-1"))))
    if rest:
        ps = PromptSet(tuple(parse_prompt(f"{first}::1 {rest}::1 at sea")))
        assert CONCEPTS[0].id in _hits(ps)


# --- mitigation ---------------------------------------------------------------------------


def test_mitigation_removes_every_name_and_keeps_other_words():
    rng = random.Random(3)
    for c in CONCEPTS:
        for name in c.names:
            for kind, written in _variants(name, rng).items():
                text = f"a photo of a {written} figure on a red bicycle"
                ps = PromptSet.of(text)
                matches = MATCHER.match(ps)
                rewritten, negative = mitigate(ps, matches)
                assert not MATCHER.match(PromptSet.of(rewritten)), (kind, text, rewritten)
                for word in ("photo", "figure", "red bicycle"):
                    assert word in rewritten, (text, rewritten)
                assert "an original character" in rewritten
                assert c.name in negative and set(c.aliases) <= set(negative)
                assert "a glowing green visor" in negative


def test_mitigation_tidies_and_handles_splits_and_traits():
    from tracemark.guard.types import ConceptMatch, Evidence

    c = Concept("Captain Nimbus", generic="an original superhero",
                traits=("a cloud-shaped cape",))
    m = LexicalMatcher([c])
    ps = PromptSet.of("a photo of a Captain Nimbus figure")
    assert mitigate(ps, m.match(ps))[0] == "a photo of an original superhero figure"
    ps = PromptSet.of(["a portrait of Captain", "Nimbus flying"], "blurry")
    rewritten, _ = mitigate(ps, m.match(ps))
    assert rewritten == "a portrait of an original superhero, flying"
    ps = PromptSet.of("a hero with a cloud-shaped cape, by the sea")
    at = ps.prompts[0].text.index(c.traits[0])
    trait = ConceptMatch(c, 0.8, [Evidence("trait", c.traits[0], c.traits[0], 0,
                                           (at, at + len(c.traits[0])), 0.8)])
    assert mitigate(ps, [trait])[0] == "a hero with an original superhero, by the sea"
    assert mitigate(ps, []) == ("a hero with a cloud-shaped cape, by the sea", [])
    with pytest.raises(GuardInputError):
        mitigate(ps, [ConceptMatch(c, 1, [Evidence("name", "x", c.name, 0, (5, 500))])])
    with pytest.raises(GuardInputError):
        mitigate("text", [])  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "spelled", "matches"), [
    ("Zephyra", "a comic about Zefiera", True),
    ("Bumbleroot", "Bumbelrut on a skateboard", True),
    ("Photographix", "a Fotografix camera", True),
    ("Zephyra", "a safari at dawn", False),  # the same Metaphone code, too many edits
    ("Nimbus", "nimbostratus clouds", False),
    ("Kestrel", "a kestrel hovering", False),  # an ordinary word: bare, not decisive
    ("Vantor", "a street food vendor", False),  # an ordinary word is no misspelling
])
def test_phonetic_spellings(name: str, spelled: str, matches: bool) -> None:
    m = LexicalMatcher([Concept(name)])
    found = m.match(PromptSet.of(spelled))
    decisive = [e for f in found for e in f.evidence if e.how == "misspelling"]
    assert bool(decisive) is matches, found


def test_a_name_split_across_non_adjacent_prompts_is_found() -> None:
    """break16: a two-word name whose words sit in two NON-adjacent prompts of one request
    (a batch composed into one image) or in reverse prompt order."""
    rng = random.Random(16)
    two_word = [c for c in CONCEPTS if len(c.name.split()) == 2]
    assert two_word
    for c in two_word:
        first, second = c.name.split()
        filler = rng.choice(["a dog on a sofa", "soft morning light", "a red bicycle"])
        for prompts in ([first, filler, second], [second, first]):
            found = {m.concept.id for m in MATCHER.match(PromptSet.of(prompts))}
            assert c.id in found, (c.name, prompts)
