"""Output screening: decisions and latency per generated image, one thread.

A collection of ``--refs`` corpus images (long side 512 px) calibrated on ``--background``
others; the screened images are, per reference used, a crop + JPEG re-encode (a copy: should
block), and unrelated corpus images (should allow), half of them marked with the key's
watermark (should block). Reports the decision counts per kind and the latency (p50/p95,
seconds) of :func:`tracemark.guard.image.screen_image` with all three checks.

    PYTHONPATH=src python benchmarks/bench_guard_image.py [--refs 40] [--background 40] \
        [--queries 30]
"""

from __future__ import annotations

import argparse
import collections
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tracemark.copydetect import CopyIndex
from tracemark.guard import Concept
from tracemark.guard.image import screen_image
from tracemark.imageio import encode_image
from tracemark.watermark import get_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import corpus_images, small_image  # noqa: E402

KEY = "bench guard image passphrase"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", type=int, default=40)
    ap.add_argument("--background", type=int, default=40)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    files = corpus_images()
    order = rng.permutation(len(files))
    refs = [files[i] for i in order[: a.refs]]
    bg = [files[i] for i in order[a.refs: a.refs + a.background]]
    unrelated = [files[i] for i in order[a.refs + a.background:
                                          a.refs + a.background + a.queries]]
    with tempfile.TemporaryDirectory() as d:
        ci = CopyIndex.create(Path(d) / "ix")
        ref_rgb = [small_image(p, 512) for p in refs]
        ids = [ci.add(r).id for r in ref_rgb]
        ci.calibrate([small_image(p, 384) for p in bg])
        ci.commit()
        concepts = [Concept(f"Concept {i}", references=(rid,)) for i, rid in enumerate(ids)]
        marker = get_method("lattice")
        kinds: dict[str, list[bytes]] = {"copy": [], "unrelated": [], "marked": []}
        for r in ref_rgb[: a.queries]:
            h, w = r.shape[:2]
            x0, y0 = rng.integers(0, w // 5), rng.integers(0, h // 5)
            crop = r[y0: y0 + int(h * 0.7), x0: x0 + int(w * 0.7)]
            kinds["copy"].append(encode_image(np.ascontiguousarray(crop), "JPEG", quality=75))
        for i, p in enumerate(unrelated):
            rgb = small_image(p, 512)
            if i % 2:
                kinds["marked"].append(encode_image(marker.embed(rgb, i, KEY), "JPEG",
                                                    quality=90))
            else:
                kinds["unrelated"].append(encode_image(rgb, "JPEG", quality=85))
        seconds: list[float] = []
        counts: dict[str, collections.Counter[str]] = {}
        for kind, items in kinds.items():
            counts[kind] = collections.Counter()
            for data in items:
                t0 = time.perf_counter()
                s = screen_image(data, ci, concepts=concepts, key=KEY)
                seconds.append(time.perf_counter() - t0)
                counts[kind][s.decision] += 1
        ci.close()
    print(f"# guard image: {a.refs} references, {a.background} background, "
          f"{platform.processor() or platform.machine()}, one thread")
    print("| kind | images | block | review | allow |")
    print("|---|---|---|---|---|")
    for kind, c in counts.items():
        print(f"| {kind} | {sum(c.values())} | {c['block']} | {c['review']} | {c['allow']} |")
    q = statistics.quantiles(seconds, n=20)
    print(f"latency per image: p50 {statistics.median(seconds):.3f} s, p95 {q[18]:.3f} s "
          f"({len(seconds)} images)")


if __name__ == "__main__":
    main()
