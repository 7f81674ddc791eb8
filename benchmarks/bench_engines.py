"""Search latency, memory, disk and build time of the vector engines (FAISS files, Milvus) on
the same synthetic vectors, and two `tracemark serve` replicas under search load.

    .venv/bin/python benchmarks/bench_engines.py [--sizes 100000,1000000] [--queries 200]
        [--engines faiss-sqlite,milvus-pg,milvus-sqlite] [--float-sizes 100000]
        [--milvus milvus://127.0.0.1:19530] [--database-url URL] [--replicas]

Part 1 (engines). For each size N, engine and vector set, one fresh child process builds an
index with :meth:`tracemark.index.Index.add_many` (batches of ``--batch`` pre-made
references, one commit per batch), closes it, reopens it read-only and times ``--queries``
single-row searches (k = 10, one thread, after `--warmup` untimed ones) two ways: through :meth:`Index.search` (the public
path: on a shared index, PostgreSQL + Milvus, it also reads the change log and filters the
hits by the references the database holds) and through the index's vector store itself
(the raw engine search, asked for the same number of rows). Engines: ``faiss-sqlite``
(metadata in SQLite, FAISS files), ``milvus-pg`` (metadata in PostgreSQL, vectors in Milvus:
the replica configuration), ``milvus-sqlite``. Vector sets (same seed, so the same vectors
for every engine):

* ``binary``: 256-bit PDQ-like hashes, one row a reference, uniformly random bits; 5 % of
  the references are planted near-duplicates of another (1-16 bits flipped). A query is a
  reference with 1-24 bits flipped, so each query has a true neighbour at a distance far
  below the ~128 bits of an unrelated hash.
* ``float``: 256-D, six L2-normalised rows a reference (the VLAD regions layout), Gaussian;
  5 % planted near-duplicates; a query is one row of a reference plus noise (cosine about
  0.9), renormalised. Sizes ``--float-sizes`` only (600k rows at 100k references).

Recall@10 = share of queries whose source reference is among the 10 hits (1.0 expected:
both stores search exactly, BIN_FLAT / FLAT in Milvus, IndexBinaryFlat / IndexFlatIP in
FAISS). Memory: the child's resident-set growth over opening the index (FAISS loads its
files; a Milvus client holds little) and, for Milvus, the server process' resident set
before the build, after the build (collections loaded) and after the queries. Disk: the
index directory, the PostgreSQL schema (``pg_total_relation_size`` of its tables) and the
Milvus data directory's growth after a flush (``--milvus-dir``), per reference.

Part 2 (``--replicas``): two ``tracemark serve`` processes on different ports and data
directories, both ``--database-url`` PostgreSQL and ``--vectors`` Milvus, so they share the
collections through the service database, and a third on SQLite + FAISS (the default) for
comparison; ``--refs`` corpus images are registered through replica A and through the third;
then closed-loop search clients (as ``bench_service.py``, ``--clients`` of them, each request
to the next base URL in turn) run against the FAISS server, replica A alone, and A and B
round-robin, for ``--seconds`` each: requests/s, p50/p95/p99 latency, errors by status. The
servers' logs stay in a ``tm-replicas-*`` folder (under ``--tmp``), named in the results.

Progress on stderr, a markdown table on stdout, every figure in
``benchmarks/results/engines/results.json`` (or ``--out``). It never writes docs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
ENGINES = {  # name -> (metadata, vector store)
    "faiss-sqlite": ("sqlite", "faiss"),
    "milvus-pg": ("postgresql", "milvus"),
    "milvus-sqlite": ("sqlite", "milvus"),
}
K = 10
DUP_SHARE = 0.05
FLOAT_ROWS = 6
DIM = 256


def log(msg: str) -> None:
    print(f"[bench_engines {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_of(pid: int | str = "self") -> int:
    """Resident set size of a process in bytes (Linux ``/proc``; 0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it is absent)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += st.st_size
    return total


def milvus_server_pid(milvus_dir: Path) -> int | None:
    """The Milvus standalone server's pid: ``server.pid`` beside its data directory, else
    the process whose command line is ``milvus run standalone``."""
    pidfile = milvus_dir / "server.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    out = subprocess.run(["pgrep", "-f", "milvus run standalone"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


