"""Near-duplicate groups (tracemark.copydetect.dedup and ``tracemark dedup``).

Every image is made here: corpus photos shrunk to 320 px, edited with tracemark.attacks
(JPEG + crop + resize, a mirror), an exact re-encode as PNG, unrelated photos that must stay
apart, and a corrupt file. The oracle is the construction: pairs within a source group.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tracemark.attacks.degradation import jpeg
from tracemark.attacks.geometric import center_crop, hflip, resize
from tracemark.bench.watermark import prepare_image
from tracemark.cli import main
from tracemark.copydetect import CopyIndex, Deduper, find_duplicates
from tracemark.errors import ClosedError, ConfigError
from tracemark.imageio import load_image

from .conftest import corpus_images

# textured photos (copy detection needs features; flat wallpapers are not used here)
NAMES = ["art/gcompris_3.jpg", "art/wesnoth_18.jpg", "art/stellarium_37.jpg",
         "photo/gcompris_49.jpg", "art/wesnoth_40.jpg", "photo/gcompris_74.jpg"]


@pytest.fixture(scope="module")
def originals(corpus_dir: Path) -> dict[str, np.ndarray]:
    return {n: prepare_image(load_image(corpus_dir / n), max_side=320) for n in NAMES}


def _edit(im: np.ndarray) -> np.ndarray:
    return jpeg(resize(center_crop(im, area=0.7), scale=0.9), quality=70)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, originals: dict[str, np.ndarray]) -> Path:
    """a: original + edited copy + mirrored copy; b: original + exact PNG re-encode;
    c..e: unrelated singles; bad.jpg: truncated."""
    root = tmp_path_factory.mktemp("dedup") / "in"
    root.mkdir()
    a, b, c, d, e = (originals[n] for n in NAMES[:5])
    Image.fromarray(a).save(root / "a.jpg", quality=95)
    a_jpg = load_image(root / "a.jpg")
    Image.fromarray(_edit(a_jpg)).save(root / "a_edit.jpg", quality=90)
    Image.fromarray(jpeg(hflip(a_jpg), quality=80)).save(root / "a_mirror.jpg", quality=95)
    Image.fromarray(b).save(root / "b.png")
    Image.fromarray(load_image(root / "b.png")).save(root / "b_copy.png", compress_level=1)
    for name, im in (("c.jpg", c), ("d.jpg", d), ("e.jpg", e)):
        Image.fromarray(im).save(root / name, quality=90)
    (root / "bad.jpg").write_bytes((root / "c.jpg").read_bytes()[:300])
    return root


def _groups(report_groups: list) -> set[frozenset[str]]:
    return {frozenset(Path(m.source).name for m in g.members) for g in report_groups}


def test_groups_copies_and_exact_duplicates_and_reports_bad_files(folder: Path) -> None:
    paths = sorted(folder.iterdir())
    seen = []
    report = find_duplicates(paths, on_item=seen.append)
    assert _groups(report.groups) == {frozenset({"a.jpg", "a_edit.jpg", "a_mirror.jpg"}),
                                      frozenset({"b.png", "b_copy.png"})}
    assert [Path(i.source).name for i in seen] == [p.name for p in paths]
    (bad,) = [i for i in report.items if i.error is not None]
    assert Path(bad.source).name == "bad.jpg" and bad.error["type"] == "CorruptImageError"
    by_kind = {p.kind: p for g in report.groups for p in g.pairs}
    exact = by_kind["exact"]
    assert {Path(exact.a).name, Path(exact.b).name} == {"b.png", "b_copy.png"}
    assert exact.inliers is None and exact.region is None
    near = [p for g in report.groups for p in g.pairs if p.kind == "near"]
    assert {Path(p.b).name for p in near} >= {"a_edit.jpg", "a_mirror.jpg"}
    for p in near:  # the evidence: a verified match, its regions in both frames
        assert p.inliers >= 12 and p.raw_score > 0 and p.p_value is None
        assert np.asarray(p.region).shape == (4, 2) and np.asarray(p.query_region).shape == (4, 2)
    mirror = next(p for p in near if Path(p.b).name == "a_mirror.jpg")
    assert mirror.flipped
    # the edited copy is a 70% centre crop: its outline in the original sits inside it
    edit = next(p for p in near if Path(p.b).name == "a_edit.jpg")
    region = np.asarray(edit.region)
    assert region[:, 0].min() > 10 and region[:, 0].max() < 310
    s = report.summary()
    assert s == {"checked": 8, "registered": 0, "errors": 1, "groups": 2,
                 "images_in_groups": 5, "exact_pairs": 1, "near_pairs": len(near)}


def test_arrays_and_labels_and_bad_k(originals: dict[str, np.ndarray]) -> None:
    a = originals[NAMES[0]]
    report = find_duplicates([("x", a), ("y", _edit(a)), ("tiny", np.zeros((2, 2, 3), np.uint8)),
                              ("z", originals[NAMES[1]])])
    assert _groups(report.groups) == {frozenset({"x", "y"})}
    assert report.items[2].error["type"] == "ImageTooSmallError"
    assert report.rule["calibrated"] is False
    with pytest.raises(ConfigError):
        Deduper(k=0)
    dd = Deduper()
    dd.close()
    dd.close()  # idempotent
    with pytest.raises(ClosedError):
        dd.check(a)


def test_incremental_on_a_store_checks_only_new_images(
        folder: Path, tmp_path: Path, originals: dict[str, np.ndarray]) -> None:
    store = tmp_path / "ix"
    first = [folder / n for n in ("a.jpg", "c.jpg", "d.jpg")]
    with CopyIndex.create(store) as ci:
        report = find_duplicates(first, index=ci)
        assert report.groups == [] and len(ci) == 3
    # the folder grew: one more copy of a, a copy of c, and an unrelated image
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(_edit(load_image(folder / "c.jpg"))).save(new / "c_edit.jpg")
    Image.fromarray(originals[NAMES[5]]).save(new / "f.png")
    second = [*first, folder / "a_edit.jpg", new / "c_edit.jpg", new / "f.png"]
    with CopyIndex.open(store) as ci:
        searched = []
        original_search = ci.search

        def counting_search(image, *, k=5):
            searched.append(image.shape)
            return original_search(image, k=k)

        ci.search = counting_search  # type: ignore[method-assign]  # a spy, not a mock
        report = find_duplicates(second, index=ci)
        assert len(ci) == 6
    # only the three new images were searched; the registered ones were recognised by hash
    assert sorted(searched) == sorted(load_image(p).shape for p in second[3:])
    assert report.summary()["registered"] == 3 and report.summary()["checked"] == 3
    assert _groups(report.groups) == {frozenset({"a.jpg", "a_edit.jpg"}),
                                      frozenset({"c.jpg", "c_edit.jpg"})}
    old = [m for g in report.groups for m in g.members if not m.new]
    assert sorted(Path(m.source).name for m in old) == ["a.jpg", "c.jpg"]
    assert all(m.id is not None for g in report.groups for m in g.members)
    # --no-add: checked against the store, nothing written to it
    Image.fromarray(_edit(load_image(folder / "d.jpg"))).save(new / "d_edit.jpg")
    with CopyIndex.open(store, read_only=True) as ci:
        report = find_duplicates([new / "d_edit.jpg", new / "f.png"], index=ci, add=False)
    assert _groups(report.groups) == {frozenset({"d.jpg", "d_edit.jpg"})}
    with CopyIndex.open(store, read_only=True) as ci:
        assert len(ci) == 6


def test_calibrated_folder_run_decides_by_p_value(folder: Path, corpus_dir: Path) -> None:
    background = [prepare_image(load_image(p), max_side=320)
                  for p in corpus_images("photo")[60:72]]
    paths = [folder / n for n in ("a.jpg", "a_edit.jpg", "b.png", "b_copy.png", "c.jpg",
                                  "d.jpg", "bad.jpg")]
    report = find_duplicates(paths, background=background)
    assert report.rule["calibrated"] is True
    assert _groups(report.groups) == {frozenset({"a.jpg", "a_edit.jpg"}),
                                      frozenset({"b.png", "b_copy.png"})}
    near = [p for g in report.groups for p in g.pairs if p.kind == "near"]
    assert near and all(p.p_value is not None and p.p_value <= 1e-3 for p in near)
    assert report.summary()["errors"] == 1
    with CopyIndex.create(folder.parent / "cal-ix") as ci, pytest.raises(ConfigError):
        find_duplicates(paths, index=ci, background=background)
    with pytest.raises(ConfigError):
        find_duplicates(paths[:2], background=background[:3])


def test_cli_end_to_end(folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["dedup", str(folder)])
    assert res.exit_code == 1, res.output  # bad.jpg failed
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    groups = [r for r in rows if "group" in r]
    errors = [r for r in rows if r["error"] is not None]
    assert [r["group"] for r in groups] == [1, 2]
    assert {frozenset(Path(m["source"]).name for m in g["members"]) for g in groups} == {
        frozenset({"a.jpg", "a_edit.jpg", "a_mirror.jpg"}), frozenset({"b.png", "b_copy.png"})}
    assert [Path(r["source"]).name for r in errors] == ["bad.jpg"]
    assert "2 groups holding 5 images" in res.stderr and "1 failed" in res.stderr
    # without the bad file: some images in groups -> 11; unrelated only -> 10
    good = [str(folder / n) for n in ("a.jpg", "a_edit.jpg", "c.jpg")]
    assert runner.invoke(main, ["dedup", *good]).exit_code == 11
    assert runner.invoke(main, ["dedup", str(folder / "c.jpg"), str(folder / "d.jpg")]).exit_code == 10
    # --store: registered, then a second run checks only the new image
    store = tmp_path / "ix"
    res = runner.invoke(main, ["dedup", *good[:1], good[2], "--store", str(store)])
    assert res.exit_code == 10, res.output
    res = runner.invoke(main, ["dedup", *good, "--store", str(store), "--out",
                               str(tmp_path / "groups.jsonl")])
    assert res.exit_code == 11, res.output
    assert res.stdout == "" and "1 images checked, 2 already registered" in res.stderr
    (group,) = [json.loads(x) for x in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert [(Path(m["source"]).name, m["new"]) for m in group["members"]] == [
        ("a.jpg", False), ("a_edit.jpg", True)]
    assert group["pairs"][0]["kind"] == "near" and group["pairs"][0]["inliers"] >= 12
    # --out exists: refused without --force; an input never written over
    res = runner.invoke(main, ["dedup", *good, "--out", str(tmp_path / "groups.jsonl")])
    assert res.exit_code == 2 and "--force" in res.stderr
    res = runner.invoke(main, ["dedup", *good, "--out", good[0], "--force"])
    assert res.exit_code == 2 and "never writes over an input" in res.stderr
    # usage errors: --background with --store, --no-add on a missing store
    res = runner.invoke(main, ["dedup", *good, "--store", str(store), "--background", str(folder)])
    assert res.exit_code == 2 and "index calibrate" in res.stderr
    res = runner.invoke(main, ["dedup", *good, "--store", str(tmp_path / "none"), "--no-add"])
    assert res.exit_code == 2 and "no index" in res.stderr
    # nothing readable
    res = runner.invoke(main, ["dedup", str(folder / "bad.jpg")])
    assert res.exit_code == 3


def test_bench_scores_pairs_against_the_construction(corpus_dir: Path) -> None:
    from tracemark.bench.dedup import DedupBenchConfig, run_dedup_bench, score_method

    records = [{"file": f, "group": g, "kind": k} for f, g, k in (
        ("o1.jpg", "o1", "original"), ("o1_x.jpg", "o1", "crop"), ("o1_e.png", "o1", "exact"),
        ("o2.jpg", "o2", "original"), ("o2_y.jpg", "o2", "blur"), ("d.jpg", None, "distractor"))]
    pred = {frozenset(("o1.jpg", "o1_x.jpg")), frozenset(("o1_x.jpg", "o1_e.png")),
            frozenset(("o2.jpg", "d.jpg"))}
    s = score_method(pred, None, records)
    # truth: 3 pairs in o1, 1 in o2; groups {o1, o1_x, o1_e} (3 pairs, all true), {o2, d}
    assert s["pairs"]["precision"] == pytest.approx(2 / 3) and s["pairs"]["recall"] == 0.5
    assert s["group_pairs"]["true_pairs"] == 3 and s["group_pairs"]["predicted_pairs"] == 4
    assert s["recall_by_kind"]["exact"]["recall"] == 1.0  # through the group
    assert s["recall_by_kind"]["blur"]["recall"] == 0.0 and s["groups"] == 2
    config = DedupBenchConfig(originals=3, distractors=2, copied_share=1.0, exact_share=1.0,
                              max_side=256, methods=("tracemark", "tracemark_calibrated"),
                              background=4)
    result = run_dedup_bench(corpus_images("photo")[:12], config)
    kinds = [r["kind"] for r in result["records"]]
    assert kinds.count("exact") == 3 and kinds.count("distractor") == 2
    for method in ("tracemark", "tracemark_calibrated"):
        r = result["results"][method]
        assert r["recall_by_kind"]["exact"]["recall"] == 1.0 and r["ms_per_image"] > 0
    assert result["results"]["tracemark_calibrated"]["rule"]["calibrated"]
    with pytest.raises(ConfigError):
        run_dedup_bench(corpus_images("photo")[:6], config)  # 3 + 4 background > 6 images
    with pytest.raises(ConfigError):
        DedupBenchConfig(methods=("nope",))
