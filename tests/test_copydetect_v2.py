"""Copy detection v2: visual words, the inverted file, and its life inside a CopyIndex."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tracemark import attacks
from tracemark.copydetect import CopyIndex, MatchConfig
from tracemark.copydetect.describe import REFERENCE_WORDS, reference_words
from tracemark.copydetect.index import IVF_FILE, WORDS_BLOB
from tracemark.copydetect.ivf import InvertedFile, VoteConfig, ids_fingerprint
from tracemark.errors import ConfigError
from tracemark.fingerprint import local
from tracemark.fingerprint.words import (
    N_WORDS,
    SIG_BITS,
    Words,
    WordsError,
    default_model,
    geometry_byte,
    quantize,
)

from .conftest import corpus_images, small_image


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    paths = corpus_images("photo")[3::7][:10] + corpus_images("art")[2::9][:4]
    return [small_image(p, 400) for p in paths]


@pytest.fixture(scope="module")
def ref_words(images) -> list[Words]:
    return [reference_words(local.extract(im, kind="sift", max_features=1000)) for im in images]


def _query_words(image: np.ndarray) -> tuple[Words, Words]:
    f = local.extract(image, kind="sift", max_features=1000)
    return quantize(f), quantize(local.mirrored(f))


# --- words -------------------------------------------------------------------------------


def test_words_shapes_dtypes_and_round_trip(images) -> None:
    f = local.extract(images[0], kind="sift", max_features=300)
    w = quantize(f)
    assert len(w) == len(f) > 100
    assert w.words.dtype == np.uint16 and w.signatures.dtype == np.uint32
    assert w.geometry.dtype == np.uint8 and w.xy.shape == (len(f), 2)
    # the vocabulary spreads one image's features over many words, signatures use all bits
    assert len(np.unique(w.words)) > 0.8 * len(w)
    bits = (w.signatures[:, None] >> np.arange(SIG_BITS, dtype=np.uint32)) & 1
    assert 0.25 < bits.mean() < 0.75
    back = Words.from_bytes(w.to_bytes())
    assert np.array_equal(back.words, w.words) and np.array_equal(back.signatures, w.signatures)
    assert np.array_equal(back.geometry, w.geometry) and (back.width, back.height) == (w.width, w.height)
    assert np.allclose(back.xy, w.xy, atol=0.5)
    assert len(w.to_bytes()) < 11 * len(w) + 20


def test_words_are_stable_under_mild_edits(images) -> None:
    """The same scene point gets the same word and a near signature after JPEG 70."""
    img = images[1]
    f = local.extract(img, kind="sift", max_features=400)
    g = local.extract(attacks.apply_attack(img, "jpeg", quality=70), kind="sift", max_features=400)
    wf, wg = quantize(f), quantize(g)
    d = np.linalg.norm(f.xy[:, None, :] - g.xy[None, :, :], axis=2)
    i, j = np.nonzero((d < 0.8) & (np.abs(f.scale[:, None] - g.scale[None, :]) < 0.5))
    assert len(i) > 50
    same = wf.words[i] == wg.words[j]
    assert same.mean() > 0.5
    ham = np.bitwise_count(wf.signatures[i][same] ^ wg.signatures[j][same])
    assert np.median(ham) <= 4


def test_words_bad_input() -> None:
    with pytest.raises(WordsError):
        Words.from_bytes(b"nope")
    w = quantize(local.extract(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8),
                               kind="sift", max_features=50))
    data = bytearray(w.to_bytes())
    with pytest.raises(WordsError):
        Words.from_bytes(bytes(data[:-3]))
    data[4] = 9
    with pytest.raises(WordsError):
        Words.from_bytes(bytes(data))
    with pytest.raises(WordsError):
        Words.from_bytes("text")  # type: ignore[arg-type]
    orb = local.extract(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8),
                        kind="orb", max_features=50)
    with pytest.raises(WordsError):
        quantize(orb)
    with pytest.raises(ConfigError):
        default_model().assign(np.zeros((3, 64), np.uint8))
    assert default_model().assign(np.zeros((0, 128), np.uint8))[0].shape == (0,)


def test_geometry_byte_bins() -> None:
    g = geometry_byte(np.array([0.0, 23.0, 359.0, -10.0]), np.array([1.0, 2.0, 1000.0, 0.1]))
    assert (g >> 4).tolist() == [0, 1, 15, 15]
    assert (g & 15).tolist() == [0, 2, 15, 0]


# --- the inverted file -------------------------------------------------------------------------


def test_inverted_file_ranks_the_reference_of_an_edited_copy_first(images, ref_words) -> None:
    ivf = InvertedFile.build(list(enumerate(ref_words)))
    assert len(ivf) == len(images) and ivf.n_postings == sum(len(w) for w in ref_words)
    edits = [("random_crop", {"area": 0.3, "x": 0.7, "y": 0.2}), ("rotate", {"angle": 30.0}),
             ("hflip", {}), ("resize", {"scale": 0.4}), ("insert", {"scale": 0.5})]
    for i, (name, params) in enumerate(edits):
        q = attacks.apply_attack(images[i], name, **params)
        qw, qm = _query_words(q)
        hits = ivf.search(qw, mirror=qm, top=5)
        assert hits and hits[0][0] == i, (name, hits)
        if len(hits) > 1:
            assert hits[0][1] > 2 * hits[1][1], (name, hits)
    # without the mirrored features a flipped copy loses its geometric agreement
    qw, _ = _query_words(attacks.apply_attack(images[2], "hflip"))
    flipped_only = dict(ivf.search(qw, top=len(images)))
    assert flipped_only.get(2, 0.0) < dict(ivf.search(qw, mirror=_query_words(
        attacks.apply_attack(images[2], "hflip"))[1], top=3)).get(2, 0.0)


def test_inverted_file_add_remove_merge_save_load(images, ref_words, tmp_path) -> None:
    ivf = InvertedFile.build([(10 + i, w) for i, w in enumerate(ref_words[:6])])
    for i, w in enumerate(ref_words[6:], start=6):
        ivf.add(10 + i, w)  # pending part, searched at once
    qw, qm = _query_words(attacks.apply_attack(images[8], "jpeg", quality=50))
    assert ivf.search(qw, mirror=qm, top=1)[0][0] == 18
    ivf.remove(18)
    assert all(r != 18 for r, _ in ivf.search(qw, mirror=qm, top=20))
    q3, m3 = _query_words(images[3])
    before = ivf.search(q3, mirror=m3, top=5)
    ivf.merge()
    assert ivf.search(q3, mirror=m3, top=5) == before
    path = tmp_path / "w.ivf"
    ivf.save(path)
    loaded = InvertedFile.load(path, ids_fingerprint(ivf.ref_ids))
    assert loaded is not None and loaded.n_postings == ivf.n_postings
    assert loaded.search(q3, mirror=m3, top=5) == before
    assert InvertedFile.load(path, ids_fingerprint(np.array([1, 2]))) is None  # other ids
    path.write_bytes(path.read_bytes()[:1000])
    assert InvertedFile.load(path, ids_fingerprint(ivf.ref_ids)) is None  # truncated
    assert InvertedFile.load(tmp_path / "missing.ivf", "x") is None
    with pytest.raises(ConfigError):
        ivf.add(-1, ref_words[0])
    with pytest.raises(ConfigError):
        VoteConfig(max_distance=40)
    assert InvertedFile().search(qw) == []


def test_inverted_file_cost_touches_only_the_query_words(ref_words) -> None:
    ivf = InvertedFile.build(list(enumerate(ref_words)))
    lengths = np.diff(ivf._main.offsets)
    assert lengths.shape == (N_WORDS,) and int(lengths.sum()) == ivf.n_postings
    assert ivf.nbytes() < N_WORDS * 8 + 9 * ivf.n_postings + 64


# --- inside a CopyIndex --------------------------------------------------------------------------


def _make_index(path: Path, images: list[np.ndarray]) -> None:
    with CopyIndex.create(path) as ci:
        for i, im in enumerate(images):
            ci.add(im, source=f"ref{i}")


def _strip_words(path: Path) -> None:
    """Make the index look like one written before v2 (no words blobs, no inverted file)."""
    con = sqlite3.connect(path / "index.sqlite")
    con.execute("DELETE FROM blobs WHERE name = ?", (WORDS_BLOB,))
    con.commit()
    con.close()
    (path / "vectors" / IVF_FILE).unlink(missing_ok=True)


def test_index_posts_words_and_v2_finds_what_v1_misses(images, tmp_path) -> None:
    db = tmp_path / "db"
    _make_index(db, images[:8])
    with CopyIndex.open(db, read_only=True) as ci:
        assert len(ci.index.blob_ids(WORDS_BLOB)) == 8
        words = Words.from_bytes(ci.index.blob(1, WORDS_BLOB))
        assert len(words) == min(REFERENCE_WORDS, len(words))
        q = attacks.apply_attack(images[5], "insert", scale=0.35)
        v2 = ci.search(q, k=3)
        assert v2 and v2[0].source == "ref5" and v2[0].decision
    assert (db / "vectors" / IVF_FILE).is_file() is False  # read-only: nothing written
    with CopyIndex.open(db) as ci:
        ci.search(images[0], k=1)
    assert (db / "vectors" / IVF_FILE).is_file()  # built once, cached for the next open


def test_previous_version_index_is_migrated(images, tmp_path) -> None:
    db = tmp_path / "old"
    _make_index(db, images[:6])
    _strip_words(db)
    q = attacks.apply_attack(images[4], "rotate", angle=20.0)
    with CopyIndex.open(db, read_only=True) as ci:  # read-only: migrated in memory
        assert ci.search(q, k=1)[0].source == "ref4"
        assert len(ci.index.blob_ids(WORDS_BLOB)) == 0
    with CopyIndex.open(db) as ci:  # writable: migrated in place
        assert ci.search(q, k=1)[0].source == "ref4"
    with CopyIndex.open(db, read_only=True) as ci:
        assert len(ci.index.blob_ids(WORDS_BLOB)) == 6
        assert len(ci.inverted_file()) == 6


def test_rollback_and_refresh_keep_the_inverted_file_true(images, tmp_path) -> None:
    db = tmp_path / "db"
    _make_index(db, images[:4])
    reader = CopyIndex.open(db, read_only=True)
    assert len(reader.inverted_file()) == 4
    ci = CopyIndex.open(db)
    ci.inverted_file()
    ci.add(images[9], source="late")
    assert ci.search(attacks.apply_attack(images[9], "jpeg", quality=60), k=1)[0].source == "late"
    ci.rollback()
    hits = ci.search(attacks.apply_attack(images[9], "jpeg", quality=60), k=1)
    assert not hits or hits[0].source != "late"
    ci.add(images[7], source="kept")
    ci.commit()
    assert ci.remove(1)
    ci.commit()
    reader.refresh()
    ivf = reader.inverted_file()
    assert 1 not in ivf.ref_ids.tolist() and len(ivf) == 4
    assert reader.search(images[7], k=1)[0].source == "kept"
    reader.close()
    ci.close()
    with CopyIndex.open(db, read_only=True) as again:  # the cache saved at close holds the same
        assert sorted(again.inverted_file().ref_ids.tolist()) == sorted(ivf.ref_ids.tolist())


def test_retrieval_v1_still_runs(images, tmp_path) -> None:
    db = tmp_path / "db"
    _make_index(db, images[:4])
    with CopyIndex.open(db, read_only=True, config=MatchConfig(retrieval="v1")) as ci:
        assert ci.search(attacks.apply_attack(images[2], "jpeg", quality=50), k=1)[0].source == "ref2"
        assert ci._ivf is None  # v1 never loads the inverted file
    with pytest.raises(ConfigError):
        MatchConfig(retrieval="v3")


def test_global_index_none_keeps_vlad_rows_out_of_memory(images, tmp_path) -> None:
    from tracemark.index.errors import IndexInputError

    db = tmp_path / "big"
    with CopyIndex.create(db, global_index="none") as ci:
        for i, im in enumerate(images[:5]):
            ci.add(im, source=f"ref{i}")
        stats = ci.index.stats()["vector_sets"]["vlad"]
        assert stats["index"] == "none" and stats["rows"] == 5 * 6 and stats["file_bytes"] == 0
    assert not (db / "vectors" / "vlad.faiss").exists()
    with CopyIndex.open(db) as ci:
        hit = ci.search(attacks.apply_attack(images[3], "rotate", angle=15.0), k=1)[0]
        assert hit.source == "ref3" and hit.decision and hit.similarity > 0.2  # rows read per candidate
        with pytest.raises(IndexInputError):
            ci.index.search("vlad", np.zeros(256, np.float32), 3)
        assert ci.remove(2)
        assert ci.index.stats()["vector_sets"]["vlad"]["rows"] == 4 * 6
    with CopyIndex.open(db, read_only=True, config=MatchConfig(retrieval="v1")) as ci, \
            pytest.raises(ConfigError):
        ci.search(images[0], k=1)
    with pytest.raises(ConfigError):
        CopyIndex.create(tmp_path / "x", global_index="ivfpq")


def test_calibration_of_a_previous_version_asks_for_recalibration(images, tmp_path) -> None:
    import sqlite3

    from tracemark.copydetect.decide import NullModel
    from tracemark.copydetect.index import CALIBRATION_DOC

    db = tmp_path / "db"
    _make_index(db, images[:6])
    background = [attacks.apply_attack(im, "jpeg", quality=80) for im in images[8:14]]
    with CopyIndex.open(db, config=MatchConfig(retrieval="v1")) as ci:
        ci.calibrate(background)
    # what a version before v2 wrote: a calibration file beside a format-1 index, one null
    # sample (v1's); the index then held no calibration document
    with CopyIndex.open(db, read_only=True) as ci:
        model = NullModel.decode(ci.index.document(CALIBRATION_DOC), "v1")
    np.savez(db / "calibration.npz", version=np.array(1), background=model.background,
             null=model.null)
    with sqlite3.connect(db / "index.sqlite") as conn:
        conn.execute("DELETE FROM documents")
    with CopyIndex.open(db, read_only=True) as ci:  # v2: uncalibrated, and says why
        assert not ci.decision_rule()["calibrated"]
        assert "tracemark index calibrate" in ci.decision_rule()["recalibrate"]
        assert "recalibrate" in ci.stats()
        hit = ci.search(attacks.apply_attack(images[1], "jpeg", quality=50), k=1)[0]
        assert hit.p_value is None and hit.decision  # decided by inliers / PDQ
    with CopyIndex.open(db, read_only=True, config=MatchConfig(retrieval="v1")) as ci:
        assert ci.decision_rule()["calibrated"]  # the v1 sample still serves v1
    with CopyIndex.open(db) as ci:
        ci.calibrate(background)  # v2, same background: v1's sample is kept
        assert ci.decision_rule()["calibrated"] and "recalibrate" not in ci.decision_rule()
        assert NullModel.versions_of(ci.index.document(CALIBRATION_DOC)) == ["v1", "v2"]
    with CopyIndex.open(db) as ci:
        ci.calibrate(background[:4])  # another background: the v1 sample is dropped
        assert NullModel.versions_of(ci.index.document(CALIBRATION_DOC)) == ["v2"]


def test_uncalibrated_v2_decides_blurred_thumbnails_by_pdq(images, tmp_path) -> None:
    """A blurred 96 px thumbnail keeps too few local features to verify, but its PDQ hash:
    v2 decides it (PDQ distance <= 31), v1 (inliers only) does not."""
    db = tmp_path / "db"
    _make_index(db, images[:6])
    for i in (0, 2, 4):
        q = attacks.apply_attack(attacks.apply_attack(images[i], "gaussian_blur", radius=6.0),
                                 "thumbnail", long_side=96)
        with CopyIndex.open(db, read_only=True) as ci:
            hit = ci.search(q, k=1)[0]
            assert hit.source == f"ref{i}" and hit.inliers < 12
            assert hit.pdq_distance <= 31 and hit.decision
        with CopyIndex.open(db, read_only=True, config=MatchConfig(retrieval="v1")) as ci:
            hits = ci.search(q, k=1)
            assert not hits or not hits[0].decision
