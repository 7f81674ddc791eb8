"""MilvusVectors against a real Milvus server (the one scripts/test.sh starts).

Every test opens stores under a namespace of its own (a uuid) and drops that namespace's
collections afterwards, so that two pytest-xdist workers share one server. Search results
are compared with a brute-force numpy oracle (Hamming distance through ``np.unpackbits``,
inner product through a matrix product), tie-aware: the returned scores must be the ``k``
best scores of the oracle, each the true score of its label.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import MILVUS_URL, requires_milvus
from tracemark.errors import (
    IndexClosedError,
    IndexFormatError,
    IndexInputError,
    IndexStoreError,
    MissingExtraError,
    UnknownVectorSetError,
    VectorStoreUnavailableError,
)
from tracemark.index.model import VectorSpec
from tracemark.index.vectors import ROW_BITS, open_vector_store, parse_vector_url

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")

from tracemark.index._milvus import MAX_K, MilvusVectors, collection_name  # noqa: E402

BIN = VectorSpec("binary", 256)
FLT = VectorSpec("float", 64)


# -- oracle and data -------------------------------------------------------------------------


def make_labels(n: int, per_ref: int = 3, first_ref: int = 1) -> np.ndarray:
    i = np.arange(n, dtype=np.int64)
    return ((i // per_ref + first_ref) << ROW_BITS) | (i % per_ref)


def binary_rows(rng: np.random.Generator, n: int, dim: int = 256) -> np.ndarray:
    return rng.integers(0, 256, (n, dim // 8), dtype=np.uint8)


def float_rows(rng: np.random.Generator, n: int, dim: int = 64) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle_scores(spec: VectorSpec, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Brute-force scores ``(len(queries), len(rows))``: Hamming bits or inner products."""
    if spec.kind == "binary":
        a = np.unpackbits(queries, axis=1).astype(np.int32)
        b = np.unpackbits(rows, axis=1).astype(np.int32)
        return (a[:, None, :] != b[None, :, :]).sum(axis=2).astype(np.float64)
    return queries.astype(np.float64) @ rows.astype(np.float64).T


def check_knn(spec: VectorSpec, scores: np.ndarray, labels: np.ndarray, rows: np.ndarray,
              row_labels: np.ndarray, queries: np.ndarray, k: int) -> None:
    """Tie-aware comparison with the oracle (after faiss' check_ref_knn_with_draws)."""
    higher = spec.kind == "float"
    tol = 0 if spec.kind == "binary" else 1e-4
    truth = oracle_scores(spec, rows, queries)
    where = {int(lab): j for j, lab in enumerate(row_labels)}
    m = min(k, len(rows))
    assert scores.shape == labels.shape == (len(queries), k)
    assert scores.dtype == np.float32 and labels.dtype == np.int64
    for i in range(len(queries)):
        got = labels[i]
        assert (got[:m] >= 0).all() and (got[m:] == -1).all()
        assert len(set(got[:m].tolist())) == m
        true = truth[i, [where[int(lab)] for lab in got[:m]]]
        np.testing.assert_allclose(scores[i, :m], true, atol=tol)
        best = np.sort(truth[i])[::-1][:m] if higher else np.sort(truth[i])[:m]
        np.testing.assert_allclose(np.sort(true)[::-1] if higher else np.sort(true), best,
                                   atol=tol)
        key = list(zip((-scores[i, :m] if higher else scores[i, :m]).tolist(),
                       got[:m].tolist(), strict=True))
        assert key == sorted(key)  # best first, ties by label


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of this test's own; its collections are dropped afterwards."""
    ns = f"tmtest_{uuid.uuid4().hex[:16]}"
    yield ns
    if MILVUS_URL is None:
        return
    from pymilvus import MilvusClient

    url = parse_vector_url(MILVUS_URL)
    client = MilvusClient(uri=f"http://{url.host}:{url.port}", timeout=30)
    try:
        for name in client.list_collections():
            if name.startswith(ns):
                client.drop_collection(name)
    finally:
        client.close()


