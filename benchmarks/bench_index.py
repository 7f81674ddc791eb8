"""Index scale benchmark: build, open, search, disk and memory for 100k synthetic references.

    .venv/bin/python benchmarks/bench_index.py [--n 100000] [--queries 200] [--float-index flat]

Each reference has one 256-bit PDQ-like binary row and one 256-D unit float row (random).
Builds with ``Index.add_many`` in batches, one commit; times one-query searches (k=10) on
one thread; measures the resident-memory growth of opening the index read-only. With
``--write-docs`` writes the "index-scale" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from tracemark.bench.report import update_section  # noqa: E402
from tracemark.index import Index, NewReference, VectorSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random PDQ-like rows (uint8, 32 bytes) and ``n`` random unit 256-D rows."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    emb = rng.standard_normal((n, 256), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return bits, emb


def time_queries(index: Index, name: str, queries: np.ndarray, k: int) -> list[float]:
    """Wall-clock milliseconds of one-query searches."""
    out = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(name, q, k=k)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def run(n: int, batch: int, n_queries: int, k: int, float_index: str, workdir: Path) -> dict:
    """Build, reopen and query an index of ``n`` references under ``workdir``."""
    faiss.omp_set_num_threads(1)
    bits, emb = synthetic(n, seed=0)
    specs = {
        "pdq": VectorSpec("binary", 256),
        "emb": VectorSpec("float", 256, index=float_index),  # type: ignore[arg-type]
    }
    path = workdir / "bench.idx"
    t0 = time.perf_counter()
    with Index.create(path, vector_specs=specs) as index:
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            index.add_many(
                NewReference(
                    content_hash=f"{i:064x}",
                    vectors={"pdq": bits[i], "emb": emb[i]},
                    source=f"synthetic/{i}.jpg",
                    owner="bench",
                )
                for i in range(start, stop)
            )
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    picks = rng.integers(0, n, n_queries)
    flips = (
        rng.integers(0, 256, (n_queries, 32), dtype=np.uint8)
        & rng.integers(0, 256, (n_queries, 32), dtype=np.uint8)
        & rng.integers(0, 256, (n_queries, 32), dtype=np.uint8)
    )  # ~1/8 of the bits flipped
    q_emb = emb[picks] + 0.05 * rng.standard_normal((n_queries, 256), dtype=np.float32)
    q_emb /= np.linalg.norm(q_emb, axis=1, keepdims=True)
    np.savez(workdir / "queries.npz", picks=picks, pdq=bits[picks] ^ flips, emb=q_emb)
    del bits, emb
    # a fresh process, so that memory freed by the build does not hide the index's footprint
    child = subprocess.run(
        [sys.executable, __file__, "--measure", str(workdir), "--k", str(k)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(child.stdout)
    return {
        "n": n,
        "batch": batch,
        "k": k,
        "queries": n_queries,
        "float_index": float_index,
        "build_s": build_s,
        **measured,
    }


def measure(workdir: Path, k: int) -> dict:
    """Open the built index read-only and time one-query searches (run in a fresh process)."""
    faiss.omp_set_num_threads(1)
    data = np.load(workdir / "queries.npz")
    picks, queries = data["picks"], {"pdq": data["pdq"], "emb": data["emb"]}
    before = rss_bytes()
    t0 = time.perf_counter()
    index = Index.open(workdir / "bench.idx", read_only=True)
    open_s = time.perf_counter() - t0
    rss_delta = rss_bytes() - before
    try:
        lat, found = {}, {}
        for name, q in queries.items():
            time_queries(index, name, q[:10], k)  # warm-up
            times = time_queries(index, name, q, k)
            lat[name] = {"median": statistics.median(times), "p95": float(np.percentile(times, 95))}
            tops = [hits[0].ref_id for hits in index.search(name, q, k=1)]
            found[name] = float(np.mean(np.array(tops) == picks + 1))
        stats = index.stats()
    finally:
        index.close()
    return {
        "open_s": open_s,
        "rss_delta_bytes": rss_delta,
        "latency_ms": lat,
        "top1_self_recall": found,
        "stats": stats,
    }


def format_markdown(result: dict, command: str) -> str:
    """The docs/benchmarks.md section for one run."""
    n = result["n"]
    st = result["stats"]
    lat = result["latency_ms"]
    sets = st["vector_sets"]
    sqlite_bytes = st["disk_bytes"] - sum(s["file_bytes"] for s in sets.values())
    date = datetime.now(UTC).date().isoformat()
    emb_kind = "IndexFlatIP" if result["float_index"] == "flat" else "IndexHNSWFlat"
    lines = [
        "## Index scale",
        "",
        "Index build time and query latency at scale; retrieval only, no verification.",
        "",
        f"Command: `{command}` ({date}; machine: 2 cores, {platform.machine()}, "
        f"FAISS {faiss.__version__}, searches on one thread).",
        "",
        f"{n:,} synthetic references, each with one 256-bit PDQ-like row (`pdq`, binary, "
        f"flat) and one 256-D unit float row (`emb`, {result['float_index']}), plus source and "
        f"owner metadata. Queries: stored rows with ~1/8 of their bits flipped / Gaussian noise "
        f"(sigma 0.05 per dimension), k={result['k']}, {result['queries']} queries "
        "timed one at a time (after 10 warm-up queries).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| build (`add_many`, batches of {result['batch']:,}, one commit) | {result['build_s']:.1f} s |",
        f"| build (`add_many`, batches of {result['batch']:,}, one commit), throughput | "
        f"{n / result['build_s']:,.0f} refs/s |",
        f"| open read-only (load + consistency check) | {result['open_s']:.2f} s |",
        f"| search `pdq` (IndexBinaryFlat), median | {lat['pdq']['median']:.2f} ms |",
        f"| search `pdq` (IndexBinaryFlat), p95 | {lat['pdq']['p95']:.2f} ms |",
        f"| search `emb` ({emb_kind}, 256-D), median | {lat['emb']['median']:.2f} ms |",
        f"| search `emb` ({emb_kind}, 256-D), p95 | {lat['emb']['p95']:.2f} ms |",
        f"| top-1 is the source reference (`pdq`) | {result['top1_self_recall']['pdq']:.3f} |",
        f"| top-1 is the source reference (`emb`) | {result['top1_self_recall']['emb']:.3f} |",
        f"| disk, total | {st['disk_bytes'] / 2**20:.1f} MiB |",
        f"| disk, total, per reference | {st['disk_bytes'] / n:,.0f} B/ref |",
        f"| disk, index.sqlite (metadata + raw vectors) | {sqlite_bytes / 2**20:.1f} MiB |",
        f"| disk, index.sqlite (metadata + raw vectors), per reference | {sqlite_bytes / n:,.0f} B/ref |",
        f"| disk, vectors/pdq.faiss | {sets['pdq']['file_bytes'] / n:,.0f} B/ref |",
        f"| disk, vectors/emb.faiss | {sets['emb']['file_bytes'] / n:,.0f} B/ref |",
        f"| memory: RSS growth on open | {result['rss_delta_bytes'] / 2**20:.1f} MiB |",
        f"| memory: RSS growth on open, per reference | {result['rss_delta_bytes'] / n:,.0f} B/ref |",
        "",
        "Memory is what the FAISS caches hold (32 B + 8 B id per PDQ row, 1,024 B + 8 B id per "
        "256-D float row) plus SQLite's page cache; the raw vectors in SQLite stay on disk.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--float-index", choices=["flat", "hnsw"], default="flat")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.k)))
        return
    print(f"building an index of {args.n:,} references, then {args.queries} queries ...",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tracemark-bench-index-") as tmp:
        result = run(args.n, args.batch, args.queries, args.k, args.float_index, Path(tmp))
    command = f"python benchmarks/bench_index.py --n {args.n} --queries {args.queries} --float-index {args.float_index}"
    md = format_markdown(result, command)
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "index-scale", md)
    print(md)


if __name__ == "__main__":
    main()
