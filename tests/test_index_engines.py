"""The reference index on the engines that take it past one machine: vectors in a real
Milvus server (with SQLite or PostgreSQL metadata), and two processes writing one index on
PostgreSQL + Milvus at once. The Milvus server and PostgreSQL are the ones scripts/test.sh
starts."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from tracemark._db import schema_name
from tracemark.errors import ConfigError
from tracemark.index import Index, NewReference, VectorSpec

from .conftest import MILVUS_URL, PG_URL, requires_milvus, requires_pg

pytestmark = requires_milvus

SPECS = {"pdq": VectorSpec("binary", 256), "emb": VectorSpec("float", 8),
         "kept": VectorSpec("float", 4, index="none")}


def _items(rng: np.random.Generator, n: int, start: int = 0, *,
           kept: bool = True) -> list[NewReference]:
    """``n`` references: 1-3 PDQ rows, two unit float rows, and (``kept``) a row of the
    stored-only set."""
    out = []
    for i in range(start, start + n):
        emb = rng.normal(size=(2, 8)).astype(np.float32)
        vectors = {"pdq": rng.integers(0, 256, (1 + i % 3, 32), dtype=np.uint8),
                   "emb": emb / np.linalg.norm(emb, axis=1, keepdims=True)}
        if kept:
            vectors["kept"] = np.ones((1, 4), np.float32)
        out.append(NewReference(
            content_hash=f"h{i}",
            vectors=vectors,
            source=f"img{i}.jpg"))
    return out


def _oracle_pdq(items: list[NewReference], ids: list[int], q: np.ndarray) -> list[tuple[int, int]]:
    """(distance, ref id) of every reference's best row, by brute force."""
    qb = np.unpackbits(q)
    best = []
    for item, rid in zip(items, ids, strict=True):
        rows = np.unpackbits(item.vectors["pdq"], axis=1)
        best.append((int((rows != qb).sum(axis=1).min()), rid))
    return sorted(best)


def _agree(index: Index) -> None:
    """The store holds exactly the rows the database implies, for every set."""
    for name in index.vector_specs:
        labels = np.sort(index.store_labels(name))
        refs = {r.id: r for r in index.list(limit=100_000)}
        expected = []
        for rid in sorted(refs):
            rows = index.vectors(rid, name)
            expected += [(rid << 16) | j for j in range(0 if rows is None else len(rows))]
        assert labels.tolist() == expected, name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
def made(request, tmp_path: Path):
    db = {} if request.param == "sqlite" else {
        "database_url": PG_URL, "schema": schema_name("ix", uuid.uuid4().hex[:12])}
    path = tmp_path / "ix"
    index = Index.create(path, vector_specs=SPECS, vectors=MILVUS_URL, **db)
    yield index, path, {k: v for k, v in db.items() if k == "database_url"}
    index.close()
    Index.drop_vectors(path, **{k: v for k, v in db.items() if k == "database_url"})


def test_milvus_index_searches_like_brute_force_and_survives_reopen(made) -> None:
    index, path, db = made
    rng = np.random.default_rng(1)
    items = _items(rng, 40)
    ids = [r.id for r in index.add_many(items)]
    index.commit()
    assert index.stats()["vector_store"] == MILVUS_URL
    assert index.stats()["vector_sets"]["pdq"]["rows"] == sum(1 + i % 3 for i in range(40))
    assert index.stats()["vector_sets"]["kept"]["rows"] == 40  # stored only: not in Milvus
    for q in (items[3].vectors["pdq"][0], rng.integers(0, 256, 32, dtype=np.uint8)):
        hits = index.search("pdq", q, k=5)[0]
        oracle = _oracle_pdq(items, ids, q)
        assert [(int(h.score), h.ref_id) for h in hits] == oracle[:5]
    e = items[9].vectors["emb"][1]
    top = index.search("emb", e, k=1)[0][0]
    assert top.ref_id == ids[9] and top.row == 1 and top.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(Exception, match="stored only"):
        index.search("kept", np.ones(4, np.float32), k=1)
    _agree(index)
    index.close()
    with Index.open(path, **db) as again:  # the recorded URL is enough to reopen
        assert again.repaired == () and len(again) == 40
        assert again.search("pdq", items[3].vectors["pdq"][0], k=1)[0][0].ref_id == ids[3]
    with pytest.raises(ConfigError, match="keeps its vectors in milvus"):
        Index.open(path, vectors="faiss", **db)
    made_again = Index.open(path, **db)
    made[0].__dict__.update(made_again.__dict__)  # the fixture closes it