@pytest.fixture
def connect(namespace: str, tmp_path: Path) -> Iterator:
    """``connect(ns=None)``: a new MilvusVectors (a new client) on the test server."""
    opened: list[MilvusVectors] = []

    def make(ns: str | None = None) -> MilvusVectors:
        store = open_vector_store(parse_vector_url(MILVUS_URL), namespace=ns or namespace,
                                  path=tmp_path)
        assert isinstance(store, MilvusVectors)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


# -- pure functions (no server) -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=300),
       st.text(min_size=1, max_size=300))
def test_collection_name_valid_and_distinct(ns: str, a: str, b: str) -> None:
    na, nb = collection_name(ns, a), collection_name(ns, b)
    for n in (na, nb):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) and len(n) <= 255
    assert (na == nb) == (a == b)


def test_collection_name_keeps_valid_names_readable() -> None:
    assert collection_name("tm_abc", "pdq") == "tm_abc_pdq"
    assert collection_name("tm_abc", "sscd.v1-dense").startswith("tm_abc_sscd_v1_dense_")
    assert collection_name("tm_abc", "a.b") != collection_name("tm_abc", "a_b")


def test_missing_pymilvus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(MissingExtraError, match=r"tracemark\[milvus\]"):
        MilvusVectors(parse_vector_url("milvus://127.0.0.1:19530"), namespace="tm_x")


def test_unreachable_server_is_a_typed_error_quickly(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(VectorStoreUnavailableError) as info:
        MilvusVectors(parse_vector_url("milvus://user:secret@127.0.0.1:1"), namespace="tm_x",
                      path=tmp_path, connect_timeout=2)
    assert time.monotonic() - start < 15
    assert info.value.source == "milvus://127.0.0.1:1" and "secret" not in str(info.value)
    assert isinstance(info.value, IndexStoreError)
    if sys.modules.get("fastapi") is not None or _has("fastapi"):
        from tracemark.service.app import _status_for

        assert _status_for(info.value) == 503  # the service: "retry later"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- the contract against the server -----------------------------------------------------------


@requires_milvus
@pytest.mark.parametrize("spec", [BIN, FLT], ids=["binary", "float"])
def test_search_matches_brute_force(connect, spec: VectorSpec) -> None:
    rng = np.random.default_rng(1)
    n = 1500
    make = binary_rows if spec.kind == "binary" else float_rows
    rows = make(rng, n, spec.dim)
    if spec.kind == "binary":  # duplicated rows: ties the order must settle by label
        rows[100:130] = rows[0]
    labels = make_labels(n)
    store = connect()
    store.open_set("fp.v1-a", spec)
    store.add("fp.v1-a", labels[:700], rows[:700])
    store.add("fp.v1-a", labels[700:], rows[700:])
    queries = np.concatenate([rows[:3], make(rng, 17, spec.dim)])
    for k in (1, 10, 64):
        scores, got = store.search("fp.v1-a", queries, k)
        check_knn(spec, scores, got, rows, labels, queries, k)
    if spec.kind == "binary":  # the 31 copies of row 0 come back in label order
        scores, got = store.search("fp.v1-a", rows[:1], 31)
        assert (scores[0] == 0).all()
        assert got[0].tolist() == sorted(labels[[0, *range(100, 130)]].tolist())
    assert store.count("fp.v1-a") == n
    np.testing.assert_array_equal(store.labels("fp.v1-a"), np.sort(labels))
    assert store.set_stats("fp.v1-a")["rows"] == n


@requires_milvus
@pytest.mark.parametrize("spec", [VectorSpec("binary", 256, index="hnsw"),
                                  VectorSpec("float", 64, index="hnsw")],
                         ids=["binary", "float"])
def test_hnsw_sets_find_their_neighbours(connect, spec: VectorSpec) -> None:
    rng = np.random.default_rng(2)
    make = binary_rows if spec.kind == "binary" else float_rows
    rows = make(rng, 2000, spec.dim)
    labels = make_labels(2000)
    store = connect()
    store.open_set("h", spec)
    store.add("h", labels, rows)
    assert store.set_stats("h")["index"] == "HNSW"
    queries = rows[:25]
    scores, got = store.search("h", queries, 10)
    truth = oracle_scores(spec, rows, queries)
    order = np.argsort(-truth if spec.kind == "float" else truth, axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(got[i]) & set(labels[order[i]])) / 10 for i in range(25)])
    assert recall >= 0.9
    assert (got[:, 0] == labels[:25]).all()  # each row finds itself first


