"""End-to-end: `tracemark attack` over corpus images writes images and a replayable manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tracemark import attacks
from tracemark.cli import main
from tracemark.imageio import load_image

from .conftest import corpus_images


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_wbench_over_20_corpus_images_writes_500_images(corpus_dir: Path, tmp_path: Path) -> None:
    images = corpus_images("photo", 10) + corpus_images("art", 10)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["attack", "--suite", "wbench-distortions", "--out", str(out),
                                    *map(str, images)])
    assert res.exit_code == 0, res.output
    rows = _manifest(out)
    assert len(rows) == 500
    written = list(out.rglob("*.png"))
    assert len(written) == 500
    assert all(r["error"] is None for r in rows)
    assert {r["label"] for r in rows} == {e.label for e in attacks.get_suite("wbench-distortions")}
    # every row replays exactly from the recorded parameters (PNG output is lossless)
    for r in rows[::37]:
        replay = attacks.apply_attack(load_image(r["source"]), r["attack"], **r["params"])
        assert np.array_equal(replay, load_image(r["output"])), r["label"]


def test_bad_file_in_batch_is_reported_and_skipped(corpus_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = corpus_images("photo", 1)[0]
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["attack", "--suite", "tree-ring", "--out", str(out),
                                    str(bad), str(good), str(empty), str(tmp_path / "missing.jpg")])
    assert res.exit_code == 1, res.output
    rows = _manifest(out)
    errors = [r for r in rows if r["error"] is not None]
    assert {Path(r["source"]).name for r in errors} == {"broken.jpg", "empty.png", "missing.jpg"}
    assert {r["error"]["type"] for r in errors} == {"CorruptImageError", "EmptyImageError", "ImageSourceError"}
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) == len(attacks.get_suite("tree-ring"))


def test_same_seed_same_manifest_and_metrics_table(corpus_dir: Path, tmp_path: Path) -> None:
    img = str(corpus_images("art", 1)[0])
    outs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["attack", "--suite", "disc21-like", "--seed", "7", "--metrics",
                                        "--out", str(tmp_path / name), img])
        assert res.exit_code == 0, res.output
        outs.append(_manifest(tmp_path / name))
        assert "| attack | n | strength | PSNR dB | SSIM |" in res.stderr
    strip = [[{k: v for k, v in r.items() if k != "output"} for r in rows] for rows in outs]
    assert strip[0] == strip[1]


def test_unknown_suite_is_a_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["attack", "--suite", "nope", "--out", str(tmp_path), "x.jpg"])
    assert res.exit_code == 2 and "unknown suite" in res.output


def test_user_suite_file(corpus_dir: Path, tmp_path: Path) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\nentries:\n  - {label: q30, attack: jpeg, params: {quality: 30}}\n"
                     "  - {label: crop, attack: random_crop, params: {area: {uniform: [0.3, 0.9]}}}\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["attack", "--suite", str(suite), "--out", str(out),
                                    str(corpus_images("photo", 1)[0])])
    assert res.exit_code == 0, res.output
    rows = _manifest(out)
    assert [r["label"] for r in rows] == ["q30", "crop"]
    assert 0.3 <= rows[1]["params"]["area"] <= 0.9


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("tracemark")
    if not exe.exists():
        pytest.skip("the tracemark console script is not installed beside this interpreter")
    res = subprocess.run([str(exe), "suites", "list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "wbench-distortions" in res.stdout
