"""What a Milvus read costs at each consistency level tracemark could use, on one index.

    .venv/bin/python benchmarks/bench_milvus_consistency.py --database-url URL \\
        [--milvus milvus://127.0.0.1:19530] [--n 20000] [--queries 60]

Builds an index of ``--n`` random 256-bit PDQ-like references (PostgreSQL metadata, Milvus
vectors), reopens it read-only in this process and times ``--queries`` single-row searches
(k = 10, one thread) five ways: ``Index.search`` (the public path: change log, guarantee
timestamp, hits filtered by the database); the vector store with ``after=0`` and with the
index's guarantee timestamp (Milvus level "Customized"); level ``Strong``; and pymilvus at
level ``Eventually``. Also times the two database reads ``Index.search`` adds. Prints
progress on stderr and a markdown table on stdout; deletes what it made; writes no docs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tracemark._db import schema_name
from tracemark.index import Index, NewReference, VectorSpec


def _time(fn: Callable[[int], object], n: int) -> tuple[float, float, float]:
    xs = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        xs.append((time.perf_counter() - t0) * 1000)
    a = np.array(xs)
    return float(np.median(a)), float(np.percentile(a, 95)), float(a.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--milvus", default="milvus://127.0.0.1:19530")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        print(f"building {args.n:,} references ...", file=sys.stderr)
        with Index.create(path, vector_specs={"pdq": VectorSpec("binary", 256)},
                          vectors=args.milvus, database_url=args.database_url,
                          schema=schema_name("bench_mc", uuid.uuid4().hex[:8])) as index:
            for lo in range(0, args.n, 10_000):
                index.add_many([NewReference(content_hash=f"h{i}", vectors={"pdq": rows[i]})
                                for i in range(lo, min(args.n, lo + 10_000))])
                index.commit()
        reader = Index.open(path, read_only=True, database_url=args.database_url)
        try:
            store = reader._vstore
            coll = store._sets["pdq"].collection
            q = args.queries
            print("timing ...", file=sys.stderr)
            ways = {
                "`Index.search`": lambda i: reader.search("pdq", rows[i], 10),
                "store, after=0": lambda i: store.search("pdq", rows[i:i + 1], 10),
                "store, after = the change log's last Milvus timestamp":
                    lambda i: store.search("pdq", rows[i:i + 1], 10, after=reader._after),
                "store, Strong": lambda i: store.search("pdq", rows[i:i + 1], 10, after=-1),
                "pymilvus, Eventually": lambda i: coll.search(
                    [rows[i].tobytes()], "vec", {"metric_type": "HAMMING", "params": {}},
                    limit=10, consistency_level="Eventually"),
                "database: change log read": lambda i: reader._follow_changes(),
                "database: hits' references": lambda i: reader._existing(set(range(1, 11))),
            }
            print("| read | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|")
            for name, fn in ways.items():
                fn(0)
                p50, p95, mx = _time(fn, q)
                print(f"| {name} | {p50:.1f} | {p95:.1f} | {mx:.1f} |")
        finally:
            reader.close()
            Index.drop_vectors(path, database_url=args.database_url)


if __name__ == "__main__":
    main()