@requires_milvus
def test_add_replaces_labels_and_rerun_is_idempotent(connect) -> None:
    rng = np.random.default_rng(3)
    rows, labels = binary_rows(rng, 300), make_labels(300)
    store = connect()
    store.open_set("b", BIN)
    store.add("b", labels, rows)
    new = binary_rows(rng, 50)
    store.add("b", labels[:50], new)
    store.add("b", labels[:50], new)  # a re-run after a crash
    assert store.count("b") == 300
    np.testing.assert_array_equal(store.labels("b"), np.sort(labels))
    both = rows.copy()
    both[:50] = new
    scores, got = store.search("b", new[:5], 3)
    check_knn(BIN, scores, got, both, labels, new[:5], 3)
    assert (scores[:, 0] == 0).all() and (got[:, 0] == labels[:5]).all()


@requires_milvus
@pytest.mark.parametrize("spec", [BIN, FLT], ids=["binary", "float"])
def test_other_client_sees_adds_and_removes_at_once(connect, spec: VectorSpec) -> None:
    rng = np.random.default_rng(4)
    make = binary_rows if spec.kind == "binary" else float_rows
    rows, labels = make(rng, 90, spec.dim), make_labels(90, per_ref=3)
    writer, reader = connect(), connect()
    writer.open_set("s", spec)
    reader.open_set("s", spec)
    assert writer.write_token() == 0
    for lo in range(0, 90, 30):  # each acknowledged add is seen by the next search that
        writer.add("s", labels[lo:lo + 30], rows[lo:lo + 30])  # waits for its token
        token = writer.write_token()
        assert token > 0
        after = token if lo < 60 else -1  # the token (the change log's), or Strong
        scores, got = reader.search("s", rows[lo:lo + 30], 1, after=after)
        assert got[:, 0].tolist() == labels[lo:lo + 30].tolist()
        assert reader.count("s") == lo + 30
    gone = np.array([1, 5, 7], np.int64)
    writer.remove("s", gone)  # Milvus gives deletes no timestamp: Strong shows them (the
    kept = ~np.isin(labels >> ROW_BITS, gone)  # Index filters removed references itself)
    _, got = reader.search("s", rows, 90, after=-1)
    assert not np.isin(got[got >= 0] >> ROW_BITS, gone).any()
    assert (got >= 0).sum(axis=1).tolist() == [int(kept.sum())] * 90
    np.testing.assert_array_equal(reader.labels("s"), np.sort(labels[kept]))
    writer.remove("s", np.array([999], np.int64))  # absent: nothing happens
    writer.remove("s", np.empty(0, np.int64))
    assert reader.count("s") == kept.sum()


@requires_milvus
def test_namespaces_do_not_see_each_other(connect, namespace: str) -> None:
    rng = np.random.default_rng(5)
    a, b = connect(), connect(namespace + "_other")
    a.open_set("s", BIN)
    b.open_set("s", BIN)
    a.add("s", make_labels(10), binary_rows(rng, 10))
    b.add("s", make_labels(4, first_ref=100), binary_rows(rng, 4))
    assert a.count("s") == 10 and b.count("s") == 4
    assert set(a.labels("s") >> ROW_BITS) <= set(range(1, 5))
    b.drop_set("s")
    assert a.count("s") == 10


@requires_milvus
def test_padding_and_k_clamped_to_milvus_cap(connect) -> None:
    rng = np.random.default_rng(6)
    rows = binary_rows(rng, 20)
    store = connect()
    store.open_set("s", BIN)
    store.add("s", make_labels(20), rows)
    scores, got = store.search("s", rows[:2], 50)
    assert got.shape == (2, 50) and (got[:, 20:] == -1).all() and (got[:, :20] >= 0).all()
    scores, got = store.search("s", rows[:2], 10**9)
    assert got.shape == scores.shape == (2, MAX_K)
    assert (got[:, :20] >= 0).all() and (got[:, 20:] == -1).all()
    empty = np.empty((0, 32), np.uint8)
    assert store.search("s", empty, 5)[1].shape == (0, 5)


