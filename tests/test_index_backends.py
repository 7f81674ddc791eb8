"""The reference index's contract on both metadata backends: SQLite (index.sqlite) and a
real PostgreSQL server (started by scripts/test.sh; URL in TRACEMARK_TEST_PG_URL). FAISS
files stay in the index directory either way; a crash between the database commit and the
FAISS write is repaired from the vectors kept in the database."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from tracemark._db import schema_name
from tracemark.errors import ConfigError
from tracemark.index import (
    Index,
    IndexExistsError,
    IndexFormatError,
    IndexLockedError,
    IndexReadOnlyError,
    NewReference,
    ReferenceNotFoundError,
    VectorSpec,
)
from tracemark.index.store import DATABASE_NAME, SQLITE_NAME

from .conftest import BACKENDS, PG_URL, requires_pg

SPECS = {"pdq": VectorSpec("binary", 256), "emb": VectorSpec("float", 8)}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> dict:
    if request.param == "sqlite":
        return {}
    return {"database_url": PG_URL, "schema": schema_name("ix", uuid.uuid4().hex[:12])}


def _open_kw(db: dict) -> dict:
    return {"database_url": db["database_url"]} if db else {}


def _refs(seed: int, n: int, start: int = 0) -> list[NewReference]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        emb = rng.standard_normal(8).astype(np.float32)
        out.append(NewReference(
            content_hash=f"h{start + i}",
            vectors={"pdq": rng.integers(0, 256, (1 + i % 3, 32), dtype=np.uint8),
                     "emb": emb / np.linalg.norm(emb)},
            source=f"img{start + i}.jpg", owner="Ann" if i % 2 else None,
            blobs={"kp": f"blob{start + i}".encode()},
        ))
    return out


def test_add_search_remove_reopen(tmp_path: Path, db: dict) -> None:
    path = tmp_path / "idx"
    items = _refs(1, 12)
    with Index.create(path, vector_specs=SPECS, **db) as index:
        results = index.add_many(items)
        assert [r.id for r in results] == list(range(1, 13))
        again = index.add_many(items[:2] + _refs(2, 1, start=100))
        assert [r.duplicate_of for r in again[:2]] == [1, 2] and again[2].added
        assert index.remove(3) and not index.remove(3)
        index.commit()
    assert (path / SQLITE_NAME).exists() != bool(db)
    assert (path / DATABASE_NAME).exists() == bool(db)
    with Index.open(path, read_only=True, **_open_kw(db)) as index:
        assert len(index) == 12 and 3 not in index and 13 in index
        ref = index.get(2)
        assert (ref.content_hash, ref.source, ref.owner) == ("h1", "img1.jpg", "Ann")
        assert index.blob(5, "kp") == b"blob4" and index.blob(5, "none") is None
        with pytest.raises(ReferenceNotFoundError):
            index.blob(3, "kp")
        np.testing.assert_array_equal(index.vectors(6, "pdq"), items[5].vectors["pdq"])
        hits = index.search("emb", items[7].vectors["emb"][None, :], 1)[0]
        assert hits[0].ref_id == 8 and hits[0].score == pytest.approx(1.0, abs=1e-5)
        hits = index.search("pdq", items[9].vectors["pdq"][:1], 1)[0]
        assert hits[0].ref_id == 10 and hits[0].score == 0
        assert [r.id for r in index.list(limit=3, offset=1)] == [2, 4, 5]
        st = index.stats()
        assert st["count"] == 12 and st["blobs"]["count"] == 12
        with pytest.raises(IndexReadOnlyError):
            index.add_many(_refs(3, 1, start=200))


def test_rollback_discards_and_add_many_is_all_or_nothing(tmp_path: Path, db: dict) -> None:
    with Index.create(tmp_path / "idx", vector_specs=SPECS, **db) as index:
        index.add_many(_refs(1, 3))
        index.commit()
        index.add_many(_refs(1, 2, start=10))
        index.rollback()
        assert len(index) == 3
        bad = _refs(1, 2, start=20)
        bad.append(NewReference(content_hash="bad", vectors={"emb": np.ones(5, np.float32)}))
        with pytest.raises(Exception):  # noqa: B017 - the wrong dimension, whatever its type
            index.add_many(bad)
        assert len(index) == 3
        assert index.search("emb", _refs(1, 3)[1].vectors["emb"][None, :], 1)[0][0].ref_id == 2


def test_crash_between_database_commit_and_faiss_write_is_repaired(tmp_path: Path, db: dict) -> None:
    path = tmp_path / "idx"
    with Index.create(path, vector_specs=SPECS, **db) as index:
        index.add_many(_refs(1, 5))
    old = tmp_path / "old-vectors"
    shutil.copytree(path / "vectors", old)
    extra = _refs(9, 4, start=50)
    with Index.open(path, **_open_kw(db)) as index:
        index.add_many(extra)
        index.commit()
    shutil.rmtree(path / "vectors")  # the FAISS files as they were before the last commit
    shutil.copytree(old, path / "vectors")
    with Index.open(path, **_open_kw(db)) as index:
        assert set(index.repaired) == {"pdq", "emb"}
        for i, item in enumerate(extra):
            hit = index.search("emb", item.vectors["emb"][None, :], 1)[0][0]
            assert hit.ref_id == 6 + i
        assert index.stats()["vector_sets"]["pdq"]["rows"] == sum(
            len(r.vectors["pdq"]) for r in _refs(1, 5) + extra)
    with Index.open(path, read_only=True, **_open_kw(db)) as index:
        assert index.repaired == ()  # the writer rewrote the files


def test_one_writer_at_a_time(tmp_path: Path, db: dict) -> None:
    path = tmp_path / "idx"
    Index.create(path, vector_specs=SPECS, **db).close()
    with Index.open(path, **_open_kw(db)):
        with pytest.raises(IndexLockedError):
            Index.open(path, **_open_kw(db))
        with Index.open(path, read_only=True, **_open_kw(db)) as reader:
            assert len(reader) == 0


@requires_pg
def test_postgresql_index_mistakes(tmp_path: Path) -> None:
    schema = schema_name("ix", uuid.uuid4().hex[:12])
    Index.create(tmp_path / "a", vector_specs=SPECS, database_url=PG_URL, schema=schema).close()
    with pytest.raises(IndexFormatError, match="give the database URL"):
        Index.open(tmp_path / "a")
    with pytest.raises(IndexExistsError, match="already holds"):
        Index.create(tmp_path / "b", vector_specs=SPECS, database_url=PG_URL, schema=schema)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError):
        Index.create(tmp_path / "c", vector_specs=SPECS, database_url=PG_URL)
    with pytest.raises(ConfigError):
        Index.create(tmp_path / "d", vector_specs=SPECS, database_url=PG_URL, schema="Bad-Name")
    Index.create(tmp_path / "s", vector_specs=SPECS).close()
    with pytest.raises(IndexFormatError, match="not a PostgreSQL-backed index"):
        Index.open(tmp_path / "s", database_url=PG_URL)
    bad_url = "postgresql+psycopg://postgres@/no_such_db?host=/nonexistent&port=1"
    with pytest.raises(IndexFormatError, match="cannot connect"):
        Index.open(tmp_path / "a", database_url=bad_url)


def test_commit_without_writing_vectors_is_durable(tmp_path: Path, db: dict) -> None:
    """commit(write_vectors=False) makes adds durable in the database only; a reader (or the
    next writer after a crash) rebuilds FAISS from the database and finds them."""
    path = tmp_path / "idx"
    writer = Index.create(path, vector_specs=SPECS, **db)
    writer.add_many(_refs(1, 3))
    writer.commit()
    extra = _refs(4, 3, start=30)
    writer.add_many(extra)
    writer.commit(write_vectors=False)  # the process "dies" here: FAISS files are old
    with Index.open(path, read_only=True, **_open_kw(db)) as reader:
        assert set(reader.repaired) == {"pdq", "emb"} and len(reader) == 6
        for i, item in enumerate(extra):
            assert reader.search("emb", item.vectors["emb"][None, :], 1)[0][0].ref_id == 4 + i
    writer.close()  # a clean close writes the files
    with Index.open(path, read_only=True, **_open_kw(db)) as reader:
        assert reader.repaired == () and len(reader) == 6


@requires_pg
def test_index_cli_on_postgresql(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from tracemark.cli import main
    from tracemark.imageio import encode_image

    from .conftest import CORPUS, corpus_crop

    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, rel in enumerate(["photo/gcompris_100.jpg", "photo/gcompris_50.jpg"]):
        (imgs / f"{i}.png").write_bytes(encode_image(corpus_crop(rel, 256), "PNG"))
    db = tmp_path / ("cli_" + uuid.uuid4().hex[:10])
    run = CliRunner().invoke
    res = run(main, ["index", "add", str(imgs), "--store", str(db), "--database-url", PG_URL])
    assert res.exit_code == 0, res.output
    assert (db / DATABASE_NAME).exists() and not (db / SQLITE_NAME).exists()
    res = run(main, ["index", "stats", "--store", str(db)])
    assert res.exit_code == 2 and "give the database URL" in res.output
    res = run(main, ["index", "stats", "--store", str(db)], env={"TRACEMARK_DATABASE_URL": PG_URL})
    assert res.exit_code == 0 and json.loads(res.stdout)["count"] == 2
    res = run(main, ["search", str(imgs / "1.png"), "--store", str(db), "--database-url", PG_URL])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["matches"][0]["ref_id"] == 2