# --- synthetic vectors --------------------------------------------------------------

def _flip(rows: np.ndarray, n_bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rows`` (uint8, packed 256 bits) with ``n_bits[i]`` distinct random bits flipped."""
    bits = np.unpackbits(rows, axis=1)
    for i, nb in enumerate(n_bits):
        bits[i, rng.choice(bits.shape[1], int(nb), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def make_set(kind: str, n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors, queries, truth)``: vectors ``(n, 32)`` uint8 (binary) or
    ``(n, 6, 256)`` float32 (float); queries ``(q, 32)`` / ``(q, 256)``; truth ``(q,)`` the
    index (0-based) of each query's source reference. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    n_dup = int(DUP_SHARE * n)
    dups = rng.choice(n, n_dup, replace=False)
    origin = rng.integers(0, n, n_dup)
    truth = rng.choice(n, min(n_queries, n), replace=False)
    if kind == "binary":
        vecs = rng.integers(0, 256, (n, DIM // 8), dtype=np.uint8)
        vecs[dups] = _flip(vecs[origin], rng.integers(1, 17, n_dup), rng)
        queries = _flip(vecs[truth], rng.integers(1, 25, len(truth)), rng)
        return vecs, queries, truth
    vecs = np.empty((n, FLOAT_ROWS, DIM), np.float32)
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        block = rng.standard_normal((hi - lo, FLOAT_ROWS, DIM), dtype=np.float32)
        vecs[lo:hi] = block / np.linalg.norm(block, axis=2, keepdims=True)
    noisy = vecs[origin] + rng.standard_normal((n_dup, FLOAT_ROWS, DIM), dtype=np.float32) * 0.02
    vecs[dups] = noisy / np.linalg.norm(noisy, axis=2, keepdims=True)
    rows = vecs[truth, rng.integers(0, FLOAT_ROWS, len(truth))]
    q = rows + rng.standard_normal(rows.shape, dtype=np.float32) * (0.5 / np.sqrt(DIM))
    return vecs, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), truth


# --- one case, in a child process ---------------------------------------------------

def _pg_schema_bytes(database_url: str, schema: str) -> int:
    import sqlalchemy as sa

    from tracemark._db import url_engine

    engine = url_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind IN ('r', 'm')"), {"s": schema}).scalar_one())
    finally:
        engine.dispose()


def _drop_pg_schema(database_url: str, schema: str) -> None:
    import sqlalchemy as sa

    from tracemark._db import url_engine

    engine = url_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def _milvus_flush(url: str, collection: str) -> None:
    """Seal and persist a collection's segments, so the data directory shows its size."""
    from pymilvus import Collection, connections

    from tracemark.index.vectors import parse_vector_url

    u = parse_vector_url(url)
    alias = uuid.uuid4().hex
    connections.connect(alias=alias, uri=f"http://{u.host}:{u.port}", timeout=30)
    try:
        Collection(collection, using=alias).flush(timeout=300)
    finally:
        connections.disconnect(alias)


def _milvus_eventual(url: str, collection: str, kind: str, queries: np.ndarray,
                     want: int, warmup: int) -> list[float]:
    """Seconds per single-row search straight through pymilvus at consistency level
    ``Eventually`` (tracemark searches at ``Strong``): the engine's floor without the wait
    for the write timestamp."""
    from pymilvus import Collection, connections

    from tracemark.index.vectors import parse_vector_url

    u = parse_vector_url(url)
    alias = uuid.uuid4().hex
    connections.connect(alias=alias, uri=f"http://{u.host}:{u.port}", timeout=30)
    try:
        coll = Collection(collection, using=alias)
        params = {"metric_type": "HAMMING" if kind == "binary" else "IP", "params": {}}
        times = []
        for i, q in enumerate([*queries[:warmup], *queries]):
            data = [q.tobytes()] if kind == "binary" else [q.tolist()]
            t0 = time.perf_counter()
            coll.search(data, "vec", params, limit=want, consistency_level="Eventually",
                        timeout=60)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return times
    finally:
        connections.disconnect(alias)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    s = sorted(seconds)
    return {"p50_ms": round(1000 * statistics.median(s), 3),
            "p95_ms": round(1000 * s[min(len(s) - 1, int(0.95 * len(s)))], 3),
            "mean_ms": round(1000 * statistics.fmean(s), 3)}


def run_case(case: dict) -> dict:
    """Build, reopen and search one (engine, kind, n) index; return its figures."""
    import faiss

    from tracemark.index import Index, NewReference, VectorSpec

    faiss.omp_set_num_threads(1)
    metadata, store = ENGINES[case["engine"]]
    kind, n = case["kind"], case["n"]
    vectors_url = case["milvus"] if store == "milvus" else None
    database_url = case["database_url"] if metadata == "postgresql" else None
    milvus_dir = Path(case["milvus_dir"])
    server = milvus_server_pid(milvus_dir) if store == "milvus" else None
    if store == "milvus" and server is None:
        raise SystemExit(f"no Milvus server process found (pid file in {milvus_dir})")
    t0 = time.perf_counter()
    vecs, queries, truth = make_set(kind, n, case["queries"], case["seed"])
    gen_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="tm-engines-", dir=case.get("tmp")))
    path = work / "index"
    schema = f"bench_{uuid.uuid4().hex[:12]}" if database_url else None
    rows_per_ref = 1 if kind == "binary" else FLOAT_ROWS
    spec = VectorSpec(kind, DIM)
    out: dict = {"engine": case["engine"], "metadata": metadata, "store": store, "kind": kind,
                 "n": n, "rows_per_ref": rows_per_ref, "queries": len(queries), "k": K,
                 "generate_s": round(gen_s, 1)}
    milvus_data = milvus_dir / "data" / "data"
    try:
        server_before = rss_of(server) if server else 0
        disk_before = du(milvus_data) if server else 0
        t0 = time.perf_counter()
        index = Index.create(path, vector_specs={"v": spec}, database_url=database_url,
                             schema=schema, vectors=vectors_url)
        collection = index._vstore.set_stats("v").get("collection")  # noqa: SLF001 -- measuring
        ids = np.empty(n, np.int64)
        with index:
            for lo in range(0, n, case["batch"]):
                hi = min(n, lo + case["batch"])
                ids[lo:hi] = [r.id for r in index.add_many(
                    NewReference(content_hash=f"{i:064x}",
                                 vectors={"v": vecs[i][None, :] if kind == "binary" else vecs[i]})
                    for i in range(lo, hi))]
                index.commit()
                if (lo // case["batch"]) % 10 == 0:
                    log(f"  {case['engine']} {kind} n={n}: {hi} added "
                        f"({hi / (time.perf_counter() - t0):.0f} refs/s)")
        build_s = time.perf_counter() - t0
        if store == "milvus":
            _milvus_flush(vectors_url, collection)
        flush_s = time.perf_counter() - t0 - build_s
        del vecs
        out.update(build_s=round(build_s, 1), refs_per_s=round(n / build_s),
                   flush_s=round(flush_s, 1))
        out["server_rss_before"] = server_before
        out["server_rss_built"] = rss_of(server) if server else 0
        out["dir_bytes"] = du(path)
        out["pg_bytes"] = _pg_schema_bytes(database_url, schema) if database_url else 0
        out["milvus_disk_bytes"] = du(milvus_data) - disk_before if server else 0
        out["disk_bytes_per_ref"] = round(
            (out["dir_bytes"] + out["pg_bytes"] + out["milvus_disk_bytes"]) / n, 1)

        rss0 = rss_of()
        t0 = time.perf_counter()
        index = Index.open(path, read_only=True, database_url=database_url, vectors=vectors_url)
        out["open_s"] = round(time.perf_counter() - t0, 2)
        out["client_rss_growth"] = rss_of() - rss0
        want = K * rows_per_ref
        vstore = index._vstore  # noqa: SLF001 -- the raw engine search, measured on its own
        with index:
            for q in queries[:case["warmup"]]:
                index.search("v", q, K)
                vstore.search("v", q[None, :], want)
            public, raw, found = [], [], 0
            for q, t in zip(queries, truth, strict=True):
                t0 = time.perf_counter()
                hits = index.search("v", q, K)[0]
                public.append(time.perf_counter() - t0)
                found += int(ids[t]) in {h.ref_id for h in hits}
            for q in queries:
                t0 = time.perf_counter()
                vstore.search("v", q[None, :], want)
                raw.append(time.perf_counter() - t0)
        out["search"] = _percentiles(public)
        out["raw_search"] = _percentiles(raw)
        if store == "milvus":
            out["eventual_search"] = _percentiles(
                _milvus_eventual(vectors_url, collection, kind, queries, want, case["warmup"]))
        out["recall_at_10"] = round(found / len(queries), 4)
        out["client_rss_after"] = rss_of()
        out["server_rss_after"] = rss_of(server) if server else 0
    finally:
        try:
            if path.exists() and store == "milvus":
                Index.drop_vectors(path, database_url=database_url, vectors=vectors_url)
        except Exception as exc:  # noqa: BLE001 -- cleanup: report, carry on
            log(f"  dropping the Milvus collections failed: {exc}")
        if schema:
            _drop_pg_schema(database_url, schema)
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_child(case: dict) -> dict:
    """Run one case in a fresh interpreter (clean resident-set figures)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                          stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        return {**{k: case[k] for k in ("engine", "kind", "n")},
                "error": f"child exited {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- part 2: replicas -------------------------------------------------------------

async def _load(urls: list[str], headers: dict, body: bytes, clients: int,
                seconds: float) -> dict:
    """Closed-loop clients; request i of a client goes to ``urls[i % len(urls)]`` (each
    client starts at a different one). Latency p50/p95/p99 of the 200s; errors by status."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients * len(urls),
                          max_keepalive_connections=clients * len(urls))
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one(c: int) -> None:
            i = c
            while time.perf_counter() < stop:
                url = urls[i % len(urls)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, headers=headers, files={
                        "image": ("q.jpg", io.BytesIO(body), "image/jpeg")})
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                if code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(code)] = errors.get(str(code), 0) + 1
        t_start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(clients)))
        elapsed = time.perf_counter() - t_start
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {"clients": clients, "seconds": round(elapsed, 2), "ok": len(lat),
            "errors": errors, "rps": round(len(lat) / elapsed, 2),
            "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
            "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


def _bench_service() -> Any:
    """``benchmarks/bench_service.py`` (its port and image helpers), from this folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_service",
                                                  Path(__file__).with_name("bench_service.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _start_server(work: Path, tag: str, args: argparse.Namespace, shared: bool,
                  env: dict) -> tuple[subprocess.Popen, Any, str]:
    """One ``tracemark serve`` on a free port with data directory ``work/tag``; with
    ``shared``, metadata in ``--database-url`` and vectors in ``--milvus``."""
    port = _bench_service()._free_port()
    logf = open(work / f"server-{tag}.log", "wb")  # noqa: SIM115
    extra = ["--database-url", args.database_url, "--vectors", args.milvus] if shared else []
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tracemark.cli import main; main()", "serve", "--store",
         str(work / tag), "--port", str(port), "--concurrency", str(args.concurrency),
         "--timeout", "120", *extra], stdout=logf, stderr=subprocess.STDOUT, env=env)
    return proc, logf, f"http://127.0.0.1:{port}/v1"


def _wait_healthy(proc: subprocess.Popen, base: str, work: Path) -> None:
    import httpx

    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"a server exited {proc.returncode}; its log is in {work}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{base} did not answer /health within 120 s; see {work}")


def run_replicas(args: argparse.Namespace) -> dict:
    """Two ``tracemark serve`` replicas on PostgreSQL + Milvus under search load, beside one
    ``tracemark serve`` on SQLite + FAISS (the default) holding the same images."""
    import httpx

    from tracemark.bench.watermark import list_images
    from tracemark.imageio import encode_image, load_image
    from tracemark.service.keys import KeyStore, service_engine

    if not args.database_url:
        raise SystemExit("--replicas needs --database-url (or TRACEMARK_TEST_PG_URL)")
    work = Path(tempfile.mkdtemp(prefix="tm-replicas-", dir=args.tmp))
    shared_token, _ = KeyStore(service_engine(work / "a", args.database_url)).create(
        scope="write", collections=["*"])
    local_token, _ = KeyStore(service_engine(work / "f", None)).create(
        scope="write", collections=["*"])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]))
    servers = {tag: _start_server(work, tag, args, shared, env)
               for tag, shared in (("a", True), ("b", True), ("f", False))}
    heads = {"a": shared_token, "b": shared_token, "f": local_token}
    heads = {t: {"Authorization": f"Bearer {tok}"} for t, tok in heads.items()}
    name = f"engines{uuid.uuid4().hex[:8]}"
    result: dict = {"collection": name, "server_threads": args.concurrency}
    try:
        for proc, _, base in servers.values():
            _wait_healthy(proc, base, work)
        base = {t: b for t, (_, _, b) in servers.items()}
        log(f"servers up: {base}")
        for tag in ("a", "f"):  # b sees a's collection through the registry
            r = httpx.post(f"{base[tag]}/collections", json={"name": name}, headers=heads[tag],
                           timeout=120)
            r.raise_for_status()
        paths = list_images(args.images)[: args.refs]
        fit = _bench_service()._fit
        refs = [fit(load_image(p)) for p in paths]
        for tag in ("a", "f"):
            t0 = time.perf_counter()
            for i, rgb in enumerate(refs):
                r = httpx.post(f"{base[tag]}/collections/{name}/images", headers=heads[tag],
                               timeout=120, files={"image": (
                                   "r.png", io.BytesIO(encode_image(rgb, "PNG")), "image/png")})
                r.raise_for_status()
                if i % 50 == 49:
                    log(f"  {i + 1} images registered through {tag}")
            result[f"add_seconds_{tag}"] = round(time.perf_counter() - t0, 1)
        result["refs"] = len(refs)
        query = encode_image(refs[len(refs) // 2][16:-16, 16:-16], "JPEG", quality=80)
        result["check"] = {}
        for tag in ("a", "b", "f"):
            r = httpx.post(f"{base[tag]}/collections/{name}/search", headers=heads[tag],
                           timeout=120, files={"image": ("q.jpg", io.BytesIO(query), "image/jpeg")})
            result["check"][tag] = r.json() if r.status_code == 200 else {"status": r.status_code}
        runs = []
        targets = (("SQLite + FAISS, one server", "f", ["f"]),
                   ("PostgreSQL + Milvus, replica a alone", "a", ["a"]),
                   ("PostgreSQL + Milvus, a + b round-robin", "a", ["a", "b"]))
        for label, head, tags in targets:
            for clients in (int(c) for c in args.clients.split(",")):
                res = asyncio.run(_load([f"{base[t]}/collections/{name}/search" for t in tags],
                                        heads[head], query, clients, args.seconds))
                res["target"] = label
                runs.append(res)
                log(f"  {json.dumps(res)}")
        result["runs"] = runs
        for tag in ("a", "f"):
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{base[tag]}/collections/{name}", headers=heads[tag], timeout=120)
    finally:
        for proc, _logf, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, logf, _ in servers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()
        result["logs"] = str(work)
    return result


# --- report -------------------------------------------------------------------------

def _mb(b: int) -> str:
    return f"{b / 2**20:.0f}"


def engines_table(cases: list[dict]) -> list[str]:
    lines = ["| engine | set | references | build s (refs/s) | open s | search p50 / p95 ms "
             "| raw store p50 / p95 ms | Milvus Eventually p50 / p95 ms | recall@10 | client RSS +MB | Milvus server RSS MB "
             "(before / built / after) | disk B/ref (dir + PG + Milvus) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        if "error" in c:
            lines.append(f"| {c['engine']} | {c['kind']} | {c['n']:,} | {c['error']} "
                         "| | | | | | | | |")
            continue
        server = (f"{_mb(c['server_rss_before'])} / {_mb(c['server_rss_built'])} / "
                  f"{_mb(c['server_rss_after'])}" if c["store"] == "milvus" else "-")
        disk = (f"{c['disk_bytes_per_ref']:.0f} ({c['dir_bytes'] / c['n']:.0f} + "
                f"{c['pg_bytes'] / c['n']:.0f} + {c['milvus_disk_bytes'] / c['n']:.0f})")
        ev = c.get("eventual_search")
        ev_s = f"{ev['p50_ms']:.2f} / {ev['p95_ms']:.2f}" if ev else "-"
        lines.append(
            f"| {c['engine']} | {c['kind']} x{c['rows_per_ref']} | {c['n']:,} | "
            f"{c['build_s']} ({c['refs_per_s']:,}) | {c['open_s']} | "
            f"{c['search']['p50_ms']:.2f} / {c['search']['p95_ms']:.2f} | "
            f"{c['raw_search']['p50_ms']:.2f} / {c['raw_search']['p95_ms']:.2f} | {ev_s} | "
            f"{c['recall_at_10']} | {_mb(c['client_rss_growth'])} | {server} | {disk} |")
    return lines


def replicas_table(rep: dict) -> list[str]:
    if "error" in rep:
        return [f"replicas: failed: {rep['error']}"]
    hits = {t: len(c.get("matches", [])) if isinstance(c, dict) else None
            for t, c in rep["check"].items()}
    lines = [f"{rep['refs']} images registered through replica a in {rep['add_seconds_a']} s "
             f"(through the SQLite + FAISS server: {rep['add_seconds_f']} s); server threads "
             f"{rep['server_threads']}; matches of one search on a / b / f: "
             f"{hits['a']} / {hits['b']} / {hits['f']}.", "",
             "| target | clients | requests/s | p50 ms | p95 ms | p99 ms | ok | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {r['target']} | {r['clients']} | {r['rps']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']} | {r['ok']} | {errs} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--float-sizes", default="100000",
                    help="sizes at which the float set (6 rows a reference) also runs")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="untimed queries first")
    ap.add_argument("--engines", default="faiss-sqlite,milvus-pg")
    ap.add_argument("--batch", type=int, default=20_000, help="references per add_many")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--milvus", default=os.environ.get("TRACEMARK_TEST_MILVUS_URL",
                                                       "milvus://127.0.0.1:19530"))
    ap.add_argument("--milvus-dir", type=Path, default=Path(os.environ.get("TRACEMARK_MILVUS_DIR",
                                                     f"/tmp/tracemark-milvus-{os.getuid()}")),
                    help="the standalone server's base directory (pid file, data)")
    ap.add_argument("--database-url", default=os.environ.get("TRACEMARK_TEST_PG_URL"))
    ap.add_argument("--replicas", action="store_true", help="also run part 2 (two replicas)")
    ap.add_argument("--no-engines", action="store_true", help="skip part 1")
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--refs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--concurrency", type=int, default=2, help="server worker threads")
    ap.add_argument("--tmp", default=None, help="folder for the indexes (default: system temp)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engines")
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case))), flush=True)
        return 0
    engines = [e for e in args.engines.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; known: {', '.join(ENGINES)}")
    if any(ENGINES[e][0] == "postgresql" for e in engines) and not args.database_url:
        ap.error("a PostgreSQL engine needs --database-url (or TRACEMARK_TEST_PG_URL)")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    float_sizes = {int(s) for s in args.float_sizes.split(",") if s}
    started = datetime.now(UTC)
    cases = []
    if not args.no_engines:
        for n in sizes:
            for kind in ("binary", "float") if n in float_sizes else ("binary",):
                for engine in engines:
                    log(f"{engine} {kind} n={n}")
                    case = {"engine": engine, "kind": kind, "n": n, "queries": args.queries,
                            "warmup": args.warmup,
                            "seed": args.seed + n, "batch": args.batch, "milvus": args.milvus,
                            "milvus_dir": str(args.milvus_dir), "database_url": args.database_url,
                            "tmp": args.tmp}
                    res = run_child(case)
                    log(f"  -> {json.dumps({k: res.get(k) for k in ('build_s', 'search', 'raw_search', 'recall_at_10', 'error')})}")
                    cases.append(res)
    replicas = None
    if args.replicas:
        try:
            replicas = run_replicas(args)
        except Exception as exc:  # noqa: BLE001 -- reported in the results
            replicas = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"replicas failed: {replicas['error']}")
    result = {
        "benchmark": "engines", "date": started.strftime("%Y-%m-%d"),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "argv": sys.argv[1:] if argv is None else argv, "cases": cases, "replicas": replicas,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = []
    if cases:
        lines += engines_table(cases)
    if replicas is not None:
        lines += ["", *replicas_table(replicas)]
    print("\n".join(lines))
    return 1 if any("error" in c for c in cases) or (replicas or {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
