"""The prompt screen: calibration on benign prompts, the decision, the mitigation loop."""

from __future__ import annotations

import numpy as np
import pytest

from tracemark.errors import ConfigError, GuardInputError
from tracemark.guard import Concept, Prompt, PromptSet
from tracemark.guard.background import background_prompts, near_miss_prompts
from tracemark.guard.screen import Guard, GuardCalibration, as_prompt_set, concepts_stamp
from tracemark.guard.types import MAX_PROMPT_CHARS

CONCEPTS = [
    Concept("Captain Nimbus", aliases=["Cap Nimbus", "キャプテン・ニンバス"],
            traits=["a cloud-shaped cape", "lightning bolt goggles", "rides a thundercloud"],
            generic="an original superhero"),
    Concept("Echo", traits=["a silver fox with one blue ear", "a scarf made of sound waves"]),
    Concept("Zorblax", kind="brand", traits=["a purple triangle logo"]),
]


@pytest.fixture(scope="module")
def guard() -> Guard:
    g = Guard(CONCEPTS, matchers=["lexical"])
    g.calibrate()
    return g


def test_background_is_deterministic_and_free_of_the_names() -> None:
    a, b = background_prompts(300, seed=3), background_prompts(300, seed=3)
    assert [p.prompts for p in a] == [p.prompts for p in b]
    assert [p.prompts for p in a] != [p.prompts for p in background_prompts(300, seed=4)]
    near = near_miss_prompts(CONCEPTS)
    assert len(near) == sum(len(c.traits) for c in CONCEPTS)
    assert not any("nimbus" in p.prompts[0].text.lower() for p in near)


def test_calibrated_false_positive_rate_holds_on_fresh_benign_prompts(guard: Guard) -> None:
    """The calibration's promise, checked on benign prompts it was not made with."""
    fresh = background_prompts(1000, seed=99)
    flagged = sum(guard.screen(p).flagged for p in fresh)
    assert flagged / len(fresh) <= guard.alpha


@pytest.mark.parametrize("prompt", [
    "Captain Nimbus flying over Paris", "a c4pt41n n1mbus action figure",
    "a poster of Cap Nimbus", "キャプテン・ニンバス", "zorblax sneakers on a shelf",
    "a photo of Captian Nimbus",
])
def test_named_concepts_are_flagged_and_rewritten(guard: Guard, prompt: str) -> None:
    res = guard.screen(prompt)
    assert res.flagged and res.decision in ("rewrite", "block"), res.to_dict()
    top = res.matches[0]
    assert top.flagged and top.p_value is not None and top.p_value <= guard.alpha
    assert top.score == pytest.approx(-np.log10(top.p_value))
    if res.decision == "rewrite":
        assert not guard.screen(res.rewritten).flagged
        assert top.concept.name in res.negative


def test_a_name_split_across_the_prompts_of_one_request(guard: Guard) -> None:
    res = guard.screen(["a hero called Captain", "Nimbus on a cloud"])
    assert res.flagged and res.matches[0].concept.id == "captain-nimbus"
    assert {e.prompt for e in res.matches[0].evidence} == {0, 1}


def test_negative_prompts_never_flag(guard: Guard) -> None:
    res = guard.screen("a superhero over a city", negative="Captain Nimbus, Zorblax")
    assert res.decision == "allow" and not res.matches
    # a Midjourney negative weight steers away as well
    assert guard.screen("a superhero over a city:: Captain Nimbus::-0.5").decision == "allow"


def test_an_ordinary_word_alone_is_evidence_not_a_flag(guard: Guard) -> None:
    res = guard.screen("an echo in a canyon")
    assert res.decision == "allow"
    assert [m.concept.id for m in res.matches] == ["echo"] and not res.matches[0].flagged


def test_a_bare_name_is_rewritten_and_several_concepts_flag_together(guard: Guard) -> None:
    res = guard.screen("Captain Nimbus")
    assert res.decision in ("rewrite", "block")
    res = guard.screen(["Zorblax", "Captain Nimbus"])
    assert res.flagged and {m.concept.id for m in res.matches if m.flagged} == {
        "zorblax", "captain-nimbus"}


