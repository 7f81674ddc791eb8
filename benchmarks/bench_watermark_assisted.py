"""Registry-assisted watermark detection against blind detection, on the same copies.

    .venv/bin/python benchmarks/bench_watermark_assisted.py [--limit 40] [--workers 2] [--write-docs]

``--limit`` corpus images (evenly spread, art and photos), resized to 512 x 512 like
W-Bench, are marked with ``lattice`` (payload per image) and registered, marked, in a
copy-detection collection. Each marked image is attacked with geometry that defeats blind
synchronisation (rotation 45 degrees, perspective 20%, a crop keeping 10% of the area, the
image inset at 25% of a larger picture), each alone and followed by JPEG 50, and with the
common edits (JPEG 50, Gaussian noise sigma 0.05, resize 0.5 + JPEG 50). Each copy is read
blind (``lattice.detect``) and registry-assisted (:mod:`tracemark.copydetect.assist`);
the table gives the exact-payload rate at alpha 1e-4 with n. Writes
benchmarks/results/watermark_assisted.json and, with ``--write-docs``, the
"watermark-assisted" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
KEY = b"assisted-benchmark-key-000000001"
_STATE: dict[str, str] = {}


def _perspective(im: np.ndarray, s: float, seed: int) -> np.ndarray:
    import cv2

    h, w = im.shape[:2]
    rng = np.random.default_rng(seed)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = (src + rng.uniform(-s, s, (4, 2)) * np.array([w, h])).astype(np.float32)
    return cv2.warpPerspective(im, cv2.getPerspectiveTransform(src, dst), (w, h))


def _inset(im: np.ndarray, seed: int) -> np.ndarray:
    """The image at 25% of the area of a 2x larger, textured picture, at a random place."""
    import cv2

    h, w = im.shape[:2]
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8), (0, 0), 3)
    y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
    big[y : y + h, x : x + w] = im
    return big


def _crop(im: np.ndarray, area: float, seed: int) -> np.ndarray:
    h, w = im.shape[:2]
    rng = np.random.default_rng(seed)
    ch, cw = int(round(h * area**0.5)), int(round(w * area**0.5))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(im[y : y + ch, x : x + cw])


def _attacks() -> dict[str, object]:
    from tracemark import attacks
    from tracemark.imageio import encode_image, load_image

    def jpeg(im: np.ndarray, q: int = 50) -> np.ndarray:
        return load_image(encode_image(im, "JPEG", quality=q))

    def rot45(im: np.ndarray, s: int) -> np.ndarray:
        return attacks.apply_attack(im, "rotate", angle=45.0)

    def noise(im: np.ndarray, s: int) -> np.ndarray:
        return attacks.apply_attack(im, "gaussian_noise", std=0.05, seed=s)

    geo = {
        "rotation 45": rot45,
        "perspective 20%": lambda im, s: _perspective(im, 0.2, s),
        "crop keeping 10%": lambda im, s: _crop(im, 0.10, s),
        "inset at 25%": _inset,
    }
    out: dict[str, object] = dict(geo)
    for name, fn in geo.items():
        out[f"{name} + JPEG 50"] = lambda im, s, fn=fn: jpeg(fn(im, s))
    out["JPEG 50"] = lambda im, s: jpeg(im)
    out["noise sigma 0.05"] = noise
    out["resize 0.5 + JPEG 50"] = lambda im, s: jpeg(attacks.apply_attack(im, "resize", scale=0.5))
    return out


def _one(task: tuple[int, str]) -> list[dict[str, object]]:
    import cv2

    from tracemark import watermark
    from tracemark.copydetect import CopyIndex
    from tracemark.copydetect.assist import detect_assisted
    from tracemark.imageio import load_image

    cv2.setNumThreads(1)
    i, marked_path = task
    wm = watermark.get_method("lattice")
    marked = load_image(marked_path)
    payload = 1_000_003 * (i + 1)
    rows = []
    with CopyIndex.open(_STATE["index"], read_only=True) as ci:
        for name, fn in _attacks().items():
            copy = fn(marked, i)  # type: ignore[operator]
            blind = wm.detect(copy, KEY)
            t0 = time.perf_counter()
            assisted = detect_assisted(lambda im, a: wm.detect(im, KEY, alpha=a), copy,
                                       lambda im: ci.search(im, k=3))
            rows.append({"image": i, "attack": name,
                         "blind": bool(blind.present and blind.payload_int == payload),
                         "assisted": bool(assisted.present and assisted.payload_int == payload),
                         "route": assisted.details.get("route"),
                         "assisted_ms": round(1000 * (time.perf_counter() - t0), 1)})
    return rows


def _init(index: str) -> None:
    _STATE["index"] = index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    args = ap.parse_args()

    from tracemark import watermark
    from tracemark.bench.report import update_section
    from tracemark.bench.watermark import list_images, prepare_image, select_spread
    from tracemark.copydetect import CopyIndex
    from tracemark.imageio import load_image, save_image

    paths = select_spread(list_images(CORPUS), args.limit)
    wm = watermark.get_method("lattice")
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="tm-assisted-") as tmp:
        folder = Path(tmp)
        tasks = []
        print(f"marking and registering {len(paths)} images ...", file=sys.stderr, flush=True)
        with CopyIndex.create(folder / "index") as ci:
            for i, p in enumerate(paths):
                img = prepare_image(load_image(p), resize=512)
                marked = wm.embed(img, 1_000_003 * (i + 1), KEY)
                out = folder / f"{i}.png"
                save_image(marked, out)
                ci.add(marked, source=p.name)
                tasks.append((i, str(out)))
        print(f"attacking and detecting with {args.workers} workers ...", file=sys.stderr, flush=True)
        rows: list[dict[str, object]] = []
        with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(str(folder / "index"),)) as pool:
            for k, chunk in enumerate(pool.map(_one, tasks), 1):
                rows.extend(chunk)
                if k % 5 == 0 or k == len(tasks):
                    print(f"  {k}/{len(tasks)} images", file=sys.stderr, flush=True)
    names = list(dict.fromkeys(str(r["attack"]) for r in rows))
    table = []
    for name in names:
        sel = [r for r in rows if r["attack"] == name]
        table.append({"attack": name, "n": len(sel),
                      "blind": sum(bool(r["blind"]) for r in sel) / len(sel),
                      "assisted": sum(bool(r["assisted"]) for r in sel) / len(sel),
                      "assisted_ms": float(np.median([float(r["assisted_ms"]) for r in sel]))})
    command = f"python benchmarks/bench_watermark_assisted.py --limit {args.limit} --workers {args.workers}"
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": "x86_64, 2 cores",
              "images": len(paths), "elapsed_s": round(time.time() - t_start, 1), "table": table,
              "rows": rows, "command": command}
    out = ROOT / "benchmarks" / "results" / "watermark_assisted.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Command: `{command}`; {result['date']}; {result['machine']}; {result['elapsed_s']} s. "
             f"{len(paths)} corpus images at 512 x 512, marked with `lattice` and registered (marked) "
             "in a copy-detection collection; each copy read blind and registry-assisted "
             "(exact payload at alpha 1e-4; n copies per row).", "",
             "| attack | n | blind | registry-assisted | assisted median ms |",
             "|---|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['attack']} | {r['n']} | {r['blind']:.2f} | {r['assisted']:.2f} | "
                     f"{r['assisted_ms']:.0f} |")
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "watermark-assisted", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
