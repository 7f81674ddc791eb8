"""Calibration of the lattice detector's p-value on >= 10,000 detections.

    .venv/bin/python benchmarks/bench_watermark_calibration.py [--workers 2]

Negatives: every corpus image (352) clean and under a set of attacks (unmarked), and
marked with another key (clean and attacked). Registry-assisted detection
(:mod:`tracemark.copydetect.assist`) is measured too, on unmarked *registered* images: every
corpus image is registered (unmarked) in a copy-detection collection, and attacked copies
are read through it (the copy is matched to its own unmarked original, aligned, and read
there: the null the assisted route must hold). For alpha in 1e-2, 1e-3, 1e-4 the share of
detections with p < alpha is reported, for the blind and the assisted detections. Writes benchmarks/results/watermark_calibration.json
and, with ``--write-docs``, the "watermark-calibration" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import zlib  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
KEY = b"calibration-key-00000001"
OTHER = b"a-different-key-00000002"
ATTACKS = [
    ("jpeg", {"quality": 30}), ("jpeg", {"quality": 70}), ("webp", {"quality": 50}),
    ("resize", {"scale": 0.5}), ("resize", {"scale": 1.7}), ("center_crop", {"area": 0.5}),
    ("rotate", {"angle": 7.0}), ("rotate", {"angle": 30.0, "expand": True}), ("hflip", {}),
    ("gaussian_blur", {"radius": 2.0}), ("gaussian_noise", {"std": 0.03, "seed": 5}),
    ("brightness", {"factor": 1.6}), ("contrast", {"factor": 0.6}), ("gamma", {"gamma": 1.8}),
    ("text_overlay", {}), ("perspective", {"distortion": 0.05, "corners": [1, -1, -1, 1, 1, 1, -1, -1]}),
    ("pad", {"left": 0.1, "right": 0.1}), ("saturation", {"factor": 0.3}),
    ("jpeg", {"quality": 50}), ("jpeg", {"quality": 90}), ("resize", {"scale": 0.25}),
    ("rotate", {"angle": 20.0}), ("random_crop", {"area": 0.25, "x": 0.3, "y": 0.8}),
    ("gaussian_blur", {"radius": 1.0}), ("emoji_overlay", {}),
]
OTHER_KEY_ATTACKS = [None, ("jpeg", {"quality": 50}), ("center_crop", {"area": 0.6}), ("rotate", {"angle": 12.0})]
ASSISTED_ATTACKS = [
    ("rotate", {"angle": 45.0, "expand": True}),
    ("perspective", {"distortion": 0.2, "corners": [1, -1, -1, 1, 1, 1, -1, -1]}),
    ("random_crop", {"area": 0.25, "x": 0.3, "y": 0.6}),
    ("jpeg", {"quality": 50}),
]
_INDEX: list[str] = []
_MAX_SIDE: list[int] = [0]


def _one(path: str) -> list[tuple[str, float]]:
    import cv2

    from tracemark import attacks, watermark
    from tracemark.imageio import load_image

    cv2.setNumThreads(1)
    wm = watermark.get_method("lattice")
    img = load_image(path)
    if _MAX_SIDE[0] and max(img.shape[:2]) > _MAX_SIDE[0]:
        from tracemark.bench.watermark import prepare_image

        img = prepare_image(img, max_side=_MAX_SIDE[0])
    out = [("clean", wm.detect(img, KEY).p_value)]
    for name, params in ATTACKS:
        out.append((f"clean+{name}", wm.detect(attacks.apply_attack(img, name, **params), KEY).p_value))
    # another key's mark: the same mark as embed writes (its read-back check is skipped
    # here, it only costs time)
    marked = watermark.get_method("lattice", verify=False).embed(img, zlib.crc32(path.encode()), OTHER)
    for a in OTHER_KEY_ATTACKS:
        im = marked if a is None else attacks.apply_attack(marked, a[0], **a[1])
        out.append(("other-key" + ("" if a is None else f"+{a[0]}"), wm.detect(im, KEY).p_value))
    if _INDEX and path in _INDEX[1:]:
        from tracemark.copydetect import CopyIndex
        from tracemark.copydetect.assist import detect_assisted

        with CopyIndex.open(_INDEX[0], read_only=True) as ci:
            for name, params in ASSISTED_ATTACKS:
                copy = attacks.apply_attack(img, name, **params)
                det = detect_assisted(lambda im, a: wm.detect(im, KEY, alpha=a), copy,
                                      lambda im: ci.search(im, k=3))
                out.append((f"assisted+{name}", det.p_value))
    return out


def _init(index: str | None, assisted: list[str], max_side: int = 0) -> None:
    _MAX_SIDE[0] = max_side
    if index is not None:
        _INDEX[:] = [index, *assisted]


def _build_index(paths: list[str], folder: Path, max_side: int) -> str:
    from tracemark.bench.watermark import prepare_image
    from tracemark.copydetect import CopyIndex
    from tracemark.imageio import load_image

    def image(p: str) -> np.ndarray:
        img = load_image(p)
        return prepare_image(img, max_side=max_side) if max_side and max(img.shape[:2]) > max_side else img

    print(f"registering {len(paths)} unmarked images ...", file=sys.stderr, flush=True)
    with CopyIndex.create(folder / "index") as ci:
        for i in range(0, len(paths), 32):
            ci.add_many([(image(p), {"source": p}) for p in paths[i : i + 32]])
            ci.commit()
            print(f"  {min(i + 32, len(paths))}/{len(paths)}", file=sys.stderr, flush=True)
    return str(folder / "index")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--no-assisted", action="store_true", help="blind detections only")
    ap.add_argument("--max-side", type=int, default=1024,
                    help="shrink images to this long side first (0: as they are)")
    ap.add_argument("--assisted-limit", type=int, default=100,
                    help="images (evenly spread) whose copies are also read registry-assisted")
    args = ap.parse_args()
    paths = sorted(str(p) for p in CORPUS.rglob("*.jpg"))[: args.limit]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tm-calibration-") as tmp:
        step = max(1, len(paths) // max(1, args.assisted_limit))
        assisted_paths = [] if args.no_assisted else paths[::step][: args.assisted_limit]
        index = None if args.no_assisted else _build_index(assisted_paths, Path(tmp), args.max_side)
        print(f"detecting on {len(paths)} images with {args.workers} workers ...", file=sys.stderr,
              flush=True)
        rows = []
        with ProcessPoolExecutor(args.workers, initializer=_init,
                                 initargs=(index, assisted_paths, args.max_side)) as pool:
            for i, chunk in enumerate(pool.map(_one, paths, chunksize=1), 1):
                rows.extend(chunk)
                if i % 10 == 0 or i == len(paths):
                    print(f"  {i}/{len(paths)} images", file=sys.stderr, flush=True)
    ps = np.array([1.0 if p is None else p for _, p in rows])
    kinds = sorted({k.split("+")[0] for k, _ in rows})
    table = []
    assisted = np.array([k.startswith("assisted") for k, _ in rows])
    for alpha in (1e-2, 1e-3, 1e-4):
        n_below = int(np.sum(ps < alpha))
        a_n = int(assisted.sum())
        a_below = int(np.sum(ps[assisted] < alpha))
        table.append({"alpha": alpha, "n": int(ps.size), "below": n_below, "share": n_below / ps.size,
                      "ok": n_below / ps.size <= alpha, "assisted_n": a_n, "assisted_below": a_below,
                      "by_kind": {k: int(sum(1 for kk, p in rows if kk.split("+")[0] == k and p < alpha)) for k in kinds}})
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": "x86_64, 2 cores",
              "images": len(paths), "detections": int(ps.size),
              "min_p": float(ps.min()), "quantiles": {q: float(np.quantile(ps, q)) for q in (0.001, 0.01, 0.1, 0.5)},
              "rows": table, "command": "python benchmarks/bench_watermark_calibration.py --workers "
              f"{args.workers} --assisted-limit {args.assisted_limit} --max-side {args.max_side}"
              + (f" --limit {args.limit}" if args.limit else "")}
    out = ROOT / "benchmarks" / "results" / "watermark_calibration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Command: `{result['command']}`; {result['date']}; {result['machine']}. "
             f"{result['detections']} detections with the lattice detector on {len(paths)} corpus images: each image "
             f"clean, under {len(ATTACKS)} attacks (unmarked), and marked with another key ({len(OTHER_KEY_ATTACKS)} "
             f"variants), and {int(assisted.sum())} registry-assisted detections of unmarked "
             f"registered images ({len(assisted_paths)} images registered) under {len(ASSISTED_ATTACKS)} attacks (rotation 45 degrees, "
             "perspective 20%, a crop keeping 25%, JPEG 50). Smallest p-value seen: "
             + f"{result['min_p']:.3g}.", "",
             "| alpha | detections (n) | p < alpha | share | of which assisted (n) | assisted p < alpha |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['alpha']:g} | {r['n']} | {r['below']} | {r['share']:.5f} | "
                     f"{r['assisted_n']} | {r['assisted_below']} |")
    from tracemark.bench.report import update_section

    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "watermark-calibration", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
