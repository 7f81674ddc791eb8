"""The guard evaluation set (benchmarks/data/guard) and its harness (tracemark.bench.guard).

The set is checked as a third party would: it loads and validates, meets the issue's
minimums per kind and split, keeps the names out of the prompts that must not hold them,
and is what its committed generator writes. The harness is checked with screens written
here (an exact-name lookup, a screen that always flags one concept, one that raises),
against counts computed independently and scipy's Wilson interval.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest

from tracemark.bench.guard import (
    MINIMUMS,
    POSITIVE_KINDS,
    TARGETS,
    format_markdown,
    load_dataset,
    name_lookup_screen,
    run_guard_eval,
)
from tracemark.errors import GuardInputError
from tracemark.guard.types import (
    Concept,
    ConceptMatch,
    PromptScreening,
    PromptSet,
    concept_id,
)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "guard"


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def raw_records() -> list[dict]:
    return [json.loads(line) for line in
            (DATA / "prompts.jsonl").read_text(encoding="utf-8").splitlines()]


def _whole(text: str, names) -> list[str]:
    low = text.casefold()
    return [n for n in names
            if re.search(rf"(?<!\w){re.escape(n.casefold())}(?!\w)", low)]


# --- the data set --------------------------------------------------------------------------


def test_every_line_is_json_and_every_concept_referenced_exists(dataset, raw_records) -> None:
    head = json.loads((DATA / "concepts.json").read_text(encoding="utf-8"))
    ids = {c["id"] for c in head["concepts"]}
    assert len(ids) == len(head["concepts"]) == len(dataset.concepts)
    assert len(raw_records) == len(dataset.cases)
    for rec in raw_records:
        for ref in (rec["concept"], rec.get("near")):
            assert ref is None or ref in ids, rec["id"]
        assert (rec["concept"] is None) == (rec["kind"] == "benign"), rec["id"]
    # ids are the ones tracemark derives from the names
    assert all(c.id == concept_id(c.name) for c in dataset.concepts)


def test_counts_per_kind_and_split_meet_the_minimums(dataset) -> None:
    per_split = {s: Counter() for s in ("dev", "test")}
    per_concept: dict[str, Counter] = {c.id: Counter() for c in dataset.concepts}
    for case in dataset.cases:
        per_split[case.split][case.kind] += 1
        if case.concept:
            per_concept[case.concept][case.kind] += 1
    splits = Counter(dataset.concept_split.values())
    assert splits["dev"] >= MINIMUMS["concepts_dev"] == 20
    assert splits["test"] >= MINIMUMS["concepts_test"] == 50
    for cid, counts in per_concept.items():
        for kind in POSITIVE_KINDS:
            assert counts[kind] >= MINIMUMS[kind], (cid, kind, counts[kind])
    assert per_split["dev"]["benign"] + per_split["test"]["benign"] >= MINIMUMS["benign"]
    assert per_split["test"]["benign"] >= 1000  # the reported figures stand on >= 1,000
    variants = Counter(c.variant for c in dataset.cases if c.kind == "benign")
    for v in ("everyday", "near_generic", "near_trait", "near_word", "negative_name",
              "negative_weight"):
        assert variants[v] >= 30, v


def test_concepts_are_complete_and_span_kinds_and_scripts(dataset) -> None:
    kinds = Counter(c.kind.value for c in dataset.concepts)
    assert set(kinds) == {"character", "artwork", "style", "brand", "person"}
    assert kinds["character"] > len(dataset.concepts) / 2
    scripts = Counter()
    for c in dataset.concepts:
        assert 4 <= len(c.traits) <= 8 and c.aliases and c.owner and c.generic, c.id
        for alias in c.aliases:
            for ch in alias:
                if ch.isalpha() and not ch.isascii():
                    scripts[unicodedata.name(ch).split()[0]] += 1
    for script in ("CYRILLIC", "GREEK", "KATAKANA", "CJK"):
        assert scripts[script] > 0, script


def test_no_direct_prompt_text_is_in_the_benign_set(dataset) -> None:
    direct = {p.text for c in dataset.cases if c.kind == "direct" for p in c.prompts.prompts}
    benign = {p.text for c in dataset.cases if c.kind == "benign" for p in c.prompts.prompts}
    assert direct and benign and not direct & benign


def test_names_stay_out_of_prompts_that_must_not_hold_them(dataset) -> None:
    """Benign positive prompts, indirect descriptions and the trait halves hold no name or
    alias of any concept; misspelled and split prompts hold no name of their own concept
    whole (each prompt alone: a split name is whole only when prompts are joined)."""
    every = [n for c in dataset.concepts for n in c.names]
    own = {c.id: c.names for c in dataset.concepts}
    for case in dataset.cases:
        for p in case.prompts.positive:
            if case.kind == "benign" or case.kind == "indirect" or case.variant == "batch_traits":
                assert not _whole(p.text, every), (case.id, p.text)
            elif case.kind in ("misspelled", "split"):
                assert not _whole(p.text, own[case.concept]), (case.id, p.text)
        if case.variant.startswith("negative_"):  # the name is there, steering away only
            assert any(_whole(p.text, own[case.near]) for p in case.prompts.prompts
                       if p.steers_away), case.id
    direct = [c for c in dataset.cases if c.kind == "direct"]
    assert all(_whole(" ".join(p.text for p in c.prompts.prompts), own[c.concept])
               for c in direct)


def test_indirect_prompts_paraphrase_rather_than_copy_traits(dataset) -> None:
    """An indirect prompt may share a short trait word for word ("a monocle"), but copies
    no trait of three words or more (articles aside) and never two traits."""
    traits = {c.id: c.traits for c in dataset.concepts}
    for case in dataset.cases:
        if case.kind == "indirect":
            text = case.prompts.prompts[0].text.casefold()
            copied = [t for t in traits[case.concept] if t.casefold() in text]
            words = [len([w for w in t.split() if w not in ("a", "an", "the")]) for t in copied]
            assert len(copied) <= 1 and all(n < 3 for n in words), (case.id, copied)


def test_the_generator_writes_the_committed_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_prompts", DATA / "make_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path)
    for name in ("concepts.json", "prompts.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    module.write(tmp_path / "other", seed=17)  # another seed: other templated prompts
    assert (tmp_path / "other" / "prompts.jsonl").read_bytes() != (DATA / "prompts.jsonl").read_bytes()


# --- bad data ------------------------------------------------------------------------------


def _write(root: Path, concepts: list[dict], lines: list[str | dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "concepts.json").write_text(json.dumps({"concepts": concepts}), encoding="utf-8")
    (root / "prompts.jsonl").write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8")
    return root


C = {"name": "Zint Quorrel", "kind": "character", "traits": ["a green owl"], "split": "test"}


def _rec(**kw) -> dict:
    base = {"id": "r1", "concept": "zint-quorrel", "kind": "direct", "variant": "name",
            "prompts": [{"text": "Zint Quorrel on a hill"}], "split": "test"}
    return base | kw


@pytest.mark.parametrize("concepts,lines,message", [
    ([C], ["{not json"], "line 1: not JSON"),
    ([C], [_rec(concept="nobody")], "unknown concept 'nobody'"),
    ([C], [_rec(kind="benign")], "benign request has concept null"),
    ([C], [_rec(kind="sideways")], "kind must be one of"),
    ([C], [_rec(), _rec()], "line 2: duplicate id"),
    ([C], [_rec(split="train")], "split must be one of"),
    ([C | {"split": "dev"}], [_rec()], "not in split 'test'"),
    ([C], [_rec(prompts=[])], "prompts must be a non-empty list"),
    ([C], [_rec(prompts=[{"text": "x", "negative": True}])], "needs a positive prompt"),
    ([C], [_rec(prompts=[{"text": "x", "weight": "heavy"}])], "weight must be a finite"),
    ([C], [_rec(extra=1)], "unknown fields: extra"),
    ([C | {"kind": "dragon"}], [], "unknown concept kind"),
    ([C | {"split": None}], [], "split must be one of"),
    ([C, C], [], "duplicate id 'zint-quorrel'"),
])
def test_bad_data_is_a_guard_input_error_naming_where(tmp_path, concepts, lines, message) -> None:
    root = _write(tmp_path / "set", concepts, lines)
    with pytest.raises(GuardInputError, match=re.escape(message)):
        load_dataset(root)


def test_missing_or_undecodable_files_are_guard_input_errors(tmp_path: Path) -> None:
    with pytest.raises(GuardInputError, match="concepts.json"):
        load_dataset(tmp_path)
    root = _write(tmp_path / "set", [C], [])
    (root / "prompts.jsonl").write_bytes(b'{"id": "\xff\xfe"}\n')
    with pytest.raises(GuardInputError, match="prompts.jsonl"):
        load_dataset(root)
    (root / "concepts.json").write_text("[]", encoding="utf-8")
    with pytest.raises(GuardInputError, match="expected"):
        load_dataset(root)


# --- the harness ---------------------------------------------------------------------------


def exact_lookup(concepts: list[Concept]):
    """A screen written here: flags a concept when its name, lower-cased, is a substring of
    the lower-cased positive prompts joined by a space (no aliases, no word bounds)."""

    def screen(prompts: PromptSet) -> PromptScreening:
        text = " ".join(p.text for p in prompts.positive).lower()
        hits = [ConceptMatch(c, 1.0, [], None, True) for c in concepts if c.name.lower() in text]
        return PromptScreening("block" if hits else "allow", hits, 0.01)

    return screen


def _expected(dataset, split: str) -> tuple[Counter, Counter, int, int]:
    """Detections per kind and benign false positives of exact_lookup, counted directly."""
    concepts = dataset.concepts_of(split)
    det, n = Counter(), Counter()
    fp = nb = 0
    for case in dataset.cases_of(split):
        text = " ".join(p.text for p in case.prompts.positive).lower()
        found = {c.id for c in concepts if c.name.lower() in text}
        if case.kind == "benign":
            nb += 1
            fp += bool(found)
        else:
            n[case.kind] += 1
            det[case.kind] += case.concept in found
    return det, n, fp, nb


@pytest.mark.parametrize("split", ["dev", "test"])
def test_rates_match_an_independent_count_and_scipys_wilson_interval(dataset, split) -> None:
    result = run_guard_eval(exact_lookup(dataset.concepts_of(split)), dataset, split=split)
    det, n, fp, nb = _expected(dataset, split)
    for kind in POSITIVE_KINDS:
        r = result["kinds"][kind]
        assert (r["k"], r["n"]) == (det[kind], n[kind])
        ci = binomtest(det[kind], n[kind]).proportion_ci(method="wilson")
        assert r["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-4)
        assert sum(v["n"] for v in r["variants"].values()) == n[kind]
    assert (result["benign"]["k"], result["benign"]["n"]) == (fp, nb)
    # a name lookup finds every direct prompt written with the name, and no description
    assert result["kinds"]["direct"]["variants"]["name"]["rate"] == 1.0
    assert result["kinds"]["indirect"]["k"] == 0
    assert result["requests"] == len(dataset.cases_of(split))
    json.dumps(result)  # plain data


def test_the_name_baseline_catches_names_and_aliases_and_nothing_split(dataset) -> None:
    result = run_guard_eval(name_lookup_screen(dataset.concepts_of("dev")), dataset, split="dev")
    assert result["kinds"]["direct"]["rate"] == 1.0
    for kind in ("indirect", "misspelled", "split"):
        assert result["kinds"][kind]["rate"] == 0.0, kind
    assert result["benign"]["k"] == 0  # negative prompts name concepts: allowed
    assert result["meta"] == {} and result["failures"]


def test_confusion_counts_a_wrongly_flagged_concept(dataset) -> None:
    concepts = dataset.concepts_of("dev")
    decoy = concepts[0]

    def always_decoy(prompts: PromptSet) -> PromptScreening:
        return PromptScreening("block", [ConceptMatch(decoy, 1.0, [], None, True)], 0.01)

    result = run_guard_eval(always_decoy, dataset, split="dev", warmup=0)
    for kind in POSITIVE_KINDS:
        r = result["kinds"][kind]
        own = sum(1 for c in dataset.cases_of("dev") if c.kind == kind and c.concept == decoy.id)
        assert r["k"] == own
        assert r["confused"] == r["wrong_only"] == r["n"] - own
        assert r["missed"] == 0
    assert result["benign"]["rate"] == 1.0
    assert result["confusion"][0]["flagged"] == decoy.id


def test_screen_errors_are_counted_and_the_run_carries_on(dataset) -> None:
    calls = []

    def picky(prompts: PromptSet) -> PromptScreening:
        calls.append(prompts)
        if len(prompts.prompts) > 1:
            raise GuardInputError("one prompt at a time")
        time.sleep(0.002)
        return PromptScreening("allow", [], 0.01)

    result = run_guard_eval(picky, dataset, split="dev", warmup=0)
    cases = dataset.cases_of("dev")
    assert len(calls) == len(cases)
    multi = Counter(c.kind for c in cases if len(c.prompts.prompts) > 1)
    assert result["kinds"]["split"]["errors"] == multi["split"] > 0
    assert result["benign"]["errors"] == multi["benign"] > 0
    assert result["benign"]["k"] == 0
    assert any(f.get("error", "").startswith("GuardInputError") for f in result["failures"])
    lat = result["latency_ms"]["request"]
    assert 2.0 <= lat["p50"] <= lat["p95"] <= lat["max"]


def test_a_screen_that_does_not_answer_a_screening_is_a_bug(dataset) -> None:
    with pytest.raises(TypeError, match="PromptScreening"):
        run_guard_eval(lambda prompts: {"decision": "allow"}, dataset, split="dev", warmup=0)


def test_an_unknown_split_is_refused(dataset) -> None:
    with pytest.raises(GuardInputError, match="unknown split"):
        run_guard_eval(exact_lookup([]), dataset, split="train")


def test_markdown_states_each_target_met_or_its_shortfall(dataset) -> None:
    result = run_guard_eval(name_lookup_screen(dataset.concepts_of("dev")), dataset,
                            split="dev", meta={"screen": "names", "matchers": "names",
                                               "threads": 1})
    md = format_markdown(result, "python benchmarks/guard_eval.py --baseline names")
    assert "| direct | 100 | 100 | 1.000 [" in md and "| yes |" in md
    assert f"no (-{TARGETS['indirect']:.3f})" in md
    assert "benign (false positives)" in md and "p50" in md
    assert "--baseline names" in md


def test_the_benchmark_script_writes_json_and_a_docs_section(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nearlier text\n", encoding="utf-8")
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "guard_eval.py"), "--baseline", "names",
           "--split", "dev", "--out", str(out), "--docs", str(docs)]
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "| direct |" in res.stdout and re.search(r"\b(\d+)/\1 requests", res.stderr)
    assert json.loads(out.read_text())["split"] == "dev"
    assert docs.read_text() == "# Benchmarks\n\nearlier text\n"  # not without --write-docs
    res = subprocess.run([*cmd, "--write-docs"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text\n")
    assert "<!-- BEGIN guard-dev-names -->" in text and "### Generation guard, dev split" in text
    res = subprocess.run([*cmd[:2], "--split", "dev", "--screen", "no_such_module:Screen"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode != 0 and "cannot load the screen" in res.stderr


def test_the_benchmark_script_runs_a_screen_named_by_module_and_factory(tmp_path: Path) -> None:
    (tmp_path / "my_screen.py").write_text(
        "from tracemark.guard.types import ConceptMatch, PromptScreening\n"
        "class Screen:\n"
        "    def __init__(self, concepts, matchers, threads):\n"
        "        self.concepts, self.matchers, self.threads = concepts, matchers, threads\n"
        "    def screen(self, prompts):\n"
        "        text = ' '.join(p.text for p in prompts.positive)\n"
        "        hits = [ConceptMatch(c, 1.0, [], None, True) for c in self.concepts\n"
        "                if c.name in text]\n"
        "        return PromptScreening('block' if hits else 'allow', hits, 0.01,\n"
        "                               matchers=self.matchers)\n", encoding="utf-8")
    out = tmp_path / "r.json"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(tmp_path)])}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "guard_eval.py"),
                          "--split", "dev", "--screen", "my_screen:Screen", "--matchers",
                          "lexical", "--threads", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["matchers"] == "lexical" and result["meta"]["threads"] == 2
    assert result["kinds"]["direct"]["variants"]["name"]["rate"] == 1.0
    assert "--screen my_screen:Screen" in res.stdout
