"""The batch jobs' engine-independent parts, run in this process (no Ray): the local
executor, ingest's batching and skipping, and fsspec sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import corpus_images, small_image
from tracemark.batch import LocalExecutor, expand_url, ingest, load_source, search_sources
from tracemark.copydetect import CopyIndex
from tracemark.errors import ConfigError, CorruptImageError, ImageSourceError
from tracemark.imageio import load_image, save_image


@pytest.fixture
def images(tmp_path: Path, corpus_dir: Path) -> list[str]:
    folder = tmp_path / "images"
    folder.mkdir()
    out = []
    for i, p in enumerate(corpus_images(n=6)):
        save_image(small_image(p, 128), folder / f"im{i}.png")
        out.append(str(folder / f"im{i}.png"))
    return out


def test_ingest_matches_add_and_skips_what_is_registered(images: list[str],
                                                         tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows: list[dict] = []
    with CopyIndex.create(tmp_path / "a") as a, CopyIndex.create(tmp_path / "b") as b:
        counts = ingest(a, [*images[:4], str(bad), images[0]], LocalExecutor(),
                        on_item=rows.append, batch_size=2)
        assert (counts.added, counts.duplicates, counts.failed) == (4, 1, 1)
        assert [r["error"]["type"] for r in rows if r["error"]] == ["CorruptImageError"]
        for p in images[:4]:
            b.add(p)
        for ref_a, ref_b in zip(a.index.list(), b.index.list(), strict=True):
            assert ref_a.content_hash == ref_b.content_hash and ref_a.source == ref_b.source
            np.testing.assert_array_equal(a.index.vectors(ref_a.id, "pdq"),
                                          b.index.vectors(ref_b.id, "pdq"))
        again: list[dict] = []
        counts = ingest(a, images, LocalExecutor(), on_item=again.append)
        assert (counts.added, counts.registered) == (2, 4)
        registered = {r["source"]: r for r in again if r["duplicate_of"] is not None}
        assert set(registered) == set(images[:4])
        assert all(r["id"] == r["duplicate_of"] for r in registered.values())
    with CopyIndex.open(tmp_path / "a", read_only=True) as a:  # committed at the end
        assert len(a) == 6


def test_rows_of_added_images_come_only_after_their_commit(images: list[str],
                                                           tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    store = tmp_path / "a"
    with CopyIndex.create(store) as ci:

        def on_item(row: dict) -> None:  # what a reader sees when a row is printed
            with CopyIndex.open(store, read_only=True) as ro:
                seen.append((row["source"], len(ro)))

        ingest(ci, images, LocalExecutor(), on_item=on_item, batch_size=2, commit_interval=0)
    assert [s for s, _ in seen] == images
    assert all(n >= i + 1 for i, (_, n) in enumerate(seen))


def test_search_sources_matches_search(images: list[str], tmp_path: Path) -> None:
    with CopyIndex.create(tmp_path / "a") as ci:
        for p in images:
            ci.add(p)
        results = list(search_sources(ci, [*images, str(tmp_path / "nope.png")],
                                      LocalExecutor(), k=3))
        for res, path in zip(results, images, strict=False):
            direct = ci.search(path, k=3)
            assert [(m.ref_id, m.inliers) for m in res.matches] == \
                [(m.ref_id, m.inliers) for m in direct]
        assert results[-1].error["type"] == "ImageSourceError"


def test_file_urls_are_expanded_and_read(images: list[str], tmp_path: Path) -> None:
    folder = Path(images[0]).parent
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.png").write_bytes(b"")
    sources, skipped = expand_url(folder.as_uri())
    assert sources == [Path(p).as_uri() for p in images]
    assert {Path(s).name for s, _ in skipped} == {"notes.txt", ".hidden.png"}
    np.testing.assert_array_equal(load_source(sources[0]), load_image(images[0]))
    assert expand_url(sources[0]) == ([sources[0]], [])
    with pytest.raises(ImageSourceError):
        load_source((tmp_path / "missing.png").as_uri())
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(CorruptImageError):
        load_source((tmp_path / "bad.png").as_uri())
    with pytest.raises(ConfigError):
        expand_url("nosuchprotocol://x/y")
