"""Adversarial tests of the engines past one machine: vector-store URLs, PostgreSQL +
Milvus writers racing each other, format migration, IVF sets, Ray batch jobs. Each test
uses names of its own (a uuid) in the shared Milvus server and PostgreSQL, and drops them
afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tracemark._db import schema_name
from tracemark.errors import ConfigError
from tracemark.index import Index, NewReference, VectorSpec
from tracemark.index.vectors import parse_vector_url

from .conftest import MILVUS_URL, PG_URL, requires_milvus, requires_pg

SPECS = {"pdq": VectorSpec("binary", 256), "emb": VectorSpec("float", 8)}


def _items(rng: np.random.Generator, n: int, start: int = 0) -> list[NewReference]:
    out = []
    for i in range(start, start + n):
        emb = rng.normal(size=(2, 8)).astype(np.float32)
        out.append(NewReference(
            content_hash=f"h{i}",
            vectors={"pdq": rng.integers(0, 256, (1 + i % 3, 32), dtype=np.uint8),
                     "emb": emb / np.linalg.norm(emb, axis=1, keepdims=True)}))
    return out


def _expected_labels(index: Index, name: str) -> list[int]:
    out = []
    for ref in index.list(limit=100_000):
        rows = index.vectors(ref.id, name)
        out += [(ref.id << 16) | j for j in range(0 if rows is None else len(rows))]
    return sorted(out)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An index on PostgreSQL + Milvus (``a``) and a second machine's directory (``b``)."""
    if PG_URL is None or MILVUS_URL is None:
        pytest.skip("needs PostgreSQL and Milvus: run scripts/test.sh")
    schema = schema_name("edge", uuid.uuid4().hex[:12])
    a, b = tmp_path / "a", tmp_path / "b"
    Index.create(a, vector_specs=SPECS, vectors=MILVUS_URL, database_url=PG_URL,
                 schema=schema).close()
    Index.attach(b, schema=schema)
    yield a, b
    Index.drop_vectors(a, database_url=PG_URL)


# -- two writers on PostgreSQL + Milvus ------------------------------------------------------


@requires_pg
@requires_milvus
def test_a_writer_checking_the_store_keeps_the_other_writers_uncommitted_rows(shared) -> None:
    """Writer ``a`` has rows in Milvus whose database rows are not committed yet; writer
    ``b`` re-checks the store meanwhile (refresh, as an open does). ``b`` must not take
    ``a``'s rows for orphans and drop them: once ``a`` commits, Milvus holds every row
    the database holds."""
    a_path, b_path = shared
    rng = np.random.default_rng(11)
    with Index.open(a_path, database_url=PG_URL) as a, \
            Index.open(b_path, database_url=PG_URL) as b:
        a.add_many(_items(rng, 4))
        a.commit()
        a.add_many(_items(rng, 4, start=10))  # in Milvus, not yet committed
        b.refresh()
        a.commit()
        for name in SPECS:
            assert sorted(a.store_labels(name).tolist()) == _expected_labels(a, name), name
