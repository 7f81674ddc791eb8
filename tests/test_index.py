"""The persistent reference index: format, persistence, crash recovery, search exactness."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracemark.errors import ConfigError, TracemarkError
from tracemark.index import (
    FORMAT_VERSION,
    Hit,
    Index,
    IndexClosedError,
    IndexExistsError,
    IndexFormatError,
    IndexInputError,
    IndexLockedError,
    IndexNotFoundError,
    IndexReadOnlyError,
    NewReference,
    ReferenceNotFoundError,
    UnknownVectorSetError,
    VectorSpec,
)

FIXTURE = Path(__file__).parent / "data" / "index_v1"
SPECS = {"pdq": VectorSpec("binary", 256), "emb": VectorSpec("float", 8)}


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _bits(rng: np.random.Generator, n: int, nbytes: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)


def _refs(rng: np.random.Generator, n: int, *, start: int = 0) -> list[NewReference]:
    return [
        NewReference(
            content_hash=f"h{start + i}",
            vectors={"pdq": _bits(rng, 1 + i % 3), "emb": _unit(rng, 1, 8)[0]},
            source=f"img{start + i}.jpg",
            blobs={"kp": f"blob{start + i}".encode()},
        )
        for i in range(n)
    ]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, list[NewReference]]:
    """A committed index of 20 references (1 to 3 PDQ rows each, one float row, one blob)."""
    items = _refs(np.random.default_rng(1), 20)
    path = tmp_path / "idx"
    with Index.create(path, vector_specs=SPECS) as index:
        index.add_many(items)
    return path, items


def _rows(path: Path, name: str) -> int:
    with Index.open(path, read_only=True) as index:
        return index.stats()["vector_sets"][name]["rows"]


# --- the committed fixture ------------------------------------------------------------


def test_committed_v2_fixture_opens_with_its_content(tmp_path: Path) -> None:
    copy = tmp_path / "index_v2"
    shutil.copytree(FIXTURE.with_name("index_v2"), copy)
    with Index.open(copy, read_only=True) as index:
        assert index.repaired == ()
        assert [r.content_hash for r in index.list()] == ["sha256:" + c * 64 for c in "abc"]
        assert index.vector_specs["ivf"] == VectorSpec("float", 8, index="ivf", ivf_nprobe=8)
        assert index.document("copydetect.calibration") == b"PK\x03\x04 not a real archive"
        assert [(rid, op) for _, rid, op in index.changes(0)] == [
            (1, "add"), (2, "add"), (3, "add"), (4, "add"), (4, "remove")]
        assert index.stats()["vector_store"] == "faiss" and len(index.uid) == 32
        pdq = np.arange(128, dtype=np.uint8).reshape(4, 32)
        assert index.search("pdq", pdq[2], k=1)[0][0] == Hit(ref_id=2, score=0.0, row=1)
        assert index.stats()["vector_sets"]["ivf"]["rows"] == 0
    meta = dict(sqlite3.connect(copy / "index.sqlite").execute("SELECT key, value FROM meta"))
    assert meta["format_version"] == "2" and meta["vector_store"] == "faiss"


def test_committed_v1_fixture_opens_with_its_content(tmp_path: Path) -> None:
    copy = tmp_path / "index_v1"
    shutil.copytree(FIXTURE, copy)
    with Index.open(copy, read_only=True) as index:
        assert index.repaired == ()  # the committed FAISS files agree with SQLite
        assert len(index) == 3
        assert index.vector_specs == {
            "pdq": VectorSpec("binary", 256),
            "desc": VectorSpec("float", 4),
        }
        one, two, three = index.list()
        assert (one.id, one.content_hash, one.source, one.owner, one.license, one.notes) == (
            1,
            "sha256:" + "a" * 64,
            "photos/one.jpg",
            "Ada",
            "CC-BY-4.0",
            "first",
        )
        assert (two.source, two.owner, two.license, two.notes) == (
            "photos/two.jpg",
            "Grace",
            None,
            None,
        )
        assert (three.source, three.notes) == (None, "no float descriptor")
        added = datetime.fromisoformat(one.added_at)
        assert added.utcoffset() == timedelta(0)
        pdq = np.arange(128, dtype=np.uint8).reshape(4, 32)
        np.testing.assert_array_equal(index.vectors(1, "pdq"), pdq[:1])
        np.testing.assert_array_equal(index.vectors(2, "pdq"), pdq[1:3])
        np.testing.assert_array_equal(index.vectors(2, "desc"), np.float32([[0, 0.6, 0.8, 0]]))
        assert index.vectors(3, "desc") is None
        assert index.blob(2, "local") == b"\x00\x01keypoints\xff"
        assert index.blob(1, "local") is None
        assert index.search("pdq", pdq[2], k=3)[0][0] == Hit(ref_id=2, score=0.0, row=1)
        hits = index.search("desc", np.array([0, 0.8, 0.6, 0], np.float32), k=5)[0]
        assert [h.ref_id for h in hits] == [2, 1]
        assert hits[0].score == pytest.approx(0.96)
    meta = dict(sqlite3.connect(copy / "index.sqlite").execute("SELECT key, value FROM meta"))
    assert meta["format"] == "tracemark-index"
    assert meta["format_version"] == "1"  # a read-only open changes nothing
    assert meta["created_by"].startswith("tracemark ")
    # a writable open migrates it to the current format (additive: documents, changes)
    with Index.open(copy) as index:
        assert len(index) == 3 and index.document("calibration") is None
        assert [op for _, _, op in index.changes(0)] == []
        index.put_document("calibration", b"x")
        assert index.remove(3)
        assert [(rid, op) for _, rid, op in index.changes(0)] == [(3, "remove")]
    meta = dict(sqlite3.connect(copy / "index.sqlite").execute("SELECT key, value FROM meta"))
    assert meta["format_version"] == str(FORMAT_VERSION) == "2" and len(meta["uid"]) == 32
    with Index.open(copy, read_only=True) as index:
        assert index.document("calibration") == b"x" and len(index) == 2


def test_committed_fixture_opens_writable_and_accepts_adds(tmp_path: Path) -> None:
    copy = tmp_path / "index_v1"
    shutil.copytree(FIXTURE, copy)
    with Index.open(copy) as index:
        assert (
            index.add(content_hash="new", vectors={"desc": np.eye(4, dtype=np.float32)[3]}).id == 4
        )
    with Index.open(copy, read_only=True) as index:
        assert [h.ref_id for h in index.search("desc", np.eye(4, dtype=np.float32)[3], k=1)[0]] in (
            [3],
            [4],
        )
        assert len(index) == 4


# --- create / open errors --------------------------------------------------------------


def test_create_refuses_a_non_empty_path_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(IndexExistsError):
        Index.create(tmp_path / "full", vector_specs=SPECS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        Index.create(tmp_path / "file", vector_specs=SPECS)
    (tmp_path / "empty").mkdir()
    Index.create(tmp_path / "empty", vector_specs=SPECS).close()
    with pytest.raises(IndexExistsError):  # now it holds an index
        Index.create(tmp_path / "empty", vector_specs=SPECS)


def test_create_validates_specs_before_touching_disk(tmp_path: Path) -> None:
    for bad in (
        {"PDQ": VectorSpec("binary", 64)},
        {"a/b": VectorSpec("binary", 64)},
        {"x": (1, 2)},
    ):
        with pytest.raises(ConfigError):
            Index.create(tmp_path / "idx", vector_specs=bad)  # type: ignore[arg-type]
        assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "binary", "dim": 255},
        {"kind": "binary", "dim": 0},
        {"kind": "float", "dim": -1},
        {"kind": "float", "dim": 8.0},
        {"kind": "float", "dim": 8, "metric": "hamming"},
        {"kind": "text", "dim": 8},
        {"kind": "float", "dim": 8, "index": "ivfpq"},
        {"kind": "float", "dim": 12, "index": "ivf"},
        {"kind": "float", "dim": 8, "index": "hnsw", "hnsw_m": 1},
    ],
)
def test_vector_spec_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        VectorSpec(**kwargs)


def test_open_refuses_missing_foreign_and_corrupt_paths(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        Index.open(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        Index.open(tmp_path / "nope", read_only=True)
    (tmp_path / "plain").mkdir()
    with pytest.raises(IndexFormatError, match="no index.sqlite"):
        Index.open(tmp_path / "plain")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "index.sqlite").write_bytes(b"not a database at all" * 100)
    for read_only in (False, True):
        with pytest.raises(IndexFormatError, match="SQLite"):
            Index.open(tmp_path / "garbage", read_only=read_only)
    (tmp_path / "foreign").mkdir()
    with sqlite3.connect(tmp_path / "foreign" / "index.sqlite") as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', 'someone-else')")
    with pytest.raises(IndexFormatError, match="not a tracemark index"):
        Index.open(tmp_path / "foreign")
    assert not (tmp_path / "foreign" / "write.lock").exists()  # refused before locking


def _edit(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path / "index.sqlite")
    with conn:
        conn.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("UPDATE meta SET value = '999' WHERE key = 'format_version'", "newer"),
        ("UPDATE meta SET value = 'one' WHERE key = 'format_version'", "invalid format_version"),
        ("DELETE FROM meta WHERE key = 'format_version'", "invalid format_version"),
        ("DROP TABLE blobs", "table 'blobs' is missing"),
        ("ALTER TABLE refs DROP COLUMN notes", "lacks column"),
        ("UPDATE vector_sets SET dim = 12 WHERE name = 'pdq'", "corrupt vector set"),
        ("UPDATE vector_sets SET kind = 'text' WHERE name = 'pdq'", "corrupt vector set"),
    ],
)
def test_open_refuses_unknown_versions_and_damaged_schemas(built, sql: str, match: str) -> None:
    path, _ = built
    _edit(path, sql)
    for read_only in (True, False):
        with pytest.raises(IndexFormatError, match=match):
            Index.open(path, read_only=read_only)


# --- persistence ---------------------------------------------------------------------


def test_content_persists_across_reopen(built) -> None:
    path, items = built
    with Index.open(path, read_only=True) as index:
        assert len(index) == 20 and index.repaired == ()
        for rid, item in enumerate(items, start=1):
            ref = index.get(rid)
            assert (ref.content_hash, ref.source) == (item.content_hash, item.source)
            np.testing.assert_array_equal(
                index.vectors(rid, "pdq"), np.atleast_2d(item.vectors["pdq"])
            )
            np.testing.assert_array_equal(index.vectors(rid, "emb")[0], item.vectors["emb"])
            assert index.blob(rid, "kp") == item.blobs["kp"]
            assert index.find(item.content_hash) == rid
            last = np.atleast_2d(item.vectors["pdq"])[-1]
            assert index.search("pdq", last, k=1)[0][0].ref_id == rid
        assert index.stats()["vector_sets"]["pdq"]["rows"] == sum(1 + i % 3 for i in range(20))


def test_content_persists_for_another_process(built) -> None:
    path, items = built
    code = textwrap.dedent(
        f"""
        import json, numpy as np
        from tracemark.index import Index
        with Index.open({str(path)!r}, read_only=True) as ix:
            q = ix.vectors(7, "pdq")
            hits = ix.search("pdq", q, k=2)
            print(json.dumps({{"n": len(ix), "hash": ix.get(7).content_hash,
                              "blob": ix.blob(7, "kp").decode(), "row": [h[0].row for h in hits],
                              "top": [h[0].ref_id for h in hits], "repaired": list(ix.repaired)}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    n_rows = 1 + 6 % 3
    assert got == {
        "n": 20,
        "hash": items[6].content_hash,
        "blob": "blob6",
        "row": list(range(n_rows)),
        "top": [7] * n_rows,
        "repaired": [],
    }


def test_uncommitted_writes_are_lost_and_context_exit_on_error_rolls_back(built) -> None:
    path, _ = built
    rng = np.random.default_rng(5)
    with pytest.raises(RuntimeError), Index.open(path) as index:
        index.add_many(_refs(rng, 3, start=100))
        assert len(index) == 23
        raise RuntimeError("boom")
    with Index.open(path) as index:
        assert len(index) == 20 and index.repaired == ()
        assert _count_rows(index, "pdq") == sum(1 + i % 3 for i in range(20))
        index.add_many(_refs(rng, 2, start=200))
        index.rollback()
        assert len(index) == 20 and _count_rows(index, "pdq") == sum(1 + i % 3 for i in range(20))
        index.add_many(_refs(rng, 2, start=300))
        index.commit()
    with Index.open(path, read_only=True) as index:
        assert len(index) == 22 and index.find("h300") == 21


def _count_rows(index: Index, name: str) -> int:
    return index.stats()["vector_sets"][name]["rows"]


def test_added_vector_set_persists_and_rolls_back(built) -> None:
    path, _ = built
    with Index.open(path) as index:
        index.add_vector_set("tmp", VectorSpec("float", 3))
        index.rollback()
        assert "tmp" not in index.vector_specs
        index.add_vector_set("regions", VectorSpec("float", 3))
        with pytest.raises(ConfigError):
            index.add_vector_set("regions", VectorSpec("float", 3))
        index.add(content_hash="r", vectors={"regions": np.eye(3, dtype=np.float32)})
    with Index.open(path, read_only=True) as index:
        assert index.vector_specs["regions"] == VectorSpec("float", 3)
        assert index.search("regions", np.eye(3, dtype=np.float32)[2], k=5)[0] == [Hit(21, 1.0, 2)]


# --- remove and duplicates -------------------------------------------------------------


def test_remove_takes_metadata_vectors_and_blobs(built) -> None:
    path, items = built
    victim = 3  # items[2] has three PDQ rows
    before = _rows(path, "pdq")
    with Index.open(path) as index:
        assert index.remove(victim) is True
        assert index.remove(victim) is False
        assert index.remove(999) is False
        assert victim not in index and 4 in index
    with Index.open(path, read_only=True) as index:
        assert len(index) == 19 and index.repaired == ()
        assert index.stats()["vector_sets"]["pdq"]["rows"] == before - 3
        with pytest.raises(ReferenceNotFoundError):
            index.get(victim)
        with pytest.raises(KeyError):
            index.blob(victim, "kp")
        for row in np.atleast_2d(items[2].vectors["pdq"]):
            assert victim not in [h.ref_id for h in index.search("pdq", row, k=19)[0]]
        assert victim not in [
            h.ref_id for h in index.search("emb", items[2].vectors["emb"], k=19)[0]
        ]
        assert index.find(items[2].content_hash) is None
        assert sqlite3.connect(path / "index.sqlite").execute(
            "SELECT COUNT(*) FROM blobs WHERE ref_id = ?", (victim,)
        ).fetchone() == (0,)


def test_a_removed_reference_can_be_added_again_under_a_new_id(built) -> None:
    path, items = built
    with Index.open(path) as index:
        index.remove(1)
        result = index.add(content_hash=items[0].content_hash, vectors=items[0].vectors)
        assert result.added and result.id == 21  # ids are never reused


def test_duplicate_content_hash_is_reported_not_added(built) -> None:
    path, items = built
    rows_before = _rows(path, "pdq")
    with Index.open(path) as index:
        again = index.add(
            content_hash=items[4].content_hash, vectors={"pdq": _bits(np.random.default_rng(0), 1)}
        )
        assert (again.id, again.duplicate_of, again.added) == (5, 5, False)
        batch = index.add_many(
            [
                NewReference("fresh", {"pdq": _bits(np.random.default_rng(1), 1)}),
                NewReference("fresh", {"pdq": _bits(np.random.default_rng(2), 1)}),
                NewReference(items[0].content_hash, {}),
            ]
        )
        assert [(r.id, r.duplicate_of) for r in batch] == [(21, None), (21, 21), (1, 1)]
        assert len(index) == 21
        assert _count_rows(index, "pdq") == rows_before + 1


# --- crash consistency -----------------------------------------------------------------


def test_faiss_files_older_than_sqlite_are_rebuilt(built) -> None:
    """A crash after the SQLite commit but before the FAISS files were written."""
    path, _ = built
    old = {f.name: f.read_bytes() for f in (path / "vectors").iterdir()}
    extra = _refs(np.random.default_rng(9), 4, start=50)
    with Index.open(path) as index:
        index.add_many(extra)
        index.remove(2)
    for name, data in old.items():  # the FAISS writes "never happened"
        (path / "vectors" / name).write_bytes(data)
    stale = (path / "vectors" / "pdq.faiss").read_bytes()
    with Index.open(path, read_only=True) as index:
        assert sorted(index.repaired) == ["emb", "pdq"]
        _assert_all_found(index, extra, first_id=21)
        assert 2 not in [h.ref_id for h in index.search("emb", index.vectors(1, "emb"), k=30)[0]]
    assert (path / "vectors" / "pdq.faiss").read_bytes() == stale  # a reader does not write
    with Index.open(path) as index:  # a writer repairs the files
        assert sorted(index.repaired) == ["emb", "pdq"]
    with Index.open(path, read_only=True) as index:
        assert index.repaired == ()
        _assert_all_found(index, extra, first_id=21)


def test_faiss_files_newer_than_sqlite_are_rebuilt(built, tmp_path: Path) -> None:
    """FAISS files written for SQLite rows that were never committed (or were lost)."""
    path, _ = built
    twin = tmp_path / "twin"
    shutil.copytree(path, twin)
    with Index.open(twin) as index:
        index.add_many(_refs(np.random.default_rng(3), 5, start=70))
    shutil.copy(twin / "vectors" / "pdq.faiss", path / "vectors" / "pdq.faiss")
    with Index.open(path) as index:
        assert index.repaired == ("pdq",)
        assert len(index) == 20 and _count_rows(index, "pdq") == sum(1 + i % 3 for i in range(20))


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "wrong-kind"])
def test_missing_or_damaged_faiss_file_is_rebuilt(built, damage: str) -> None:
    path, items = built
    target = path / "vectors" / "pdq.faiss"
    if damage == "delete":
        target.unlink()
    elif damage == "garbage":
        target.write_bytes(b"\x00garbage" * 50)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:  # a float index where a binary one belongs
        shutil.copy(path / "vectors" / "emb.faiss", target)
    with Index.open(path) as index:
        assert index.repaired == ("pdq",)
        _assert_all_found(index, items, first_id=1)
    assert target.is_file()
    with Index.open(path, read_only=True) as index:
        assert index.repaired == ()


def _assert_all_found(index: Index, items: list[NewReference], *, first_id: int) -> None:
    for rid, item in enumerate(items, start=first_id):
        for row in np.atleast_2d(item.vectors["pdq"]):
            assert index.search("pdq", row, k=1)[0][0].ref_id == rid
        assert index.search("emb", item.vectors["emb"], k=1)[0][0].ref_id == rid


# --- search exactness ------------------------------------------------------------------


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


def _check_tie_aware(
    hits: list[Hit], best: dict[int, float], k: int, *, higher: bool, tol: float
) -> None:
    """Hits must be the k best references by best-row score, allowing any order among ties."""
    order = sorted(best.values(), reverse=higher)
    assert len(hits) == min(k, len(best))
    for hit, want in zip(hits, order, strict=False):
        assert hit.score == pytest.approx(want, abs=tol)  # the score sequence matches
        assert hit.score == pytest.approx(best[hit.ref_id], abs=tol)  # the score is the ref's best
    assert len({h.ref_id for h in hits}) == len(hits)
    if hits and len(best) > k:  # every reference strictly better than the k-th is included
        kth = order[k - 1]
        better = {r for r, s in best.items() if (s > kth + tol if higher else s < kth - tol)}
        assert better <= {h.ref_id for h in hits}


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_binary_search_matches_brute_force(tmp_path: Path, index_type: str) -> None:
    rng = np.random.default_rng(11)
    spec = VectorSpec("binary", 32, index=index_type)  # 32 bits: many ties
    n_refs = 300
    rows = {rid: _bits(rng, int(rng.integers(1, 5)), 4) for rid in range(1, n_refs + 1)}
    with Index.create(tmp_path / "b", vector_specs={"h": spec}) as index:
        index.add_many([NewReference(f"{r}", {"h": v}) for r, v in rows.items()])
        queries = _bits(rng, 25, 4)
        for k in (1, 10, 40):
            for query, hits in zip(queries, index.search("h", queries, k=k), strict=True):
                best = {r: float(_hamming(query[None], v).min()) for r, v in rows.items()}
                if index_type == "flat":
                    _check_tie_aware(hits, best, k, higher=False, tol=0)
                else:  # approximate: scores are right, most of the true top-k is found
                    assert all(h.score == best[h.ref_id] for h in hits)
                    assert hits[0].score <= sorted(best.values())[2]


def test_remove_from_an_hnsw_set_rebuilds_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    vecs = _unit(rng, 60, 8)
    spec = VectorSpec("float", 8, index="hnsw", hnsw_m=8)
    with Index.create(tmp_path / "h", vector_specs={"e": spec}) as index:
        index.add_many([NewReference(f"{i}", {"e": v}) for i, v in enumerate(vecs)])
        index.commit()
        assert index.remove(5)
        assert 5 not in [h.ref_id for h in index.search("e", vecs[4], k=60)[0]]
    with Index.open(tmp_path / "h", read_only=True) as index:
        assert index.repaired == () and _count_rows(index, "e") == 59
        assert index.search("e", vecs[9], k=1)[0][0].ref_id == 10


def test_refresh_shows_a_reader_the_writers_commits(built) -> None:
    path, _ = built
    row = np.full(32, 7, np.uint8)
    with Index.open(path, read_only=True) as reader, Index.open(path) as writer:
        writer.add(content_hash="late", vectors={"pdq": row})
        writer.commit()
        assert len(reader) == 21  # metadata is live
        assert reader.search("pdq", row, k=1)[0][0].score > 0  # vectors as of open
        reader.refresh()
        assert reader.search("pdq", row, k=1)[0][0] == Hit(21, 0.0, 0)


def test_float_search_matches_brute_force_with_rows_per_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    rows = {rid: _unit(rng, int(rng.integers(1, 7)), 16) for rid in range(1, 401)}
    with Index.create(tmp_path / "f", vector_specs={"e": VectorSpec("float", 16)}) as index:
        index.add_many([NewReference(f"{r}", {"e": v}) for r, v in rows.items()])
        queries = _unit(rng, 20, 16)
        for k in (1, 5, 50):
            for query, hits in zip(queries, index.search("e", queries, k=k), strict=True):
                best = {r: float((v @ query).max()) for r, v in rows.items()}
                _check_tie_aware(hits, best, k, higher=True, tol=1e-5)
                for hit in hits:  # Hit.row names the row that scored best
                    assert float(rows[hit.ref_id][hit.row] @ query) == pytest.approx(
                        hit.score, abs=1e-5
                    )
        assert index.search("e", queries[0], k=1000)[0][-1].ref_id in rows  # k > references
        assert len(index.search("e", queries[0], k=1000)[0]) == 400


def test_search_on_empty_set_and_empty_query_batch(tmp_path: Path) -> None:
    with Index.create(tmp_path / "e", vector_specs=SPECS) as index:
        assert index.search("pdq", _bits(np.random.default_rng(0), 2), k=3) == [[], []]
        assert index.search("emb", np.zeros((0, 8), np.float32), k=3) == []


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 30), st.integers(1, 3)), min_size=1, max_size=25
    )
)
def test_random_adds_and_removes_agree_with_a_model(tmp_path_factory, ops) -> None:
    path = tmp_path_factory.mktemp("model") / "idx"
    rng = np.random.default_rng(len(ops))
    model: dict[int, np.ndarray] = {}
    with Index.create(path, vector_specs={"h": VectorSpec("binary", 64)}) as index:
        for step, (is_add, pick, n_rows) in enumerate(ops):
            if is_add:
                vecs = _bits(rng, n_rows, 8)
                model[index.add(content_hash=f"{step}", vectors={"h": vecs}).id] = vecs
            elif model:
                victim = sorted(model)[pick % len(model)]
                assert index.remove(victim)
                del model[victim]
            if step % 7 == 3:
                index.commit()
    with Index.open(path, read_only=True) as index:
        assert index.repaired == ()
        assert sorted(r.id for r in index.list(limit=1000)) == sorted(model)
        assert _count_rows(index, "h") == sum(len(v) for v in model.values())
        for rid, vecs in model.items():
            hits = index.search("h", vecs, k=len(model))
            for row, row_hits in enumerate(hits):
                best = {r: float(_hamming(vecs[row][None], v).min()) for r, v in model.items()}
                _check_tie_aware(row_hits, best, len(model), higher=False, tol=0)
                assert row_hits[0].score == 0 and rid in [
                    h.ref_id for h in row_hits if h.score == 0
                ]


