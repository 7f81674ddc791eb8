"""Perceptual-hash speed: images per second on one core at 512x512, decoding excluded.

    .venv/bin/python benchmarks/bench_hash_speed.py [--images 40] [--repeats 3]

Corpus images (photos and art, alternating) are decoded once and resized to 512x512
(area interpolation); each fingerprinter's public ``compute`` then runs on the arrays
``repeats`` times after one warm-up pass. Throughput is counted on the process CPU clock
(one thread: OpenCV and BLAS pinned to one), so other load on the machine does not count
against it; wall-clock throughput is shown beside it. With ``--write-docs`` writes the
"hash-speed" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tracemark.bench.report import update_section  # noqa: E402
from tracemark.fingerprint import get_fingerprinter, pdq_dihedral  # noqa: E402
from tracemark.imageio import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
SIZE = 512


def _images(n: int) -> list[np.ndarray]:
    photos = sorted((CORPUS / "photo").glob("*.jpg"))
    art = sorted((CORPUS / "art").glob("*.jpg"))
    picked = [
        p
        for pair in zip(
            photos[:: max(1, len(photos) // n)], art[:: max(1, len(art) // n)], strict=False
        )
        for p in pair
    ][:n]
    return [
        np.ascontiguousarray(cv2.resize(load_image(p), (SIZE, SIZE), interpolation=cv2.INTER_AREA))
        for p in picked
    ]


def _time(
    fn: Callable[[np.ndarray], Any], images: list[np.ndarray], repeats: int
) -> tuple[float, float]:
    for img in images:  # warm-up (caches, lazy tables)
        fn(img)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for img in images:
            fn(img)
    n = repeats * len(images)
    return n / (time.process_time() - cpu0), n / (time.perf_counter() - wall0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    images = _images(args.images)
    rows: list[tuple[str, str, float, float]] = []
    for name in ("pdq", "phash", "dhash", "whash", "ahash"):
        print(f"timing {name} on {len(images)} images ...", file=sys.stderr, flush=True)
        fp = get_fingerprinter(name)
        cpu, wall = _time(fp.compute, images, args.repeats)
        rows.append((name, f"{fp.dim}", cpu, wall))
    cpu, wall = _time(pdq_dihedral, images, args.repeats)
    rows.append(("pdq_dihedral (8 hashes)", "8 x 256", cpu, wall))

    date = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, timed on one thread"
    command = (
        f"python benchmarks/bench_hash_speed.py --images {args.images} --repeats {args.repeats}"
    )
    lines = [
        f"Command: `{command}`; {date}; {machine}; {len(images)} corpus images resized to "
        f"{SIZE}x{SIZE}, decoded beforehand; `compute(array)` timed, {args.repeats} repeats.",
        "",
        "| fingerprint | bits | ms / image (CPU) | images/s per core (CPU) | images/s (wall) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, bits, cpu, wall in rows:
        lines.append(f"| {name} | {bits} | {1000 / cpu:.2f} | {cpu:.0f} | {wall:.0f} |")
    lines += [
        "",
        "CPU throughput is measured on the process clock, so other jobs on the machine "
        "inflate only the wall-clock column.",
    ]
    body = "\n".join(lines)
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "hash-speed", body)
    print(body)


if __name__ == "__main__":
    main()
