"""The copy-detection benchmark end to end on a tiny corpus subset (6 references, 256 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tracemark.attacks import get_suite
from tracemark.bench.copydetect import (
    METHODS,
    V2_SUITE,
    CopyDetectConfig,
    QuerySpec,
    compute_metrics,
    format_markdown,
    hard_edits_suite,
    predictions_of,
    query_image,
    run_copydetect_bench,
    split_images,
    write_outputs,
)
from tracemark.cli.bench import copydetect_bench_command
from tracemark.errors import ConfigError
from tracemark.fingerprint.global_desc import in_training_half
from tracemark.imageio import load_image
from tracemark.metrics.retrieval import (
    accuracy_at_rank1,
    micro_average_precision,
    recall_at_precision,
)

from .conftest import corpus_images

CONFIG = CopyDetectConfig(seed=3, max_side=256, negatives=4, hard_negatives=3)


def _broken_name() -> str:
    """A file name in the held-out half, so that the broken file is picked as a reference."""
    return next(f"broken_{i}.jpg" for i in range(100) if not in_training_half(f"broken_{i}.jpg"))


@pytest.fixture(scope="module")
def inputs(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    files = corpus_images()
    held = [p for p in files if not in_training_half(p.name)][::25][:6]
    train = [p for p in files if in_training_half(p.name)][::17][:10]
    broken = tmp_path_factory.mktemp("broken") / _broken_name()
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return [*held, *train, broken], corpus_dir


@pytest.fixture(scope="module")
def result(inputs: tuple[list[Path], Path]) -> dict:
    paths, root = inputs
    return run_copydetect_bench(paths, config=CONFIG, root=root)


def test_structure_and_split(result: dict, inputs: tuple[list[Path], Path]) -> None:
    split = result["split"]
    assert len(split["references"]) == 6
    assert [s["image"] for s in split["skipped"]] == [_broken_name()]
    assert not any(in_training_half(n) for n in split["references"])
    assert all(in_training_half(n) for n in split["pool"] + split["background"])
    assert not set(split["pool"]) & set(split["background"])
    assert len(split["background"]) == round(0.4 * 10)

    queries = result["queries"]
    v1 = [q for q in queries if q["query_set"] == "v1"]
    kinds = [q["kind"] for q in v1]
    assert kinds.count("positive") == 6 * 2 + 3  # two suite draws each, hard edits for half
    assert kinds.count("negative") == 4
    assert kinds.count("hard_negative") == sum(q["kind"] == "hard_negative" for q in queries)
    # the hard kinds: 2 entries per reference, every entry used, counts balanced within one
    v2 = [q for q in queries if q["query_set"] == "v2"]
    suite_labels = [e.label for e in get_suite(V2_SUITE)]
    pos2 = [q for q in v2 if q["kind"] == "positive"]
    assert len(pos2) == 6 * 2
    counts = {lab: sum(q["label"] == lab for q in pos2) for lab in suite_labels}
    assert set(counts.values()) <= {1, 2} and all(counts.values())
    for ref in split["references"]:
        labels = [q["label"] for q in pos2 if q["source"] == ref]
        assert len(labels) == len(set(labels)) == 2
    neg2 = [q for q in v2 if q["kind"] == "negative"]
    assert len(neg2) == len(split["pool"]) and all(q["label"] in suite_labels for q in neg2)
    assert {q["kind"] for q in v2} == {"positive", "negative"}
    assert 1 <= kinds.count("hard_negative") <= 2 * 3
    assert len({q["name"] for q in queries}) == len(queries)
    for q in queries:
        if q["kind"] == "positive":
            assert q["reference"] == q["source"] and q["source"] in split["references"]
            assert result["ground_truth"][q["name"]] == q["reference"]
        else:
            assert q["reference"] is None and q["name"] not in result["ground_truth"]
            assert q["source"] in split["pool"]  # never a background image
        if q["kind"] == "hard_negative":
            assert q["params"] == {"quality": 80}
            assert {n["by"] for n in q["note"]["nearest_to"]} <= {"vlad", "pdq"}
        # an insertion's background is a pool image: never a reference or calibration image
        text = json.dumps(q["params"])
        assert not any(name in text for name in split["background"] + split["references"])
    assert {q["label"] for q in queries if q["label"].startswith("hard_")} <= {
        e.label for e in hard_edits_suite()
    }

    assert len(result["records"]) == len(queries)
    for rec in result["records"]:
        assert "error" not in rec
        assert set(rec["predictions"]) == set(METHODS) == set(rec["ms"])
        assert rec["query_set"] == next(q["query_set"] for q in queries if q["name"] == rec["query"])
        for preds in rec["predictions"].values():
            assert 1 <= len(preds) <= CONFIG.k
            assert all(ref in split["references"] for ref, _ in preds)
            scores = [s for _, s in preds]
            assert scores == sorted(scores, reverse=True)
    met = result["metrics"]
    assert met["n_errors"] == 0
    for m in METHODS:
        x = met["methods"][m]
        for key in ("micro_ap", "recall_at_p90", "acc_at_1"):
            assert 0.0 <= x[key] <= 1.0
            assert 0.0 <= x["subsets"]["v1"][key] <= 1.0 and 0.0 <= x["subsets"]["v2"][key] <= 1.0
        assert x["query_ms_median"] > 0
        groups = x["per_group_acc_at_1"]
        assert {g for g, c in groups.items() if c["query_set"] == "v2"} == {
            e.series for e in get_suite(V2_SUITE)
        }
    assert met["sets"]["v2"]["n_positive"] == 12 and met["sets"]["v1"]["n_positive"] == 15
    # one calibrated index, one recommended threshold, for the old and the new detector
    ops = [met["methods"][m]["operating_point"] for m in ("full", "full_v1")]
    assert ops[0]["threshold"] == ops[1]["threshold"] == result["recommended_threshold"]
    assert result["recommended_threshold"] is not None
    assert result["index"]["count"] == 6
    json.dumps(result)  # serialisable as is


def test_metrics_match_a_recomputation(result: dict, tmp_path: Path) -> None:
    write_outputs(result, tmp_path)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert "| full |" in (tmp_path / "report.md").read_text()
    truth = stored["ground_truth"]
    for m in METHODS:
        preds = [(r["query"], ref, s) for r in stored["records"] for ref, s in r["predictions"][m]]
        x = stored["metrics"]["methods"][m]
        assert x["micro_ap"] == pytest.approx(
            micro_average_precision(preds, truth, max_per_query=10)
        )
        assert x["recall_at_p90"] == pytest.approx(recall_at_precision(preds, truth, 0.9))
        assert x["acc_at_1"] == pytest.approx(accuracy_at_rank1(preds, truth))
        # the operating point, counted directly
        op = x["operating_point"]
        kept = [(q, ref) for q, ref, s in preds if s >= op["threshold"]]
        tp = sum(truth.get(q) == ref for q, ref in kept)
        assert op["recall"] == pytest.approx(tp / len(truth))
        if kept:
            assert op["precision"] == pytest.approx(tp / len(kept))
        hard = [r for r in stored["records"] if r["kind"] == "hard_negative"]
        below = [max(s for _, s in r["predictions"][m]) < op["threshold"] for r in hard]
        assert op["hard_negatives_below"] == pytest.approx(np.mean(below))
        # per query set: its own queries plus the hard negatives, against an explicit filter
        for qs in ("v1", "v2"):
            names = {
                r["query"]
                for r in stored["records"]
                if r["query_set"] == qs or r["kind"] == "hard_negative"
            }
            sub = [p for p in preds if p[0] in names]
            sub_truth = {q: ref for q, ref in truth.items() if q in names}
            assert sub_truth and len(sub_truth) < len(truth)
            got = x["subsets"][qs]
            assert got["micro_ap"] == pytest.approx(
                micro_average_precision(sub, sub_truth, max_per_query=10)
            )
            assert got["recall_at_p90"] == pytest.approx(recall_at_precision(sub, sub_truth, 0.9))
            assert got["acc_at_1"] == pytest.approx(accuracy_at_rank1(sub, sub_truth))
            if qs == "v2":
                tp2 = sum(truth.get(q) == ref for q, ref in kept if q in sub_truth)
                assert op["recall_v2"] == pytest.approx(tp2 / len(sub_truth))
    again = compute_metrics(stored["records"], truth, METHODS, stored["recommended_threshold"])
    assert again == stored["metrics"]
    assert sorted(predictions_of(stored["records"], "pdq")) == sorted(
        (r["query"], ref, s) for r in stored["records"] for ref, s in r["predictions"]["pdq"]
    )


def test_full_pipeline_beats_pdq(result: dict) -> None:
    met = result["metrics"]["methods"]
    assert met["full"]["micro_ap"] >= met["pdq"]["micro_ap"]
    assert met["full"]["micro_ap"] > 0.5


def test_deterministic_under_seed(result: dict, inputs: tuple[list[Path], Path]) -> None:
    paths, root = inputs
    again = run_copydetect_bench(paths, config=CONFIG, root=root)
    assert again["queries"] == result["queries"]
    assert [r["predictions"] for r in again["records"]] == [
        r["predictions"] for r in result["records"]
    ]
    assert (
        again["metrics"]["methods"]["full"]["micro_ap"]
        == (result["metrics"]["methods"]["full"]["micro_ap"])
    )
    other = split_images(paths, CopyDetectConfig(seed=4), root)
    same = split_images(paths, CopyDetectConfig(seed=3), root)
    assert other.references == same.references  # the reference half does not depend on the seed
    assert (other.pool, other.background) != (same.pool, same.background) or len(same.pool) < 2


def test_recipes_replay(result: dict, inputs: tuple[list[Path], Path]) -> None:
    from tracemark.bench.watermark import prepare_image

    _, root = inputs
    firsts = {q["label"]: q for q in result["queries"] if q["query_set"] == "v2"}
    for q in [*result["queries"][:4], *firsts.values()]:
        spec = QuerySpec(**q)
        source = prepare_image(load_image(root / spec.source), max_side=CONFIG.max_side)
        a, b = query_image(spec, source), query_image(spec, source)
        assert np.array_equal(a, b)
        rec = next(r for r in result["records"] if r["query"] == spec.name)
        assert rec["query_size"] == [a.shape[1], a.shape[0]]


def test_markdown_report(result: dict) -> None:
    text = format_markdown(result, level=2)
    assert text.startswith("## Copy detection")
    for m in METHODS:
        assert f"| {m} |" in text
    assert "target" not in text.lower() and "issue" not in text.lower() and "not met" not in text
    met = result["metrics"]
    assert f"recall (n = {met['n_positive']})" in text
    assert f"hard negatives below (n = {met['n_hard_negative']})" in text
    assert f"| full | {met['n_queries']} | {met['methods']['full']['micro_ap']:.3f} |" in text
    assert "#### Operating points" not in text and "### Operating points" in text
    v2 = met["methods"]["full_v1"]["subsets"]["v2"]
    assert f"| {v2['micro_ap']:.3f} | {v2['recall_at_p90']:.3f} | {v2['acc_at_1']:.3f} |" in text
    v1 = met["methods"]["full"]["subsets"]["v1"]
    assert f"| full | {v1['micro_ap']:.3f} | {v1['recall_at_p90']:.3f} | {v1['acc_at_1']:.3f} |" in text
    for e in get_suite(V2_SUITE):
        n = met["methods"]["full"]["per_group_acc_at_1"][e.series]["n"]
        assert f"| {e.series} | hard kinds (`{V2_SUITE}`) | {n} |" in text


def test_version_1_results_still_format(result: dict) -> None:
    """A results.json written before the hard kinds (no query sets, no per-set metrics)
    formats: the new columns read as a dash, the per-edit table lists the old edits."""
    old = json.loads(json.dumps(result))
    old["version"] = 1
    for rec in old["records"]:
        rec.pop("query_set")
    for m in old["metrics"]["methods"].values():
        m.pop("subsets")
        m["operating_point"].pop("recall_v2")
        for c in m["per_group_acc_at_1"].values():
            c.pop("query_set")
    old["metrics"].pop("sets")
    text = format_markdown(old)
    assert "| full |" in text and "hard kinds (`" not in text
    assert "| — | — | — |" in text and "Version 1 queries alone" not in text
    # metrics recomputed from such records: every query counts as version 1
    again = compute_metrics(old["records"], old["ground_truth"], ["pdq"], None)
    assert set(again["methods"]["pdq"]["subsets"]) == {"v1"}
    assert again["sets"]["v2"] == {"n_queries": len(
        [r for r in old["records"] if r["kind"] == "hard_negative"]
    ), "n_positive": 0, "n_negative": 0}


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        CopyDetectConfig(methods=("pdq", "nope"))
    with pytest.raises(ConfigError):
        CopyDetectConfig(hard_share=1.5)
    with pytest.raises(ConfigError):
        CopyDetectConfig(max_side=10)
    with pytest.raises(ConfigError):
        CopyDetectConfig(methods=())
    with pytest.raises(ConfigError, match="v2_queries_per_ref"):
        CopyDetectConfig(v2_queries_per_ref=len(get_suite(V2_SUITE)) + 1)
    with pytest.raises(ConfigError, match="v2_queries_per_ref"):
        CopyDetectConfig(v2_queries_per_ref=-1)
    with pytest.raises(ConfigError, match="v2_negatives"):
        CopyDetectConfig(v2_negatives=-1)


def test_command_line(inputs: tuple[list[Path], Path], tmp_path: Path) -> None:
    paths, _ = inputs
    folder = tmp_path / "images"
    folder.mkdir()
    for p in paths[:-1]:
        (folder / p.name).symlink_to(p)
    out = tmp_path / "out"
    args = [
        "--images",
        str(folder),
        "--refs",
        "3",
        "--max-side",
        "160",
        "--out",
        str(out),
        "--methods",
        "pdq,phash",
    ]
    res = CliRunner().invoke(copydetect_bench_command, args)
    assert res.exit_code == 0, res.output
    assert "| pdq |" in res.stdout and "| full |" not in res.stdout
    stored = json.loads((out / "results.json").read_text())
    assert len(stored["split"]["references"]) == 3
    assert set(stored["metrics"]["methods"]) == {"pdq", "phash"}
    bad = CliRunner().invoke(copydetect_bench_command, [*args, "--methods", "pdq,sift"])
    assert bad.exit_code == 2