# --- readers, writers, locks -----------------------------------------------------------


def test_read_only_refuses_writes(built) -> None:
    path, items = built
    with Index.open(path, read_only=True) as index:
        with pytest.raises(IndexReadOnlyError):
            index.add(content_hash="x", vectors={})
        with pytest.raises(PermissionError):
            index.add_many(items[:1])
        with pytest.raises(IndexReadOnlyError):
            index.remove(1)
        with pytest.raises(IndexReadOnlyError):
            index.add_vector_set("new", VectorSpec("float", 2))
        index.commit()  # nothing to commit: a no-op
        assert len(index) == 20


def test_one_writer_at_a_time_readers_are_free(built) -> None:
    path, _ = built
    with Index.open(path) as writer:
        with pytest.raises(IndexLockedError):
            Index.open(path)
        with Index.open(path, read_only=True) as reader:
            assert len(reader) == 20
        writer.add(content_hash="w", vectors={})
    Index.open(path).close()  # the lock is released on close


def test_a_reader_is_safe_while_a_writer_adds(built) -> None:
    path, _ = built
    writer = textwrap.dedent(
        f"""
        import time
        import numpy as np
        from tracemark.index import Index, NewReference
        rng = np.random.default_rng(0)
        with Index.open({str(path)!r}) as ix:
            for batch in range(15):
                ix.add_many([NewReference(f"w{{batch}}-{{i}}", {{"pdq": rng.integers(0, 256, (2, 32), dtype=np.uint8),
                             "emb": rng.standard_normal(8).astype(np.float32)}}) for i in range(40)])
                ix.commit()
                time.sleep(0.02)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    seen: list[int] = []
    query = np.zeros(32, np.uint8)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            with Index.open(path, read_only=True) as reader:
                count = len(reader)
                for hit in reader.search("pdq", query, k=5)[0]:
                    assert reader.get(hit.ref_id).id == hit.ref_id  # no dangling ids
                reader.refresh()
                assert _count_rows(reader, "pdq") >= 0
                seen.append(count)
    finally:
        assert proc.wait(timeout=60) == 0
    assert seen and seen == sorted(seen)  # readers see whole commits, never fewer references
    assert all((n - 20) % 40 == 0 for n in seen)  # a batch is committed atomically
    with Index.open(path, read_only=True) as reader:
        assert len(reader) == 20 + 15 * 40 and reader.repaired == ()


def test_closed_index_refuses_operations(built) -> None:
    path, _ = built
    index = Index.open(path)
    index.close()
    index.close()  # idempotent
    for call in (
        lambda: len(index),
        lambda: index.get(1),
        lambda: index.search("pdq", np.zeros(32, np.uint8), 1),
        lambda: index.add(content_hash="z", vectors={}),
    ):
        with pytest.raises(IndexClosedError):
            call()


def test_index_cannot_be_constructed_directly() -> None:
    with pytest.raises(TypeError):
        Index()


# --- bad inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vectors", "error"),
    [
        ({"pdq": np.zeros(31, np.uint8)}, IndexInputError),  # wrong dim
        ({"pdq": np.zeros((2, 33), np.uint8)}, IndexInputError),
        ({"pdq": np.zeros((2, 2, 32), np.uint8)}, IndexInputError),  # wrong rank
        ({"pdq": np.zeros(32, np.int64)}, IndexInputError),  # wrong dtype
        ({"pdq": np.zeros(256, bool)}, IndexInputError),  # unpacked bits
        ({"emb": np.zeros(8, np.int32)}, IndexInputError),
        ({"emb": np.full(8, np.nan, np.float32)}, IndexInputError),
        ({"emb": [0.0] * 8}, IndexInputError),  # not an array
        ({"emb": np.zeros(7, np.float32)}, IndexInputError),
        ({"nope": np.zeros(8, np.float32)}, UnknownVectorSetError),
    ],
)
def test_bad_vectors_are_typed_errors_and_add_nothing(built, vectors: dict, error: type) -> None:
    path, _ = built
    with Index.open(path) as index:
        good = NewReference("good", {"emb": np.ones(8, np.float32)})
        with pytest.raises(error):
            index.add_many([good, NewReference("bad", vectors)])
        assert len(index) == 20 and index.find("good") is None


def test_bad_search_and_metadata_inputs_are_typed(built) -> None:
    path, _ = built
    with Index.open(path) as index:
        with pytest.raises(UnknownVectorSetError) as info:
            index.search("nope", np.zeros(32, np.uint8), k=1)
        assert isinstance(info.value, KeyError) and "pdq" in str(info.value)
        for k in (0, -1, 1.5, True):
            with pytest.raises(IndexInputError):
                index.search("pdq", np.zeros(32, np.uint8), k=k)  # type: ignore[arg-type]
        with pytest.raises(IndexInputError):
            index.search("emb", np.zeros(32, np.uint8), k=1)
        with pytest.raises(IndexInputError):
            index.search("emb", np.zeros((2, 8), np.complex64), k=1)
        for bad in (
            {"content_hash": ""},
            {"content_hash": 12},
            {"content_hash": "x", "source": 3},
            {"content_hash": "x", "blobs": {"kp": "text"}},
            {"content_hash": "x", "blobs": {"": b""}},
            {"content_hash": "x", "vectors": [np.zeros(8)]},
        ):
            kwargs = {"vectors": {}, **bad}
            with pytest.raises(IndexInputError):
                index.add(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(IndexInputError):
            index.add_many([{"content_hash": "dict"}])  # type: ignore[list-item]
        for bad_id in ("1", 1.0, None):
            with pytest.raises(IndexInputError):
                index.get(bad_id)  # type: ignore[arg-type]
        with pytest.raises(ReferenceNotFoundError):
            index.get(12345)
        with pytest.raises(IndexInputError):
            index.list(limit=-1)
        assert all(
            isinstance(e, TracemarkError) for e in (IndexInputError("x"), IndexFormatError("x"))
        )


# --- listing and stats -----------------------------------------------------------------


def test_list_pages_and_stats_add_up(built) -> None:
    path, _ = built
    with Index.open(path, read_only=True) as index:
        pages = [index.list(limit=6, offset=o) for o in range(0, 24, 6)]
        assert [r.id for page in pages for r in page] == list(range(1, 21))
        assert index.list(limit=0) == []
        stats = index.stats()
    assert stats["count"] == 20 and stats["format_version"] == 2
    pdq = stats["vector_sets"]["pdq"]
    assert pdq["vector_bytes"] == 32 * pdq["rows"] and pdq["id_bytes"] == 8 * pdq["rows"]
    assert stats["vector_sets"]["emb"]["vector_bytes"] == 20 * 8 * 4
    assert stats["blobs"] == {"count": 20, "bytes": sum(len(f"blob{i}") for i in range(20))}
    on_disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert stats["disk_bytes"] == on_disk and stats["bytes_per_reference"] == on_disk / 20