def test_milvus_rollback_and_removal_put_the_store_back(made) -> None:
    index, _path, _db = made
    rng = np.random.default_rng(2)
    items = _items(rng, 12)
    index.add_many(items)
    index.commit()
    extra = _items(rng, 5, start=100)
    index.add_many(extra)
    assert index.remove(3)
    q = extra[0].vectors["pdq"][0]
    assert index.search("pdq", q, k=1)[0][0].score == 0  # visible inside the transaction
    index.rollback()
    assert len(index) == 12 and 3 in index
    _agree(index)
    assert index.search("pdq", items[2].vectors["pdq"][0], k=1)[0][0].ref_id == 3
    assert index.search("pdq", q, k=1)[0][0].score > 0
    assert index.remove(3)
    index.commit()
    _agree(index)
    assert all(h.ref_id != 3 for h in index.search("pdq", items[2].vectors["pdq"][0], k=12)[0])


def test_milvus_store_that_disagrees_is_repaired_on_open(made) -> None:
    """What a crash between the database commit and the store write leaves: rows missing
    from Milvus, and rows of references the database does not have."""
    index, path, db = made
    rng = np.random.default_rng(3)
    index.add_many(_items(rng, 10))
    index.commit()
    store = index._vstore
    store.remove("pdq", np.array([4, 5], np.int64))  # acknowledged rows lost
    store.add("emb", np.array([(999 << 16)], np.int64),  # an orphan
              rng.normal(size=(1, 8)).astype(np.float32))
    index.close()
    with Index.open(path, read_only=True, **db) as reader:  # a reader trusts, and filters
        assert reader.repaired == ()
        assert all(h.ref_id != 999 for h in reader.search("emb", np.ones(8, np.float32), k=20)[0])
    reopened = Index.open(path, **db)
    made[0].__dict__.update(reopened.__dict__)
    assert sorted(reopened.repaired) == ["emb", "pdq"]
    _agree(reopened)


@requires_pg
def test_two_writers_on_postgresql_and_milvus_see_each_other_at_once(tmp_path: Path) -> None:
    """Replicas: two writable handles on one index (no directory lock); a commit through
    one is found by the other's next search; a removal likewise; a content hash added
    through both is stored once."""
    schema = schema_name("ix", uuid.uuid4().hex[:12])
    a_path, b_path = tmp_path / "a", tmp_path / "b"
    Index.create(a_path, vector_specs=SPECS, vectors=MILVUS_URL, database_url=PG_URL,
                 schema=schema).close()
    Index.attach(b_path, schema=schema)  # another machine's local directory
    rng = np.random.default_rng(4)
    items = _items(rng, 8)
    with Index.open(a_path, database_url=PG_URL) as a, Index.open(b_path, database_url=PG_URL) as b:
        assert a.shared and b.shared
        ids = [r.id for r in a.add_many(items[:4])]
        a.commit()
        q = items[2].vectors["pdq"][0]
        assert b.search("pdq", q, k=1)[0][0].ref_id == ids[2]
        more = b.add_many(items[4:])  # uncommitted: a must not return it
        qb = items[6].vectors["pdq"][0]
        assert all(h.ref_id != more[2].id for h in a.search("pdq", qb, k=10)[0])
        b.commit()
        assert a.search("pdq", qb, k=1)[0][0].ref_id == more[2].id
        assert [c[2] for c in a.changes(0)] == ["add"] * 8
        assert b.remove(ids[2])
        b.commit()
        assert all(h.ref_id != ids[2] for h in a.search("pdq", q, k=10)[0])
        again = a.add_many([items[0], NewReference(content_hash="h0", vectors={})])
        assert again[0].duplicate_of == ids[0] and again[1].duplicate_of == ids[0]
        a.commit()
        assert len(a) == len(b) == 7
        _agree(a)
    Index.drop_vectors(a_path, database_url=PG_URL)


def test_unreachable_milvus_is_a_typed_error(tmp_path: Path) -> None:
    from tracemark.errors import IndexStoreError

    with pytest.raises(IndexStoreError, match="127.0.0.1:1"):
        Index.create(tmp_path / "x", vector_specs=SPECS, vectors="milvus://127.0.0.1:1")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="unknown vector store"):
        Index.create(tmp_path / "y", vector_specs=SPECS, vectors="redis://127.0.0.1:1")
