"""Copy detection v2 under abuse: a broken or stale inverted-file cache, unreadable rows,
crashes, two handles, odd queries, bad settings and calibration files."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracemark import attacks
from tracemark.copydetect import CopyIndex, MatchConfig
from tracemark.copydetect.describe import describe_query
from tracemark.copydetect.index import CALIBRATION_FILE, IVF_FILE, WORDS_BLOB
from tracemark.copydetect.ivf import InvertedFile, ids_fingerprint
from tracemark.errors import ConfigError, ImageTooSmallError
from tracemark.fingerprint.words import Words

from .conftest import corpus_images, small_image

N_REFS = 5



@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [small_image(p, 300) for p in corpus_images("photo")[1::5][:N_REFS + 2]]


@pytest.fixture(scope="module")
def built(images, tmp_path_factory) -> Path:
    """An index of the first N_REFS images (ids 1..N_REFS, sources ref0...), cache written."""
    db = tmp_path_factory.mktemp("edge") / "db"
    with CopyIndex.create(db) as ci:
        for i, im in enumerate(images[:N_REFS]):
            ci.add(im, source=f"ref{i}")
        ci.commit()
        ci.search(images[0], k=1)  # builds and saves the inverted file
    assert (db / "vectors" / IVF_FILE).is_file()
    return db


@pytest.fixture
def db(built, tmp_path) -> Path:
    """A private copy of the built index."""
    return Path(shutil.copytree(built, tmp_path / "db"))


def _copy_of(image: np.ndarray) -> np.ndarray:
    return attacks.apply_attack(image, "jpeg", quality=50)


def _voted(ci: CopyIndex, image: np.ndarray) -> list[int]:
    """Reference ids the inverted file votes for (retrieval only, no verification)."""
    q = describe_query(image)
    return [rid for rid, _ in ci.inverted_file().search(q.words, mirror=q.words_mirror)]


def _sql(db: Path, statement: str, *args: object) -> None:
    con = sqlite3.connect(db / "index.sqlite")
    con.execute(statement, args)
    con.commit()
    con.close()


# --- the inverted-file cache never holds what the database does not ------------------------


def test_cache_never_saved_with_uncommitted_references(db, images) -> None:
    """A search during an uncommitted add must not write the cache: after a rollback the
    same id is given to another image, and a cache naming the same ids would be trusted."""
    with CopyIndex.open(db) as ci:
        ci.add(images[N_REFS], source="rolled back")  # id N_REFS + 1, uncommitted
        assert ci.search(_copy_of(images[N_REFS]), k=1)[0].source == "rolled back"
        ci.rollback()
        assert ci.add(images[N_REFS + 1], source="kept").id == N_REFS + 1  # the id again
    with CopyIndex.open(db, read_only=True) as ci:
        assert _voted(ci, _copy_of(images[N_REFS + 1]))[0] == N_REFS + 1
        assert N_REFS + 1 not in _voted(ci, _copy_of(images[N_REFS]))[:1]


def test_process_killed_with_uncommitted_add_leaves_no_stale_cache(db, images, tmp_path) -> None:
    """A process that searched during an uncommitted add and died (no close, no rollback):
    the next writer reuses the id for another image without searching; a reader then
    must retrieve that image, not the dead process's."""
    for i in (N_REFS, N_REFS + 1):
        cv2.imwrite(str(tmp_path / f"q{i}.png"), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
    script = textwrap.dedent(f"""
        import os
        from tracemark.copydetect import CopyIndex
        ci = CopyIndex.open({str(db)!r})
        ci.add({str(tmp_path / f"q{N_REFS}.png")!r}, source="died")
        ci.search({str(tmp_path / f"q{N_REFS}.png")!r}, k=1)
        os._exit(0)  # killed: nothing committed, nothing closed
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    with CopyIndex.open(db) as ci:  # adds without loading the inverted file
        assert len(ci) == N_REFS
        assert ci.add(images[N_REFS + 1], source="kept").id == N_REFS + 1
    with CopyIndex.open(db, read_only=True) as ci:
        assert _voted(ci, _copy_of(images[N_REFS + 1]))[0] == N_REFS + 1
        assert N_REFS + 1 not in _voted(ci, _copy_of(images[N_REFS]))[:1]  # the dead one's
        assert ci.search(_copy_of(images[N_REFS + 1]), k=1)[0].source == "kept"


def _damaged_caches(good: bytes) -> dict[str, bytes]:
    head = struct.Struct("<8sQQQ")
    magic, n_refs, n_post, n_meta = head.unpack_from(good)
    body = good[head.size + n_meta:]
    garbled = bytearray(good)
    garbled[-9 * n_post:-5 * n_post] = b"\xff" * (4 * n_post)  # postings' reference ids
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "one_byte_short": good[:-1],
        "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "huge_meta_length": head.pack(magic, n_refs, n_post, 2**62) + good[head.size:],
        "meta_not_an_object": head.pack(magic, n_refs, n_post, 2) + b"[]" + body,
        "huge_reference_count": head.pack(magic, 2**40, n_post, n_meta) + good[head.size:],
        "huge_posting_count": head.pack(magic, n_refs, 2**40, n_meta) + good[head.size:],
        "garbled_reference_ids": bytes(garbled),  # same size
    }


@pytest.mark.parametrize("damage", list(_damaged_caches(b"\0" * 64 + b"\0" * 10**6)))
def test_damaged_cache_file_is_rebuilt_never_trusted(db, images, damage) -> None:
    path = db / "vectors" / IVF_FILE
    path.write_bytes(_damaged_caches(path.read_bytes())[damage])
    q = _copy_of(images[2])
    with CopyIndex.open(db, read_only=True) as ci:
        assert ci.search(q, k=1)[0].source == "ref2"
        assert sorted(ci.inverted_file().ref_ids.tolist()) == list(range(1, N_REFS + 1))
    with CopyIndex.open(db) as ci:
        assert ci.search(q, k=1)[0].source == "ref2"
    rebuilt = InvertedFile.load(path, ids_fingerprint(np.arange(1, N_REFS + 1)))
    assert rebuilt is not None and len(rebuilt) == N_REFS


def test_unwritable_cache_does_not_fail_close(db, images) -> None:
    """The cache is a cache: when it cannot be written (a folder in its place here), the
    search and the close still succeed and the writes are committed."""
    path = db / "vectors" / IVF_FILE
    path.unlink()
    path.mkdir()
    ci = CopyIndex.open(db)
    ci.add(images[N_REFS], source="new")
    assert ci.search(_copy_of(images[N_REFS]), k=1)[0].source == "new"
    ci.close()
    with CopyIndex.open(db, read_only=True) as again:
        assert len(again) == N_REFS + 1


# --- unreadable rows ------------------------------------------------------------------------


@pytest.mark.parametrize("read_only", [True, False])
def test_unreadable_words_blob_is_derived_again(db, images, read_only) -> None:
    """One damaged ``words`` row must not stop every search: the words are derived again
    from the reference's SIFT features (and written back when the index is writable)."""
    (db / "vectors" / IVF_FILE).unlink()
    _sql(db, "UPDATE blobs SET data = ? WHERE ref_id = 3 AND name = ?", b"not words", WORDS_BLOB)
    with CopyIndex.open(db, read_only=read_only) as ci:
        assert _voted(ci, _copy_of(images[2]))[0] == 3
        assert ci.search(_copy_of(images[2]), k=1)[0].source == "ref2"
        assert ci.search(_copy_of(images[1]), k=1)[0].source == "ref1"
    with CopyIndex.open(db, read_only=True) as ci:
        blob = ci.index.blob(3, WORDS_BLOB)
    if read_only:
        assert blob == b"not words"  # a reader writes nothing
    else:
        assert len(Words.from_bytes(blob)) > 0


def test_unreadable_local_blob_is_skipped_and_reported(db, images) -> None:
    """One damaged reference must not take every query down: searches skip it, and the
    handle reports it with the command that removes it."""
    _sql(db, "UPDATE blobs SET data = ? WHERE ref_id = 3 AND name = 'local'", b"junk")
    with CopyIndex.open(db, read_only=True) as ci:
        hits = ci.search(_copy_of(images[2]), k=3)  # the copy of the damaged reference
        assert all(m.ref_id != 3 for m in hits)
        assert ci.search(_copy_of(images[1]), k=1)[0].source == "ref1"  # others still found
        damaged = ci.damaged_references()
        assert list(damaged) == [3] and "tracemark index remove 3" in damaged[3]
        assert "3" in ci.stats()["damaged_references"]


# --- two handles ------------------------------------------------------------------------------


def test_reader_searches_while_a_writer_removes(db, images) -> None:
    """A reader that has not refreshed yet still holds a removed reference in memory: its
    searches skip it instead of failing on the missing row."""
    with CopyIndex.open(db, read_only=True) as reader:
        assert reader.search(_copy_of(images[1]), k=1)[0].source == "ref1"
        with CopyIndex.open(db) as writer:
            assert writer.remove(2)
            writer.commit()
            hits = reader.search(_copy_of(images[1]), k=3)  # before refresh()
            assert all(m.ref_id != 2 for m in hits)
            reader.refresh()
            hits = reader.search(_copy_of(images[1]), k=3)
            assert all(m.ref_id != 2 for m in hits)


# --- odd queries --------------------------------------------------------------------------------


def _odd_queries(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    ref = images[1]
    return {
        "5x5": np.zeros((5, 5, 3), np.uint8),
        "16x16_noise": np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "flat": np.full((300, 300, 3), 128, np.uint8),
        "gray": cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY),
        "rgba": np.dstack([ref, np.full(ref.shape[:2], 255, np.uint8)]),
        "12000x300": cv2.resize(ref, (300, 12000)),
        "300x12000": cv2.resize(ref, (12000, 300)),
    }


def test_odd_queries_give_results_not_crashes(built, images) -> None:
    with CopyIndex.open(built, read_only=True) as ci:
        with pytest.raises(ImageTooSmallError):
            ci.search(np.zeros((1, 1, 3), np.uint8))
        for name, q in _odd_queries(images).items():
            hits = ci.search(q, k=3)
            assert isinstance(hits, list), name
            if name in ("gray", "rgba"):
                assert hits[0].source == "ref1" and hits[0].decision, name
            if name in ("5x5", "16x16_noise", "flat"):
                assert not any(m.decision for m in hits), name


# --- settings and calibration files --------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"candidates": 2.5}, {"candidates": "5"}, {"candidates": True}, {"global_candidates": 1.5},
    {"pdq_max_distance": -1}, {"pdq_max_distance": 257}, {"pdq_max_distance": "x"},
    {"alpha": "0.1"}, {"alpha": float("nan")}, {"background_k": 0}, {"sure_inliers": 2.0},
    {"early_stop": "no"}, {"max_features": 5}, {"min_inliers": None}, {"candidates": 0},
])
def test_match_config_rejects_bad_values(bad) -> None:
    with pytest.raises(ConfigError) as err:
        MatchConfig(**bad)
    assert next(iter(bad)) in err.value.message


