"""`tracemark index|search|scan`: JSON lines, exit codes, persistence, decisions on known copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

from tracemark.cli.copydetect import CALIBRATION_ALPHAS, index_group, scan_command, search_command
from tracemark.imageio import load_image, save_image

from .conftest import corpus_images, small_image


def _cli() -> click.Group:
    """``tracemark`` itself once the commands are wired in, else a group holding them."""
    from tracemark import cli

    if "index" in cli.main.commands:
        return cli.main
    group = click.Group("tracemark")
    for command in (index_group, search_command, scan_command):
        group.add_command(command)
    return group


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(_cli(), [str(a) for a in args])


def _rows(res: Result) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines()]



@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> dict[str, Path]:
    """6 references, 6 background photos, 2 unrelated artworks, and two edited copies."""
    root = tmp_path_factory.mktemp("copycli")
    folders = {
        "refs": corpus_images("photo")[5::9][:6],
        "bg": corpus_images("photo")[7::9][:6],
        "other": corpus_images("art")[3::20][:2],
    }
    for name, sources in folders.items():
        (root / name).mkdir()
        for i, src in enumerate(sources):
            save_image(small_image(src, 320), root / name / f"{name}{i}.png")
    ref1 = load_image(root / "refs" / "refs1.png")
    h, w = ref1.shape[:2]
    save_image(
        ref1[h // 5 : h // 5 + int(0.6 * h), w // 4 : w // 4 + int(0.6 * w)], root / "crop1.png"
    )
    save_image(load_image(root / "refs" / "refs2.png"), root / "jpeg2.jpg", quality=50)
    return {"root": root, **{name: root / name for name in folders}}


@pytest.fixture(scope="module")
def db(data: dict[str, Path]) -> Path:
    """The references registered by one `index add` call (later calls reopen it)."""
    path = data["root"] / "db"
    res = _run(
        "index", "add", data["refs"], "--store", path, "--owner", "studio", "--license", "CC-BY"
    )
    assert res.exit_code == 0, res.output
    return path


def _copy(db: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "db"
    shutil.copytree(db, dest)
    return dest


def _ref(data: dict[str, Path], i: int) -> str:
    return str(data["refs"] / f"refs{i}.png")


# --- index add ---------------------------------------------------------------------------


def test_add_reports_each_image_and_persists(data: dict[str, Path], db: Path) -> None:
    res = _run("index", "list", "--store", db)
    assert res.exit_code == 0, res.output
    refs = _rows(res)
    assert [r["source"] for r in refs] == [_ref(data, i) for i in range(6)]
    assert len({r["id"] for r in refs}) == 6
    assert all(r["owner"] == "studio" and r["license"] == "CC-BY" for r in refs)
    stats = _rows(_run("index", "stats", "--store", db))
    assert len(stats) == 1 and stats[0]["count"] == 6 and stats[0]["calibrated"] is False


def test_duplicate_add_is_reported_not_an_error(
    data: dict[str, Path], db: Path, tmp_path: Path
) -> None:
    ids = {r["source"]: r["id"] for r in _rows(_run("index", "list", "--store", db))}
    same_pixels = tmp_path / "again.png"
    shutil.copy(_ref(data, 3), same_pixels)
    res = _run("index", "add", _ref(data, 0), same_pixels, "--store", db)
    assert res.exit_code == 0, res.output
    rows = _rows(res)
    assert [r["duplicate_of"] for r in rows] == [ids[_ref(data, 0)], ids[_ref(data, 3)]]
    assert all(r["error"] is None for r in rows)
    assert "0 added, 2 duplicates, 0 failed" in res.stderr
    assert _rows(_run("index", "stats", "--store", db))[0]["count"] == 6


def test_corrupt_file_in_a_batch_is_an_error_line_and_the_rest_is_added(
    data: dict[str, Path], db: Path, tmp_path: Path
) -> None:
    copy = _copy(db, tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    new = [data["bg"] / "bg0.png", bad, data["bg"] / "bg1.png"]
    res = _run("index", "add", *new, "--store", copy, "--batch-size", "2", "--commit-every", "0")
    assert res.exit_code == 1, res.output
    # a failed image is reported at once; added images once their batch is committed
    by_source = {r["source"]: r for r in _rows(res)}
    assert sorted(by_source) == sorted(str(p) for p in new)
    rows = [by_source[str(p)] for p in new]
    assert rows[1]["id"] is None and rows[1]["error"]["type"] == "CorruptImageError"
    assert rows[0]["id"] > 6 and rows[2]["id"] > 6 and rows[0]["error"] is None
    assert "2 added, 0 duplicates, 1 failed" in res.stderr
    assert _rows(_run("index", "stats", "--store", copy))[0]["count"] == 8

    only_bad = _run("index", "add", bad, "--store", copy)
    assert only_bad.exit_code == 3 and _rows(only_bad)[0]["error"] is not None


# --- list / stats / remove -----------------------------------------------------------------


def test_list_pages_and_remove(db: Path, tmp_path: Path) -> None:
    copy = _copy(db, tmp_path)
    ids = [r["id"] for r in _rows(_run("index", "list", "--store", copy))]
    page = _rows(_run("index", "list", "--store", copy, "--limit", "2", "--offset", "3"))
    assert [r["id"] for r in page] == ids[3:5]

    res = _run("index", "remove", ids[1], 999, "--store", copy)
    assert res.exit_code == 1, res.output
    rows = _rows(res)
    assert [(r["id"], r["removed"]) for r in rows] == [(ids[1], True), (999, False)]
    assert rows[0]["error"] is None and rows[1]["error"]["type"] == "ReferenceNotFoundError"
    assert [r["id"] for r in _rows(_run("index", "list", "--store", copy))] == ids[:1] + ids[2:]
    assert _rows(_run("index", "stats", "--store", copy))[0]["count"] == 5
    assert _run("index", "remove", 999, "--store", copy).exit_code == 3


# --- search --------------------------------------------------------------------------------


def _check_copies_found(data: dict[str, Path], rows: list[dict]) -> None:
    root = data["root"]
    assert [r["query"] for r in rows[:2]] == [str(root / "crop1.png"), str(root / "jpeg2.jpg")]
    for row, ref in zip(rows[:2], (1, 2), strict=True):
        assert row["error"] is None and row["matches"], row
        assert row["matches"][0]["source"] == _ref(data, ref)
        assert all(m["decision"] for m in row["matches"])
    for row in rows[2:]:
        assert row["error"] is None and row["matches"] == []


def test_search_finds_a_crop_and_a_jpeg_copy_but_not_unrelated_images(
    data: dict[str, Path], db: Path
) -> None:
    root = data["root"]
    res = _run("search", root / "crop1.png", root / "jpeg2.jpg", data["other"], "--store", db)
    assert res.exit_code == 11, res.output  # every query searched; copies found in some
    rows = _rows(res)
    assert len(rows) == 4
    _check_copies_found(data, rows)
    assert "not calibrated" in res.stderr
    # the crop's region in the reference: the cropped window (x from w/4, y from h/5)
    region = np.array(rows[0]["matches"][0]["region"])
    h, w = load_image(_ref(data, 1)).shape[:2]
    assert np.allclose(region.min(0), [w // 4, h // 5], atol=4)

    everything = _rows(
        _run("search", data["other"] / "other0.png", "--store", db, "--all", "--k", "3")
    )
    assert len(everything[0]["matches"]) == 3
    assert not any(m["decision"] for m in everything[0]["matches"])
    strict = _rows(_run("search", root / "crop1.png", "--store", db, "--min-inliers", "1000"))
    assert strict[0]["matches"] == []


def test_search_reports_a_bad_query_and_carries_on(
    data: dict[str, Path], db: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    res = _run("search", bad, data["root"] / "jpeg2.jpg", "--store", db)
    assert res.exit_code == 1, res.output
    rows = _rows(res)
    assert rows[0]["error"]["type"] == "EmptyImageError" and rows[0]["matches"] == []
    assert rows[1]["error"] is None and rows[1]["matches"][0]["source"] == _ref(data, 2)
    assert _run("search", bad, "--store", db).exit_code == 3


def test_missing_or_foreign_db_is_a_usage_error(data: dict[str, Path], tmp_path: Path) -> None:
    query = data["root"] / "crop1.png"
    missing = tmp_path / "nowhere"
    res = _run("search", query, "--store", missing)
    assert res.exit_code == 2 and "no index at" in res.stderr
    for args in (["index", "list"], ["index", "stats"], ["index", "remove", "1"]):
        assert _run(*args, "--store", missing).exit_code == 2
    assert not missing.exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an index")
    assert _run("search", query, "--store", tmp_path / "junk").exit_code == 2
    assert _run("index", "add", query, "--store", tmp_path / "junk" / "notes.txt").exit_code == 2
    assert _run("scan", query, "--against", missing).exit_code == 2


# --- calibrate -----------------------------------------------------------------------------


def test_calibrate_then_search(data: dict[str, Path], db: Path, tmp_path: Path) -> None:
    copy = _copy(db, tmp_path)
    res = _run("index", "calibrate", data["bg"], _ref(data, 0), "--store", copy)
    assert res.exit_code == 0, res.output
    (summary,) = _rows(res)
    assert summary["used"] == 6 and summary["in_collection"] == 1 and summary["failed"] == 0
    assert summary["null_samples"] == 3 and summary["background_rows"] > 0
    # three null samples measure p-values down to 1/4 only: the command says so
    assert summary["smallest_supported_p_value"] == 0.25
    assert summary["recommended_background"] == 1998
    assert "extrapolated" in summary["warning"] and "1998 background images" in summary["warning"]
    assert "warning: 3 null samples measure p-values only down to 0.25" in res.stderr
    thr = [summary["thresholds"][f"{a:g}"] for a in CALIBRATION_ALPHAS]
    assert thr[0] < thr[1] < thr[2]  # a smaller false-positive rate needs a higher score
    assert _rows(_run("index", "stats", "--store", copy))[0]["calibrated"] is True

    root = data["root"]
    res = _run(
        "search", root / "crop1.png", root / "jpeg2.jpg", data["other"], "--store", copy, "--all"
    )
    assert res.exit_code == 11, res.output
    rows = _rows(res)
    for row in rows:  # decision <=> p <= 1e-3 <=> raw score above the reported threshold
        for m in row["matches"]:
            assert m["p_value"] is not None
            assert m["decision"] == (m["p_value"] <= 1e-3) == (m["raw_score"] >= thr[1])
    decided = [{**r, "matches": [m for m in r["matches"] if m["decision"]]} for r in rows]
    _check_copies_found(data, decided)

    too_few = _run(
        "index", "calibrate", data["bg"] / "bg0.png", data["bg"] / "bg1.png", "--store", copy
    )
    assert too_few.exit_code == 2 and "at least 4" in too_few.stderr


# --- scan ----------------------------------------------------------------------------------


def test_scan_against_a_training_folder_then_its_index(
    data: dict[str, Path], tmp_path: Path
) -> None:
    gen = tmp_path / "generated"
    gen.mkdir()
    shutil.copy(data["root"] / "crop1.png", gen / "a_copy.png")
    shutil.copy(data["root"] / "jpeg2.jpg", gen / "b_copy.jpg")
    for i in range(2):
        shutil.copy(data["other"] / f"other{i}.png", gen / f"c_new{i}.png")
    kept = tmp_path / "training-index"

    res = _run("scan", gen, "--against", data["refs"], "--db-out", kept, "--k", "2")
    assert res.exit_code == 11, res.output  # replication found in some generated images
    *lines, last = _rows(res)
    assert [Path(r["query"]).name for r in lines] == [
        "a_copy.png",
        "b_copy.jpg",
        "c_new0.png",
        "c_new1.png",
    ]
    assert [r["replicated"] for r in lines] == [True, True, False, False]
    assert [r["matches"][0]["source"] for r in lines[:2]] == [_ref(data, 1), _ref(data, 2)]
    # --k 2 lists at most 2; a copy verified beyond doubt stops the verification of
    # candidates voting far below it (MatchConfig.early_stop), the others list 2
    assert [len(r["matches"]) for r in lines[2:]] == [2, 2]
    assert all(1 <= len(r["matches"]) <= 2 for r in lines[:2])
    summary = last["summary"]
    assert summary["generated"] == 4 and summary["replicated"] == 2 and summary["failed"] == 0
    assert summary["replication_rate"] == pytest.approx(0.5)
    assert summary["calibrated"] is False and summary["threshold"]["min_inliers"] == 12
    assert summary["references"] == 6

    again = _run("scan", gen, "--against", kept, "--k", "2")  # the kept index, read-only
    assert again.exit_code == 11, again.output
    assert _rows(again)[-1]["summary"] == summary
    assert _run("scan", gen, "--against", kept, "--db-out", tmp_path / "x").exit_code == 2
    assert _run("scan", gen, "--against", kept, "--background", data["bg"]).exit_code == 2

    calibrated = _run("scan", gen, "--against", data["refs"], "--background", data["bg"], "--k", "2")
    assert calibrated.exit_code == 11, calibrated.output
    *lines, last = _rows(calibrated)
    assert [r["replicated"] for r in lines] == [True, True, False, False]
    assert last["summary"]["calibrated"] is True
    assert all(m["p_value"] is not None for r in lines for m in r["matches"])


def test_scan_with_a_temporary_index_reports_failures(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    training = tmp_path / "training"
    training.mkdir()
    for i in range(3):
        shutil.copy(_ref(data, i), training / f"t{i}.png")
    (training / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    res = _run("scan", data["root"] / "crop1.png", bad, "--against", training)
    assert res.exit_code == 1, res.output
    first, failed, last = _rows(res)
    assert first["replicated"] is True and first["matches"][0]["source"] == str(training / "t1.png")
    assert failed["replicated"] is None and failed["error"]["type"] == "CorruptImageError"
    assert last["summary"] == {
        **last["summary"],
        "generated": 2,
        "scanned": 1,
        "replicated": 1,
        "replication_rate": 1.0,
        "failed": 1,
        "references": 3,
        "index": None,
        "training_failed": 1,
    }
    assert list(scratch.iterdir()) == []  # the temporary index is gone

    (tmp_path / "empty").mkdir()
    assert _run("scan", bad, "--against", tmp_path / "empty").exit_code == 2
