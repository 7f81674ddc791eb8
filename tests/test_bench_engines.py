"""benchmarks/bench_engines.py at toy size, so that it cannot rot: FAISS always, Milvus (with
PostgreSQL metadata) when the test command started the servers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from .conftest import MILVUS_URL, PG_URL, REPO, requires_milvus, requires_pg


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_engines",
                                                  REPO / "benchmarks" / "bench_engines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a[:, None, :] ^ b[None, :, :], axis=2).sum(axis=2)


@pytest.mark.parametrize("kind", ["binary", "float"])
def test_each_query_has_its_source_as_a_true_neighbour(kind: str) -> None:
    bench = _bench()
    vecs, queries, truth = bench.make_set(kind, 3000, 40, seed=5)
    again = bench.make_set(kind, 3000, 40, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip((vecs, queries, truth), again, strict=True))
    if kind == "binary":
        assert vecs.shape == (3000, 32) and vecs.dtype == np.uint8
        d = _hamming(queries, vecs)  # brute force: (queries, references)
        src = d[np.arange(len(truth)), truth]
        assert (src <= 24).all()
        # far from everything unrelated: the source is within the 10 nearest references
        assert (np.sum(d < src[:, None], axis=1) < 10).all()
        assert np.median(d) > 100  # unrelated hashes sit near 128 bits
    else:
        assert vecs.shape == (3000, 6, 256) and vecs.dtype == np.float32
        assert np.allclose(np.linalg.norm(vecs, axis=2), 1, atol=1e-5)
        sims = (vecs.reshape(-1, 256) @ queries.T).reshape(3000, 6, -1).max(axis=1)  # (refs, q)
        src = sims[truth, np.arange(len(truth))]
        assert (src > 0.8).all()
        assert (np.sum(sims > src[None, :], axis=0) < 10).all()


def _engines() -> str:
    return "faiss-sqlite,milvus-pg" if MILVUS_URL and PG_URL else "faiss-sqlite"


def test_bench_engines_at_toy_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    argv = ["--sizes", "2000", "--float-sizes", "2000", "--queries", "10", "--warmup", "2", "--batch", "700",
            "--engines", _engines(), "--out", str(tmp_path), "--tmp", str(tmp_path)]
    if MILVUS_URL:
        argv += ["--milvus", MILVUS_URL]
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    cases = result["cases"]
    engines = _engines().split(",")
    assert {(c["engine"], c["kind"]) for c in cases} == {
        (e, k) for e in engines for k in ("binary", "float")}
    for c in cases:
        assert c["n"] == 2000 and c["queries"] == 10
        assert c["recall_at_10"] == 1.0  # both stores search exactly
        assert 0 < c["search"]["p50_ms"] <= c["search"]["p95_ms"]
        assert 0 < c["raw_search"]["p50_ms"] <= c["raw_search"]["p95_ms"]
        raw_bytes = 32 if c["kind"] == "binary" else 6 * 256 * 4
        assert c["disk_bytes_per_ref"] >= raw_bytes  # the database holds every row at least
        assert c["build_s"] > 0 and c["refs_per_s"] > 0
        if c["store"] == "milvus":
            assert c["server_rss_built"] > 0 and c["pg_bytes"] >= 2000 * raw_bytes
            assert c["eventual_search"]["p50_ms"] > 0
        else:
            assert c["dir_bytes"] >= 2000 * raw_bytes
    out = capsys.readouterr().out
    assert out.count("| faiss-sqlite |") == 2
    assert not list(tmp_path.glob("tm-engines-*")), "the indexes were not removed"


def test_unknown_engine_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        _bench().main(["--engines", "faiss-sqlite,annoy", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert not (tmp_path / "results.json").exists()


@requires_pg
@requires_milvus
def test_replicas_part_at_toy_size(tmp_path: Path, corpus_dir: Path) -> None:
    bench = _bench()
    argv = ["--no-engines", "--replicas", "--refs", "3", "--seconds", "1", "--clients", "1,2",
            "--images", str(corpus_dir), "--out", str(tmp_path), "--tmp", str(tmp_path),
            "--milvus", str(MILVUS_URL)]
    assert bench.main(argv) == 0
    rep = json.loads((tmp_path / "results.json").read_text())["replicas"]
    assert rep["refs"] == 3
    # the collection made through replica a is searched on b through the shared registry
    assert all(rep["check"][t]["matches"] for t in ("a", "b", "f"))
    assert [(r["target"].split(",")[0], r["clients"]) for r in rep["runs"]] == [
        (t, c) for t in ("SQLite + FAISS", "PostgreSQL + Milvus", "PostgreSQL + Milvus")
        for c in (1, 2)]
    for r in rep["runs"]:
        assert r["ok"] > 0 and not r["errors"]
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
