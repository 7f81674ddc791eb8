"""Watermark speed: embed and detect on 1-megapixel images, one core, ours beside the peers.

    .venv/bin/python benchmarks/bench_watermark_speed.py [--images 5] [--repeats 3]

Corpus photos are resized to 1155x866 (1.0 MP). Each method embeds and detects every image
`repeats` times after one warm-up; times are per call (median and mean). Methods whose
extra is missing are skipped. Writes benchmarks/results/watermark_speed.json and, with
``--write-docs``, the "watermark-speed" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tracemark import watermark  # noqa: E402
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.errors import MissingExtraError  # noqa: E402
from tracemark.imageio import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
KEY = b"benchmark-key-0000000001"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="lattice,dwtDct,dwtDctSvd,rivaGan")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    paths = sorted((CORPUS / "photo").glob("*.jpg"))[:: 129 // args.images][: args.images]
    images = [np.ascontiguousarray(cv2.resize(load_image(p), (1155, 866), interpolation=cv2.INTER_CUBIC))
              for p in paths]
    rows = []
    for name in args.methods.split(","):
        wm = watermark.get_method(name)
        key = KEY if wm.keyed else None
        try:
            wm.embed(images[0], 1, key)
        except MissingExtraError as exc:
            print(f"skipping {name}: {exc}")
            continue
        te, td = [], []
        for img in images:
            marked = wm.embed(img, 12345, key)
            wm.detect(marked, key)
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                marked = wm.embed(img, 12345, key)
                te.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                wm.detect(marked, key)
                td.append((time.perf_counter() - t0) * 1000)
        rows.append({"method": name, "embed_median_ms": statistics.median(te), "embed_mean_ms": statistics.fmean(te),
                     "detect_median_ms": statistics.median(td), "detect_mean_ms": statistics.fmean(td)})
        print(rows[-1])
    ref = next((r for r in rows if r["method"] == "dwtDctSvd"), None)
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, 2 cores, timed on one thread",
              "image_size": "1155x866 (1.0 MP)", "images": len(images), "repeats": args.repeats, "rows": rows,
              "command": f"python benchmarks/bench_watermark_speed.py --images {args.images} --repeats {args.repeats} --methods {args.methods}"}
    out = ROOT / "benchmarks" / "results" / "watermark_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Command: `{result['command']}`; {result['date']}; {result['machine']}; "
             f"{len(images)} corpus photos resized to {result['image_size']}, {args.repeats} repeats each.", "",
             "| method | embed median ms | detect median ms | embed+detect vs dwtDctSvd |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = ""
        if ref:
            ratio = f"{(ref['embed_median_ms'] + ref['detect_median_ms']) / (r['embed_median_ms'] + r['detect_median_ms']):.1f}x faster"
        lines.append(f"| {r['method']} | {r['embed_median_ms']:.1f} | {r['detect_median_ms']:.1f} | {ratio} |")
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "watermark-speed", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
