"""Ingestion throughput of ``tracemark index add``: the local path against Ray with 1 and 2
workers (a local cluster of ``num_cpus`` 1 and 2).

    .venv/bin/python benchmarks/bench_ray_ingest.py [--n 200] [--corpus DIR]

Takes the first N corpus JPEGs (photo and art, as they are: decoding is part of the work),
runs ``tracemark index add`` in this process into a fresh index for each mode (the Ray
modes with ``--ray``, on a cluster started before the clock starts: its start-up time is
reported apart), and prints progress on stderr and a Markdown table on stdout: images/s,
seconds, added. It writes no documentation.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "corpus"


def _images(corpus: Path, n: int) -> list[Path]:
    files = sorted(f for k in ("photo", "art") for f in (corpus / k).glob("*.jpg"))
    if len(files) < n:
        sys.exit(f"only {len(files)} images in {corpus}; give a smaller --n")
    return files[:n]


def _add(store: Path, images: list[Path], ray: bool) -> tuple[float, int]:
    from click.testing import CliRunner

    from tracemark.cli import main

    args = ["index", "add", "--store", str(store)] + (["--ray=local"] if ray else [])
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, [*args, *map(str, images)])
    seconds = time.perf_counter() - t0
    if res.exit_code != 0:
        sys.exit(f"index add failed ({res.exit_code}): {res.output[-2000:]}")
    added = sum(1 for line in res.stdout.splitlines() if '"duplicate_of": null' in line)
    return seconds, added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images ingested per mode")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    args = ap.parse_args()
    images = _images(args.corpus, args.n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        print(f"local: {len(images)} images...", file=sys.stderr, flush=True)
        seconds, added = _add(Path(tmp) / "local", images, ray=False)
        rows.append(("local (no --ray)", "-", seconds, added))
        import ray

        for cpus in (1, 2):
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=cpus, object_store_memory=256 * 1024**2, include_dashboard=False,
                     log_to_driver=False, logging_level="warning")
            startup = time.perf_counter() - t0
            print(f"ray, {cpus} worker(s) (cluster up in {startup:.1f} s)...", file=sys.stderr,
                  flush=True)
            seconds, added = _add(Path(tmp) / f"ray{cpus}", images, ray=True)
            ray.shutdown()
            rows.append((f"--ray, {cpus} worker{'s' if cpus > 1 else ''}", f"{startup:.1f}",
                         seconds, added))
    print(f"\n{len(images)} corpus images; {datetime.now(UTC):%Y-%m-%d}; {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    print("| mode | cluster start (s) | seconds | images/s | added |")
    print("|---|---|---|---|---|")
    for mode, startup, seconds, added in rows:
        print(f"| {mode} | {startup} | {seconds:.1f} | {len(images) / seconds:.2f} | {added} |")


if __name__ == "__main__":
    main()