@requires_milvus
def test_drop_and_reopen_is_empty(connect) -> None:
    rng = np.random.default_rng(7)
    store, other = connect(), connect()
    store.open_set("s", FLT)
    store.add("s", make_labels(30), float_rows(rng, 30))
    store.drop_set("s")
    store.drop_set("s")  # absent: no error
    with pytest.raises(UnknownVectorSetError):
        store.count("s")
    store.open_set("s", FLT)
    assert store.count("s") == 0 and store.labels("s").shape == (0,)
    _, got = store.search("s", float_rows(rng, 2), 3)
    assert (got == -1).all()
    other.open_set("s", FLT)
    assert other.count("s") == 0


@requires_milvus
def test_rebuild_replaces_the_contents(connect) -> None:
    rng = np.random.default_rng(8)
    rows, labels = binary_rows(rng, 1000), make_labels(1000)
    store = connect()
    store.open_set("s", BIN)
    store.add("s", make_labels(50, first_ref=5000), binary_rows(rng, 50))  # stale rows

    def source():
        for lo in range(0, 1000, 300):
            yield labels[lo:lo + 300], rows[lo:lo + 300]
        yield np.empty(0, np.int64), np.empty((0, 32), np.uint8)

    store.rebuild("s", BIN, source)
    np.testing.assert_array_equal(store.labels("s"), labels)
    scores, got = store.search("s", rows[:10], 5)
    check_knn(BIN, scores, got, rows, labels, rows[:10], 5)


@requires_milvus
def test_large_batch_in_chunks(connect) -> None:
    rng = np.random.default_rng(9)
    n = 50_000
    rows, labels = binary_rows(rng, n), make_labels(n, per_ref=5)
    store = connect()
    store.open_set("big", BIN)
    store.add("big", labels, rows)
    assert store.count("big") == n
    np.testing.assert_array_equal(store.labels("big"), labels)  # iterator: several pages
    pick = rng.choice(n, 8, replace=False)
    scores, got = store.search("big", rows[pick], 1)
    assert (scores[:, 0] == 0).all() and (got[:, 0] == labels[pick]).all()


@requires_milvus
def test_bad_inputs_are_typed_errors(connect, namespace: str) -> None:
    rng = np.random.default_rng(10)
    store = connect()
    store.open_set("b", BIN)
    store.open_set("f", FLT)
    labels = make_labels(4)
    bad = [
        ("b", labels, binary_rows(rng, 4, 128)),  # wrong width
        ("b", labels, binary_rows(rng, 4).astype(np.int16)),  # wrong dtype
        ("b", labels[:3], binary_rows(rng, 4)),  # labels for fewer rows
        ("b", np.array([1, 1, 2, 3]), binary_rows(rng, 4)),  # a repeated label
        ("b", labels.astype(np.float64), binary_rows(rng, 4)),
        ("f", labels, float_rows(rng, 4).astype(np.int32)),
        ("f", labels, np.full((4, 64), np.nan, np.float32)),
    ]
    for name, lab, rows in bad:
        with pytest.raises(IndexInputError):
            store.add(name, lab, rows)
    for k in (0, -1, 2.5, True):
        with pytest.raises(IndexInputError):
            store.search("b", binary_rows(rng, 1), k)
    with pytest.raises(IndexInputError):
        store.search("f", float_rows(rng, 2, 32), 3)
    with pytest.raises(UnknownVectorSetError):
        store.add("nope", labels, binary_rows(rng, 4))
    with pytest.raises(IndexInputError, match="stored only"):
        store.open_set("n", VectorSpec("binary", 256, index="none"))
    with pytest.raises(IndexFormatError, match="BINARY_VECTOR"):
        connect().open_set("b", VectorSpec("binary", 512))  # another index's collection
    with pytest.raises(IndexStoreError, match="(?i)dim"):  # Milvus' own limit (32768)
        store.open_set("wide", VectorSpec("float", 40000))
    assert store.count("b") == store.count("f") == 0  # nothing half-written
    store.close()
    store.close()
    with pytest.raises(IndexClosedError):
        store.count("b")
