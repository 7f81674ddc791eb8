"""Registry-assisted watermark detection: copies whose geometry defeats blind detection
are warped into the frame of the registered work they copy and read there."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from tracemark import watermark
from tracemark.cli import main
from tracemark.copydetect import CopyIndex
from tracemark.copydetect.assist import align_to_reference, detect_assisted
from tracemark.imageio import save_image

KEY = b"tracemark-assisted-test-key-0001"


def _perspective(im: np.ndarray, s: float = 0.2, seed: int = 0) -> np.ndarray:
    h, w = im.shape[:2]
    rng = np.random.default_rng(seed)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = (src + rng.uniform(-s, s, (4, 2)) * np.array([w, h])).astype(np.float32)
    return cv2.warpPerspective(im, cv2.getPerspectiveTransform(src, dst), (w, h))


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> dict:
    photos = sorted(p.name for p in (corpus_dir / "photo").glob("*.jpg"))
    wm = watermark.get_method("lattice")
    root = tmp_path_factory.mktemp("assisted")
    works = [_work(corpus_dir / "photo" / photos[i]) for i in (3, 40, 80)]
    marked = [wm.embed(w, 100 + i, KEY) for i, w in enumerate(works)]
    with CopyIndex.create(root / "ix") as ci:
        for i, m in enumerate(marked):
            ci.add(m, source=f"work{i}")
        unmarked = _work(corpus_dir / "photo" / photos[120])
        ci.add(unmarked, source="unmarked")
    return {"root": root, "marked": marked, "unmarked": unmarked, "wm": wm}


def _work(path: Path) -> np.ndarray:
    """A corpus photo as a 512 x 512 work (resized like W-Bench's images)."""
    from tracemark.bench.watermark import prepare_image
    from tracemark.imageio import load_image

    return prepare_image(load_image(path), resize=512)


def _detect(wm: watermark.WatermarkMethod):  # type: ignore[no-untyped-def]
    return lambda im, a: wm.detect(im, KEY, alpha=a)


def test_strong_perspective_is_read_through_the_registry(collection: dict) -> None:
    wm = collection["wm"]
    with CopyIndex.open(collection["root"] / "ix", read_only=True) as ci:
        for i, m in enumerate(collection["marked"]):
            copy = _perspective(m, 0.2, seed=i)
            assert not wm.detect(copy, KEY).present  # blind detection misses it
            det = detect_assisted(_detect(wm), copy, lambda im: ci.search(im, k=3))
            assert det.present and det.payload_int == 100 + i, det.details
            assert det.details["route"] == "registry" and det.details["alignments"] >= 1
            assert det.p_value is not None and det.p_value < 1e-4


def test_registered_but_unmarked_images_stay_unmarked(collection: dict) -> None:
    wm = collection["wm"]
    other_key = watermark.get_method("lattice")
    with CopyIndex.open(collection["root"] / "ix", read_only=True) as ci:
        copy = _perspective(collection["unmarked"], 0.2, seed=9)
        det = detect_assisted(_detect(wm), copy, lambda im: ci.search(im, k=3))
        assert not det.present and det.payload is None
        marked_copy = _perspective(collection["marked"][0], 0.2, seed=3)
        wrong = detect_assisted(lambda im, a: other_key.detect(im, b"another key, 16+ bytes", alpha=a),
                                marked_copy, lambda im: ci.search(im, k=3))
        assert not wrong.present


def test_alignment_puts_the_reference_frame_back(collection: dict) -> None:
    m = collection["marked"][1]
    with CopyIndex.open(collection["root"] / "ix", read_only=True) as ci:
        match = ci.search(_perspective(m, 0.15, seed=4), k=1)[0]
    assert match.reference_size == [512, 512] and match.transform is not None
    aligned = align_to_reference(_perspective(m, 0.15, seed=4), match)
    assert aligned is not None and aligned.shape == m.shape
    centre = (slice(192, 320), slice(192, 320))
    diff = np.abs(aligned[centre].astype(int) - m[centre].astype(int)).mean()
    assert diff < 12, diff


def test_watermark_detect_with_a_store(collection: dict, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(KEY)
    copy = tmp_path / "copy.png"
    save_image(_perspective(collection["marked"][0], 0.2, seed=7), copy)
    runner = CliRunner()
    blind = runner.invoke(main, ["watermark", "detect", str(copy), "--key-file", str(key)])
    assert blind.exit_code == 10, blind.output
    res = runner.invoke(main, ["watermark", "detect", str(copy), "--key-file", str(key),
                               "--store", str(collection["root"] / "ix")])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["present"] and row["route"] == "registry"
    assert row["payload"] == "0x" + (100).to_bytes(8, "big").hex()
    missing = runner.invoke(main, ["watermark", "detect", str(copy), "--key-file", str(key),
                                   "--store", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no collection at" in missing.stderr
