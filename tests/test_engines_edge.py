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
from .test_index_engines import _items as engine_items

SPECS = {"pdq": VectorSpec("binary", 256), "emb": VectorSpec("float", 8)}


def _items(rng: np.random.Generator, n: int, start: int = 0) -> list[NewReference]:
    return engine_items(rng, n, start, kept=False)


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


# -- vector-store URLs -----------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "milvus://[::1]:19530", "milvus://u:p@[fe80::1]:1/db", "milvus://alice:s3cret@h.example:7",
    "milvus://h", "MILVUS://h:65535/x"])
def test_a_redacted_url_parses_back_to_the_same_store(url: str) -> None:
    """What an index records (``redacted()``) must open the same server again: an IPv6
    host keeps its brackets, and the credentials are gone."""
    parsed = parse_vector_url(url)
    again = parse_vector_url(parsed.redacted())
    assert (again.scheme, again.host, again.port, again.database) == \
        (parsed.scheme, parsed.host, parsed.port, parsed.database)
    assert again.token is None and "s3cret" not in parsed.redacted()
    assert "@" not in parsed.redacted()


@pytest.mark.parametrize("url", ["milvus://h:0", "milvus://h:65536", "milvus://h:-1",
                                 "milvus://h:x", "milvus://", "milvus:///db"])
def test_a_url_naming_no_usable_port_or_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_vector_url(url)


# -- metadata on PostgreSQL ------------------------------------------------------------------


@pytest.fixture
def pg_index(tmp_path: Path) -> Iterator[Index]:
    if PG_URL is None:
        pytest.skip("no PostgreSQL: run scripts/test.sh")
    index = Index.create(tmp_path / "p", vector_specs={"p": VectorSpec("binary", 256)},
                         database_url=PG_URL, schema=schema_name("edge", uuid.uuid4().hex[:12]))
    yield index
    index.close()


@requires_pg
def test_nul_in_names_is_a_typed_error_on_postgresql_and_keeps_the_transaction(
        pg_index: Index) -> None:
    """PostgreSQL text cannot hold NUL: a blob or document name with one is refused as
    bad input (as content hashes and text fields are), never a raw driver error, and the
    pending add survives; a lookup by such a name finds nothing."""
    from tracemark.errors import IndexInputError

    ix = pg_index
    rid = ix.add(content_hash="a", vectors={"p": np.zeros((2, 32), np.uint8)}).id
    with pytest.raises(IndexInputError, match="NUL"):
        ix.put_document("cal\x00", b"x")
    with pytest.raises(IndexInputError, match="NUL"):
        ix.add(content_hash="b", vectors={}, blobs={"thumb\x00": b"x"})
    with pytest.raises(IndexInputError, match="NUL"):
        ix.put_blob(rid, "t\x00", b"x")
    ix.commit()
    assert len(ix) == 1 and ix.find("a") == rid
    assert ix.find("a\x00") is None and ix.document("cal\x00") is None
    assert ix.blob(rid, "t\x00") is None and ix.blob_ids("t\x00").size == 0


@requires_pg
@pytest.mark.parametrize(("since", "limit"), [("x", 10), (0, -1), (None, 5), (0, 1.5)])
def test_changes_with_bad_arguments_is_a_typed_error(pg_index: Index, since, limit) -> None:
    from tracemark.errors import IndexInputError

    pg_index.add(content_hash="a", vectors={})
    pg_index.commit()
    with pytest.raises(IndexInputError):
        pg_index.changes(since, limit)
    assert pg_index.changes(0, 1) == [(1, 1, "add")]


# -- calibration with the metadata -----------------------------------------------------------


@requires_pg
def test_a_legacy_calibration_file_moves_into_the_database_so_every_replica_has_it(
        tmp_path: Path) -> None:
    """A collection calibrated before the calibration became an index document keeps a
    ``calibration.npz`` beside its metadata. Once opened for writing, the calibration must
    live with the metadata: another machine attached to the same PostgreSQL schema (a
    replica) decides with the same calibration, not uncalibrated."""
    from tracemark.copydetect.decide import NullModel
    from tracemark.copydetect.index import CALIBRATION_FILE, CopyIndex, MatchConfig
    from tracemark.fingerprint import global_desc

    schema = schema_name("edge", uuid.uuid4().hex[:12])
    a, b = tmp_path / "a", tmp_path / "b"
    CopyIndex.create(a, database_url=PG_URL, schema=schema).close()
    rng = np.random.default_rng(5)
    bg = rng.normal(size=(24, global_desc.DIM)).astype(np.float32)
    bg /= np.linalg.norm(bg, axis=1, keepdims=True)
    model = NullModel(bg, rng.random(300), MatchConfig().retrieval)
    (a / CALIBRATION_FILE).write_bytes(model.encode(None))  # the earlier layout
    with CopyIndex.open(a, database_url=PG_URL) as first:
        assert first.stats()["calibrated"]
    Index.attach(b, schema=schema)
    with CopyIndex.open(b, database_url=PG_URL, read_only=True) as other:
        assert other.stats()["calibrated"]
        assert other.threshold_for_alpha(0.01) == pytest.approx(
            model.threshold_for_alpha(0.01))


@requires_milvus
def test_a_reader_pointed_at_a_store_without_the_index_says_so(tmp_path: Path) -> None:
    """Reopening with another Milvus database than the index was built on: a reader fails
    clearly instead of finding nothing."""
    from tracemark.errors import IndexFormatError

    path = tmp_path / "ix"
    with Index.create(path, vector_specs={"pdq": VectorSpec("binary", 256)},
                      vectors=MILVUS_URL) as index:
        index.add(content_hash="a", vectors={"pdq": np.zeros(32, np.uint8)})
    try:
        with Index.open(path, read_only=True) as reader:
            assert reader.search("pdq", np.zeros(32, np.uint8), k=1)[0][0].ref_id == 1
        elsewhere = Index.open(path, read_only=True)  # the same store: fine
        elsewhere.close()
        with Index.open(path) as writer:
            writer._vstore.drop_set("pdq")  # what another server looks like: no collection
        with pytest.raises(IndexFormatError, match="has no set 'pdq'"):
            Index.open(path, read_only=True)
        with Index.open(path) as writer:  # a writer rebuilds it there
            assert writer.repaired == ("pdq",)
    finally:
        Index.drop_vectors(path)