def _bad_calibrations(tmp: Path) -> dict[str, bytes]:
    def npz(**arrays: object) -> bytes:
        np.savez(tmp / "c.npz", **arrays)
        return (tmp / "c.npz").read_bytes()

    bg = np.zeros((3, 256), np.float32)
    return {
        "empty": b"",
        "garbage": b"not an npz at all",
        "version_array": npz(version=np.array([1, 2]), background=bg, null_v2=np.ones(3)),
        "background_of_another_width": npz(version=np.array(2), background=np.zeros((3, 7), np.float32),
                                          null_v2=np.ones(3)),
        "non_finite_null": npz(version=np.array(2), background=bg, null_v2=np.array([np.nan, 1.0])),
        "null_of_two_dimensions": npz(version=np.array(2), background=bg, null_v2=np.ones((2, 2))),
    }


@pytest.mark.parametrize("kind", ["empty", "garbage", "version_array", "background_of_another_width",
                                  "non_finite_null", "null_of_two_dimensions"])
def test_unreadable_calibration_is_a_config_error_that_says_what_to_do(db, tmp_path, kind) -> None:
    (db / CALIBRATION_FILE).write_bytes(_bad_calibrations(tmp_path)[kind])
    with pytest.raises(ConfigError) as err:
        CopyIndex.open(db, read_only=True)
    assert CALIBRATION_FILE in err.value.message and "tracemark index calibrate" in err.value.message
    assert "allow_pickle" not in err.value.message


def test_format_1_calibration_still_decides_v1_and_asks_v2_to_recalibrate(db) -> None:
    rng = np.random.default_rng(0)
    np.savez(db / CALIBRATION_FILE, version=np.array(1),
             background=rng.standard_normal((6, 256)).astype(np.float32), null=rng.normal(5, 2, 50))
    with CopyIndex.open(db, read_only=True) as ci:
        assert not ci.stats()["calibrated"] and "recalibrate" in ci.stats()
    with CopyIndex.open(db, read_only=True, config=MatchConfig(retrieval="v1")) as ci:
        assert ci.stats()["calibrated"] and json.dumps(ci.decision_rule())
