"""Copy detection end to end on a small collection whose expected matches are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracemark import attacks
from tracemark.copydetect import CopyIndex, MatchConfig, content_hash
from tracemark.errors import CorruptImageError, TracemarkError
from tracemark.imageio import load_image, save_image

from .conftest import corpus_images, small_image


@pytest.fixture(scope="module")
def collection(tmp_path_factory, corpus_dir) -> tuple[Path, list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("copyidx")
    photos = corpus_images("photo")[5::9][:6]
    others = corpus_images("photo")[7::9][:8]
    refs = []
    for i, p in enumerate(photos):
        dest = root / f"ref{i}.png"
        save_image(small_image(p, 360), dest)
        refs.append(dest)
    bg = []
    for i, p in enumerate(others):
        dest = root / f"bg{i}.png"
        save_image(small_image(p, 360), dest)
        bg.append(dest)
    db = root / "db"
    with CopyIndex.create(db) as ci:
        results = ci.add_many([(r, {"source": str(r), "owner": "tests"}) for r in refs])
        assert all(not isinstance(r, TracemarkError) and r.duplicate_of is None for r in results)
    return db, refs, bg


def test_persistence_duplicates_and_bad_items(collection, tmp_path) -> None:
    db, refs, _ = collection
    with CopyIndex.open(db) as ci:
        assert len(ci.index) == len(refs)
        again = ci.add(refs[0])
        assert again.duplicate_of is not None  # same content: reported, not added
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        out = ci.add_many([(bad, {}), (refs[1], {})])
        assert isinstance(out[0], CorruptImageError)
        assert out[1].duplicate_of is not None
        assert len(ci.index) == len(refs)
        assert ci.stats()["count"] == len(refs)


def test_search_finds_edited_copies(collection) -> None:
    db, refs, _ = collection
    ci = CopyIndex.open(db, read_only=True)
    edits = [("random_crop", {"area": 0.35, "x": 0.3, "y": 0.6}), ("rotate", {"angle": 12.0}),
             ("hflip", {}), ("jpeg", {"quality": 40}), ("text_overlay", {"font_size": 0.15})]
    for i, ref in enumerate(refs[:5]):
        name, params = edits[i]
        query = attacks.apply_attack(load_image(ref), name, **params)
        matches = ci.search(query, k=3)
        assert matches, name
        assert Path(matches[0].source) == ref, name
        assert matches[0].inliers >= 15 and matches[0].decision, name
        if name == "random_crop":
            region = np.array(matches[0].region)
            h, w = load_image(ref).shape[:2]
            cw, ch = int(w * np.sqrt(0.35)), int(h * np.sqrt(0.35))
            x0, y0 = round(0.3 * (w - cw)), round(0.6 * (h - ch))
            assert np.allclose(region.min(0), [x0, y0], atol=6) and np.allclose(region.max(0), [x0 + cw, y0 + ch], atol=6)
        if name == "hflip":
            assert matches[0].flipped
    ci.close()


def test_calibration_keeps_unrelated_images_below_the_decision(collection, tmp_path) -> None:
    db, refs, bg = collection
    import shutil

    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    with CopyIndex.open(copy) as ci:
        summary = ci.calibrate(bg[:6])
        assert summary["null_samples"] == 3 and summary["background_rows"] > 0
        thr = ci.threshold_for_alpha(1e-3)
        assert thr is not None and thr > 0
        for b in bg[6:]:
            assert not any(m.decision for m in ci.search(b, k=3))
        hit = ci.search(attacks.apply_attack(load_image(refs[0]), "jpeg", quality=60), k=1)[0]
        assert hit.decision and hit.p_value is not None and hit.p_value < 1e-3
    # the calibration persists with the index
    ci2 = CopyIndex.open(copy, read_only=True)
    assert ci2.stats()["calibrated"]
    ci2.close()


def test_remove_and_reopen(collection, tmp_path) -> None:
    import shutil

    db, refs, _ = collection
    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    with CopyIndex.open(copy) as ci:
        target = ci.search(refs[2], k=1)[0].ref_id
        assert ci.remove(target)
    with CopyIndex.open(copy, read_only=True) as ci:
        assert all(m.ref_id != target for m in ci.search(refs[2], k=5))
        assert len(ci.index) == len(refs) - 1


def test_search_many_reports_bad_queries(collection, tmp_path) -> None:
    db, refs, _ = collection
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with CopyIndex.open(db, read_only=True) as ci:
        res = ci.search_many([empty, refs[3]], k=1)
    assert res[0].error is not None and res[0].error["type"] == "EmptyImageError"
    assert res[1].error is None and Path(res[1].matches[0].source) == refs[3]


def test_content_hash_and_config() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    assert content_hash(a) == content_hash(a.copy()) != content_hash(np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(TracemarkError):
        MatchConfig(candidates=0)


def test_null_model_says_which_p_values_its_sample_measures() -> None:
    """N null samples measure p-values down to 1/(1+N); below that the tail is
    extrapolated, and the summary warns when the decision's alpha lies there."""
    import numpy as np

    from tracemark.copydetect import NullModel, recommended_background

    rng = np.random.default_rng(0)
    small = NullModel(None, rng.normal(10, 2, 99))
    assert small.smallest_supported_p == 0.01
    assert "warning" in small.summary(alpha=1e-3)
    assert "warning" not in small.summary(alpha=0.05)
    big = NullModel(None, rng.normal(10, 2, 1999))
    assert big.smallest_supported_p == 1 / 2000
    assert "warning" not in big.summary(alpha=1e-3)
    assert recommended_background(1e-3) == 1998 and recommended_background(0.01) == 198
    assert NullModel(None, None).summary()["smallest_supported_p_value"] is None
