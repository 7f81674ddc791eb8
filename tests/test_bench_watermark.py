"""The watermark benchmark runner: records, aggregates, report, plots and the command.

Runs the real ``lattice`` method on three small corpus images with a tiny suite; the
aggregates are checked against a recomputation from the raw records.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import corpus_images
from tracemark.attacks import suite_from_dict
from tracemark.bench.watermark import (
    BENCH_KEY,
    CSV_COLUMNS,
    NONE_ENTRY,
    BenchConfig,
    attack_quality,
    format_markdown,
    list_images,
    prepare_image,
    run_watermark_bench,
    select_spread,
    write_outputs,
)
from tracemark.cli.bench import watermark_bench_command
from tracemark.errors import ConfigError
from tracemark.metrics import auroc, tpr_at_fpr

SUITE = suite_from_dict(
    {
        "name": "tiny",
        "source": "test",
        "entries": [
            {
                "label": "jpeg_50",
                "attack": "jpeg",
                "params": {"quality": 50},
                "group": "jpeg",
                "level": 50,
            },
            {
                "label": "jpeg_90",
                "attack": "jpeg",
                "params": {"quality": 90},
                "group": "jpeg",
                "level": 90,
            },
            {"label": "crop", "attack": "random_crop", "params": {"area": 0.7}},
        ],
    }
)
LABELS = [NONE_ENTRY, "jpeg_50", "jpeg_90", "crop"]


@pytest.fixture(scope="module")
def images(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two photos and an art image, plus a truncated JPEG that sorts last."""
    folder = tmp_path_factory.mktemp("bench-images")
    picks = corpus_images("photo", 2) + corpus_images("art", 1)
    for p in picks:
        (folder / p.parent.name).mkdir(exist_ok=True)
        shutil.copy(p, folder / p.parent.name / p.name)
    (folder / "zz_truncated.jpg").write_bytes(picks[0].read_bytes()[:2000])
    return folder


def _run(images: Path, *, seed: int = 0, workers: int = 1) -> dict[str, Any]:
    return run_watermark_bench(
        list_images(images),
        ["lattice"],
        [SUITE],
        config=BenchConfig(seed=seed, resize=256, workers=workers),
        root=images,
    )


@pytest.fixture(scope="module")
def result(images: Path) -> dict[str, Any]:
    return _run(images)


@pytest.fixture(scope="module")
def written(result: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-out")
    write_outputs(result, out, plots=True)
    return out


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_timings(v)
            for k, v in value.items()
            if not (k.endswith("_ms") or k in {"elapsed_s", "date", "workers"})
        }
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_results_json_structure(result: dict[str, Any], written: Path) -> None:
    loaded = json.loads((written / "results.json").read_text(encoding="utf-8"))
    assert loaded == result
    assert loaded["images"] == ["art/" + corpus_images("art", 1)[0].name] + [
        f"photo/{p.name}" for p in corpus_images("photo", 2)
    ] + ["zz_truncated.jpg"]
    assert [m["name"] for m in loaded["methods"]] == ["lattice"]
    assert loaded["config"]["resize"] == 256 and loaded["config"]["key"] == BENCH_KEY
    good = [r for r in loaded["records"] if "error" not in r]
    assert len(good) == 3 * len(LABELS)  # three readable images, 'none' plus three entries
    for r in good:
        assert 0.0 <= r["bit_acc"] <= 1.0 and 0.0 <= r["clean_bit_acc"] <= 1.0
        assert isinstance(r["exact"], bool)
        assert r["detect_ms"] > 0 and r["clean_detect_ms"] > 0
        assert 0.0 <= r["p_value"] <= 1.0 and 0.0 <= r["clean_p_value"] <= 1.0
    assert [(a["suite"], a["entry"]) for a in loaded["aggregates"]] == [
        (NONE_ENTRY, NONE_ENTRY)
    ] + [("tiny", lab) for lab in LABELS[1:]]
    assert len(loaded["attacks"]) == 3 * len(SUITE)
    crops = [a for a in loaded["attacks"] if a["entry"] == "crop"]
    assert len({(a["params"]["x"], a["params"]["y"]) for a in crops}) == 3  # drawn per image
    (quality,) = loaded["quality"]
    assert quality["n_images"] == 3 and quality["psnr"] > 30 and 0.9 < quality["ssim"] <= 1
    assert quality["n_detections"] == 2 * len(good)


