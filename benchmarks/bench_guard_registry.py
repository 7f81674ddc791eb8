"""Time the protected-concept registry on a SQLite collection (one core):

    PYTHONPATH=src taskset -c 0 python benchmarks/bench_guard_registry.py [--concepts 1000]

Adds N concepts in one transaction (and commits), then, on a read-only open, times
``list()``, ``stamp()`` and ``get()``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tracemark.copydetect import CopyIndex
from tracemark.guard import Concept, ConceptRegistry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concepts", type=int, default=1000)
    n = ap.parse_args().concepts
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        with CopyIndex.create(path) as ci:
            reg = ConceptRegistry(ci)
            t = time.perf_counter()
            for i in range(n):
                reg.add(Concept(f"Hero {i}", aliases=(f"H{i}",),
                                traits=("a red cape", "a blue mask")))
            ci.commit()
            add = time.perf_counter() - t
        with CopyIndex.open(path, read_only=True) as ci:
            reg = ConceptRegistry(ci)
            t = time.perf_counter()
            listed = reg.list()
            lst = time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(1000):
                reg.stamp()
            stamp = (time.perf_counter() - t) / 1000
            ids = [c.id for c in listed][:: max(1, n // 100)]
            t = time.perf_counter()
            for cid in ids:
                reg.get(cid)
            get = (time.perf_counter() - t) / len(ids)
    print(json.dumps({"concepts": n, "add_ms_per_concept": round(add * 1000 / n, 3),
                      "list_ms": round(lst * 1000, 1), "stamp_ms": round(stamp * 1000, 3),
                      "get_ms": round(get * 1000, 3)}))


if __name__ == "__main__":
    main()