def test_calibration_round_trip_and_stamp(guard: Guard) -> None:
    cal = guard.calibration
    assert cal is not None and cal.size >= 1000
    back = GuardCalibration.from_bytes(cal.to_bytes())
    assert back.stamp == cal.stamp == concepts_stamp(CONCEPTS)
    assert all(np.array_equal(back.null[k], cal.null[k]) for k in cal.null)
    Guard(CONCEPTS, matchers=["lexical"], calibration=back)
    with pytest.raises(ConfigError, match="other concepts"):
        Guard(CONCEPTS[:2], matchers=["lexical"], calibration=back)
    for bad in (b"", b"[]", b'{"format": "x"}', b'{"format": "tracemark-guard-calibration", '
                b'"version": 9, "stamp": "", "null": {}}', b"\xff\xfe"):
        with pytest.raises(ConfigError):
            GuardCalibration.from_bytes(bad)


def test_conformal_p_values() -> None:
    cal = GuardCalibration("s", {"m": np.sort(np.array([0.0] * 97 + [0.5, 0.7, 0.9]))})
    assert cal.p_value("m", 0.95) == pytest.approx(1 / 101)
    assert cal.p_value("m", 0.9) == pytest.approx(2 / 101)
    assert cal.p_value("m", 0.0) == pytest.approx(1.0)
    assert cal.p_value("other", 1.0) is None


@pytest.mark.parametrize("bad", ["", "   ", 5, None, ["ok", 3], {"text": "x"},
                                 "x" * 9000, [""] * 2])
def test_bad_requests_are_typed_errors(guard: Guard, bad: object) -> None:
    with pytest.raises(GuardInputError):
        guard.screen(bad)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        Guard(CONCEPTS, matchers=["nope"])
    with pytest.raises(ConfigError):
        Guard(CONCEPTS, matchers=[])
    with pytest.raises(ConfigError):
        Guard(CONCEPTS, alpha=0)
    with pytest.raises(ConfigError, match="at least 100"):
        Guard(CONCEPTS, matchers=["lexical"]).calibrate([PromptSet.of("a dog")] * 10)


def test_as_prompt_set_reads_generator_syntax() -> None:
    ps = as_prompt_set("a castle (Captain Nimbus:1.3) --no rain")
    assert any(p.negative and "rain" in p.text for p in ps.prompts)
    assert any("Captain Nimbus" in p.text for p in ps.positive)
    assert as_prompt_set([Prompt("x", weight=2.0)]).prompts[0].weight == 2.0


def test_no_concepts_allows_everything() -> None:
    g = Guard([], matchers=["lexical"])
    g.calibrate()
    assert g.screen("Captain Nimbus").decision == "allow"


def test_the_registry_keeps_the_calibration_with_the_collection(tmp_path) -> None:
    from tracemark.copydetect import CopyIndex
    from tracemark.guard import ConceptRegistry

    path = tmp_path / "works"
    with CopyIndex.create(path) as idx:
        reg = ConceptRegistry(idx)
        for c in CONCEPTS:
            reg.add(c)
        assert reg.calibration() is None
        reg.calibrate(matchers=["lexical"])
    with CopyIndex.open(path, read_only=True) as idx:
        reg = ConceptRegistry(idx)
        g = reg.guard(matchers=["lexical"])
        assert g.calibration is not None and g.calibration.stamp == concepts_stamp(CONCEPTS)
        assert g.screen("Captain Nimbus at the beach").flagged
    with CopyIndex.open(path) as idx:
        reg = ConceptRegistry(idx)
        reg.remove("zorblax")
        g = reg.guard(matchers=["lexical"])
        assert g.calibration is None  # stale: made for other concepts
        assert not g.screen("zorblax sneakers").flagged and g.calibration is not None


@pytest.mark.parametrize("texts", [
    # two valid prompts whose rewrite, joined with ", ", is over the per-prompt limit
    lambda: ["Zorblax on a hill, " + "a quiet meadow with flowers " * 150,
             "a river under a bridge " * 200],
    # one valid prompt that the generic ("a generic brand") makes longer than the limit
    lambda: [" ".join(["Zorblax"] * (MAX_PROMPT_CHARS // 8))],
])
def test_a_valid_request_whose_rewrite_is_long_still_gets_a_decision(guard: Guard,
                                                                      texts) -> None:
    """The rewrite is screened again; its length is the guard's doing, not the user's, so
    it must not turn a valid request into a GuardInputError (found by break16)."""
    prompts = texts()
    assert all(len(p) <= MAX_PROMPT_CHARS for p in prompts)
    res = guard.screen(prompts)
    assert res.flagged and res.decision in ("rewrite", "block"), res.to_dict()
    if res.decision == "rewrite":
        assert "zorblax" not in res.rewritten.lower()
        assert len(res.rewritten) > MAX_PROMPT_CHARS