def test_corrupt_image_is_an_error_row_and_the_run_continues(result: dict[str, Any]) -> None:
    errors = [r for r in result["records"] if "error" in r]
    assert errors == [
        {
            "image": "zz_truncated.jpg",
            "method": None,
            "suite": None,
            "entry": None,
            "stage": "load",
            "error": errors[0]["error"],
        }
    ]
    assert errors[0]["error"]["type"] == "CorruptImageError"
    summary = result["summary"]
    assert (summary["n_images"], summary["n_bad_images"], summary["n_errors"]) == (4, 1, 1)
    assert summary["bad_images"] == ["zz_truncated.jpg"]


def test_record_matches_an_independent_embed_and_detect(
    result: dict[str, Any], images: Path
) -> None:
    """Replay the 'none' record of one image: same payload, same key, same bits."""
    from tracemark.imageio import load_image
    from tracemark.watermark import get_method

    name = result["images"][1]
    embed = next(e for e in result["embeds"] if e["image"] == name)
    payload = np.array([int(c) for c in embed["payload"]], np.uint8)
    clean = prepare_image(load_image(images / name), resize=256)
    method = get_method("lattice")
    det = method.detect(method.embed(clean, payload, BENCH_KEY), BENCH_KEY)
    rec = next(r for r in result["records"] if r["image"] == name and r["entry"] == NONE_ENTRY)
    expected = 0.5 if det.bits is None else float(np.mean(det.bits == payload))
    assert rec["bit_acc"] == expected
    clean_det = method.detect(clean, BENCH_KEY)
    assert rec["clean_bit_acc"] == (
        0.5 if clean_det.bits is None else float(np.mean(clean_det.bits == payload))
    )


def test_aggregates_equal_a_recomputation_from_records(result: dict[str, Any]) -> None:
    for agg in result["aggregates"]:
        rows = [
            r
            for r in result["records"]
            if r["method"] == agg["method"]
            and r["suite"] == agg["suite"]
            and r["entry"] == agg["entry"]
        ]
        pos = [r["bit_acc"] for r in rows]
        neg = [r["clean_bit_acc"] for r in rows]
        assert agg["n"] == len(rows) == 3
        assert agg["bit_acc"] == pytest.approx(statistics.fmean(pos))
        assert agg["exact"] == pytest.approx(statistics.fmean([float(r["exact"]) for r in rows]))
        assert agg["auroc_bit_acc"] == pytest.approx(auroc(positives=pos, negatives=neg))
        scores = [r["score"] for r in rows]
        clean_scores = [r["clean_score"] for r in rows]
        for fpr in (0.01, 0.001):
            want = tpr_at_fpr(positives=pos, negatives=neg, fpr=fpr)
            got = agg["tpr_bit_acc"][str(fpr)]
            assert (got["tpr"], got["threshold"], got["achieved_fpr"]) == (
                want.tpr,
                want.threshold,
                want.achieved_fpr,
            )
            assert got["resolvable"] is False  # 3 negatives resolve FPR >= 1/3 only
            want_score = tpr_at_fpr(positives=scores, negatives=clean_scores, fpr=fpr)
            assert agg["tpr_score"][str(fpr)]["tpr"] == want_score.tpr
        assert agg["present_marked"] == pytest.approx(np.mean([r["p_value"] < 1e-3 for r in rows]))
        assert agg["present_clean"] == pytest.approx(
            np.mean([r["clean_p_value"] < 1e-3 for r in rows])
        )


def test_same_seed_same_results_also_with_workers(images: Path, result: dict[str, Any]) -> None:
    again = _run(images, workers=2)
    assert _without_timings(again) == _without_timings(result)
    other = _run(images, seed=1)
    assert [e["payload"] for e in other["embeds"]] != [e["payload"] for e in result["embeds"]]
    assert [a["params"] for a in other["attacks"]] != [a["params"] for a in result["attacks"]]


def test_report_markdown(result: dict[str, Any], written: Path) -> None:
    text = (written / "report.md").read_text(encoding="utf-8")
    assert text == format_markdown(result)
    assert "## Quality and speed" in text and "## tiny" in text
    assert "| entry | method | n | bit accuracy | exact payload |" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0][2:]: line for line in table}
    for lab in LABELS:
        assert lab in rows
    for line in table:  # one figure per cell: no "a / b" pairs
        assert " / " not in line, line
    agg = next(a for a in result["aggregates"] if a["entry"] == "jpeg_50")
    assert (
        f"| jpeg_50 | lattice | {agg['n']} | {agg['bit_acc']:.3f} | {agg['exact']:.2f} | " in text
    )
    q = result["quality"][0]
    assert f"| lattice | {q['n_images']} | " in text and f"| {q['n_detections']} |" in text
    assert "issue" not in text.lower() and "target" not in text.lower()


def test_plots_are_written(written: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the optional 'bench' extra (matplotlib)")
    pngs = sorted(p.name for p in (written / "plots").glob("*.png"))
    assert pngs == ["tiny_jpeg.png", "tiny_single.png", "tiny_waves.png"]
    for name in pngs:
        assert (written / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_per_suite_has_every_entry_and_method(result: dict[str, Any], written: Path) -> None:
    import csv

    with (written / "csv" / "tiny.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    suite = result["suites"][0]
    assert [r["entry"] for r in rows] == ["none"] + [e["label"] for e in suite["entries"]]
    index = {(a["suite"], a["entry"]): a for a in result["aggregates"]}
    for r in rows:
        a = index[("none" if r["entry"] == "none" else "tiny", r["entry"])]
        assert float(r["bit_accuracy"]) == pytest.approx(a["bit_acc"])
        assert float(r["tpr_at_fpr_0.1%"]) == pytest.approx(a["tpr_bit_acc"]["0.001"]["tpr"])
        assert float(r["attack_psnr_db"]) == pytest.approx(a["attack_psnr"])
    # a stronger JPEG costs more quality: PSNR falls as the quality setting falls
    psnr = {r["entry"]: float(r["attack_psnr_db"]) for r in rows}
    assert psnr["none"] == 100.0
    jpeg = sorted((e for e in suite["entries"] if e["group"] == "jpeg"), key=lambda e: e["level"])
    values = [psnr[e["label"]] for e in jpeg]
    assert values == sorted(values) and values[0] < 40


def test_attack_quality_resizes_geometric_attacks_back() -> None:
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    same = attack_quality(clean, clean)
    assert same == {"attack_psnr": 100.0, "attack_ssim": 1.0}
    import cv2

    half = cv2.resize(clean, (40, 32), interpolation=cv2.INTER_AREA)
    cost = attack_quality(clean, half)
    assert cost["attack_psnr"] is not None and cost["attack_psnr"] < 30
    assert 0 <= cost["attack_ssim"] < 1


def test_select_spread_is_deterministic_and_spread() -> None:
    paths = [Path(f"art/{i:02d}.jpg") for i in range(6)] + [
        Path(f"photo/{i:02d}.jpg") for i in range(4)
    ]
    picked = select_spread(paths, 4)
    assert picked == [paths[0], paths[2], paths[5], paths[7]]
    assert {p.parent.name for p in picked} == {"art", "photo"}
    assert select_spread(paths, None) == paths and select_spread(paths, 50) == paths
    with pytest.raises(ConfigError):
        select_spread(paths, 0)


def test_prepare_image_and_config_validation() -> None:
    img = np.zeros((300, 600, 3), np.uint8)
    assert prepare_image(img, resize=128).shape == (128, 128, 3)
    assert prepare_image(img, max_side=200).shape == (100, 200, 3)
    assert prepare_image(img, max_side=1000) is img
    with pytest.raises(ConfigError):
        BenchConfig(resize=256, max_side=256)
    with pytest.raises(ConfigError):
        BenchConfig(workers=0)


def test_command_writes_outputs_and_exits_partial(images: Path, tmp_path: Path) -> None:
    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\nentries:\n  - {label: flip, attack: hflip}\n", encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["--images", str(images), "--resize", "128", "--no-plots", "--out", str(out)]
    res = runner.invoke(watermark_bench_command, [*args, "--suite", str(suite), "--limit", "2"])
    assert res.exit_code == 0, res.output  # two images spread over the folder: no bad one
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["images"] == [
        f"art/{corpus_images('art', 1)[0].name}",
        f"photo/{corpus_images('photo', 2)[1].name}",
    ]
    assert data["summary"]["n_errors"] == 0 and [m["name"] for m in data["methods"]] == ["lattice"]
    assert not (out / "plots").exists()
    assert "## one" in res.stdout and "| flip |" in res.stdout
    res = runner.invoke(watermark_bench_command, [*args, "--suite", str(suite), "--limit", "4"])
    assert res.exit_code == 1  # the truncated image is an error row, the others ran
    res = runner.invoke(
        watermark_bench_command, [*args, "--methods", "nope", "--suite", str(suite)]
    )
    assert res.exit_code == 2 and "unknown watermark method" in res.output
    res = runner.invoke(watermark_bench_command, [*args, "--suite", "no-such-suite"])
    assert res.exit_code == 2 and "unknown suite" in res.output
    res = runner.invoke(watermark_bench_command, [*args, "--suite", str(suite), "--max-side", "99"])
    assert res.exit_code == 2 and "not both" in res.output
