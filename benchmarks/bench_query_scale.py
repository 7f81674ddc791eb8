"""Copy-detection query latency against 100k references, verification included, one core.

    .venv/bin/python benchmarks/bench_query_scale.py [--n 100000] [--real 170] [--queries 50]
        [--float-index flat,hnsw] [--write-docs]

The index is a :class:`tracemark.copydetect.CopyIndex` (same vector sets and blob as
``CopyIndex.add``): the first ``--real`` references are corpus images of the half the VLAD
model was not trained on, fully described (SIFT, VLAD regions, PDQ); the other ``--n``
are synthetic, added with ``Index.add_many``: six VLAD region rows each, drawn from a
Gaussian fitted to the real references' rows (mean and covariance) and L2-normalised, a
random 256-bit PDQ hash, and a ``local`` blob copied from real *distractor* images (the
training half, never queried), so verifying a synthetic candidate does real RANSAC work
without planting a duplicate of a queried reference. The index is calibrated on 40 other
distractor images.

Queries: ``--queries`` edited copies of real references (one per reference, evenly
spread; a ``copydetect-hard`` or ``disc21-like`` entry, alternating), searched with
``CopyIndex.search(k=10)`` in a fresh process that opened the index read-only. Per query:
feature extraction (SIFT, VLAD with mirror, 8 PDQ hashes: the steps ``search`` runs,
timed separately), retrieval (the two vector-set searches ``search`` runs: ``vlad`` with
``MatchConfig.candidates`` and ``pdq`` with k=3), and verification + scoring (the total
of ``search`` minus the two). Memory: the resident-set growth of opening the index, and
disk. With ``--write-docs`` writes the "copydetect-scale" section of
docs/benchmarks.md.
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

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

from tracemark.attacks.base import SampleContext, get_attack  # noqa: E402
from tracemark.attacks.suites import derive_seed, get_suite  # noqa: E402
from tracemark.bench.copydetect import hard_edits_suite  # noqa: E402
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import list_images  # noqa: E402
from tracemark.copydetect import CopyIndex, MatchConfig, content_hash  # noqa: E402
from tracemark.fingerprint import global_desc, local, pdq  # noqa: E402
from tracemark.imageio import load_image, save_image  # noqa: E402
from tracemark.index import Index, NewReference, VectorSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
N_BLOB_SOURCES = 60
N_BACKGROUND = 40


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items``."""
    if n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def real_reference(path: Path, name: str, config: MatchConfig) -> tuple[NewReference, np.ndarray]:
    """What ``CopyIndex.add`` stores for one image (see ``match.py``), and its VLAD rows."""
    rgb = load_image(path)
    feats = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES)
    vlad = global_desc.describe_features(feats)
    packed, _ = pdq.pdq_hash(rgb, packed=True)
    ref = NewReference(
        content_hash=content_hash(rgb),
        vectors={"pdq": packed[None, :], "vlad": vlad},
        source=name,
        owner="bench",
        blobs={"local": feats.head(config.max_features).to_bytes()},
    )
    return ref, vlad


def synthetic_vlad(real_rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit rows from a Gaussian with the real rows' mean and covariance (float32)."""
    rows = real_rows[np.linalg.norm(real_rows, axis=1) > 0].astype(np.float64)
    mean = rows.mean(axis=0)
    cov = np.cov(rows, rowvar=False) + 1e-6 * np.eye(rows.shape[1])
    chol = np.linalg.cholesky(cov)
    out = np.empty((n, rows.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        z = rng.standard_normal((stop - start, rows.shape[1])) @ chol.T + mean
        out[start:stop] = z / np.linalg.norm(z, axis=1, keepdims=True)
    return out


def make_queries(refs: list[tuple[Path, str]], n: int, pool: list[str], seed: int) -> list[dict]:
    """``n`` edited copies of references (recipes), alternating hard edits and DISC21 draws."""
    hard, disc = hard_edits_suite(), get_suite("disc21-like")
    out = []
    for j, (path, name) in enumerate(spread(refs, n)):
        suite = hard if j % 2 == 0 else disc
        entry = suite.entries[(j // 2) % len(suite)]
        img = load_image(path)
        rec = suite.draw(
            entry, derive_seed(seed, name, entry.label), SampleContext.for_image(img, pool)
        )
        out.append(
            {
                "source": name,
                "path": str(path),
                "label": rec.label,
                "attack": rec.attack,
                "params": rec.params,
            }
        )
    return out


def build(args: argparse.Namespace, workdir: Path) -> dict:
    """Build and calibrate the index; write the queries; return the build measurements."""
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    config = MatchConfig()
    images = list_images(args.images)
    held = [p for p in images if not global_desc.in_training_half(p.name)]
    train = [p for p in images if global_desc.in_training_half(p.name)]
    real = [(p, p.relative_to(args.images).as_posix()) for p in spread(held, args.real)]
    blob_src, background = (
        train[:N_BLOB_SOURCES],
        train[N_BLOB_SOURCES : N_BLOB_SOURCES + N_BACKGROUND],
    )
    pool = [str(p) for p in train[N_BLOB_SOURCES + N_BACKGROUND :]]

    t0 = time.perf_counter()
    described = [real_reference(p, name, config) for p, name in real]
    describe_s = time.perf_counter() - t0
    blobs = [
        local.extract(load_image(p), kind="sift", max_features=global_desc.N_FEATURES)
        .head(config.max_features)
        .to_bytes()
        for p in blob_src
    ]
    rng = np.random.default_rng(args.seed)
    real_rows = np.vstack([v for _, v in described])
    n_rows = len(global_desc.REGIONS)
    vlad = synthetic_vlad(real_rows, args.n * n_rows, rng).reshape(args.n, n_rows, global_desc.DIM)
    hashes = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    specs = CopyIndex.vector_specs()
    specs["vlad"] = VectorSpec("float", global_desc.DIM, index=args.kind)
    path = workdir / "index"
    t0 = time.perf_counter()
    with Index.create(path, vector_specs=specs) as index:
        index.add_many(ref for ref, _ in described)
        for start in range(0, args.n, args.batch):
            stop = min(args.n, start + args.batch)
            index.add_many(
                NewReference(
                    content_hash=f"{i:064x}",
                    vectors={"pdq": hashes[i][None, :], "vlad": vlad[i]},
                    source=f"synthetic/{i}",
                    owner="bench",
                    blobs={"local": blobs[i % len(blobs)]},
                )
                for i in range(start, stop)
            )
    build_s = time.perf_counter() - t0
    del vlad, hashes
    ci = CopyIndex.open(path)
    t0 = time.perf_counter()
    ci.calibrate([load_image(p) for p in background])
    calibrate_s = time.perf_counter() - t0
    ci.close()
    queries = make_queries(real, args.queries, pool, args.seed)
    qdir = workdir / "queries"
    qdir.mkdir()
    for i, q in enumerate(queries):
        img = get_attack(q["attack"]).apply(load_image(q["path"]), q["params"])
        q["file"] = str(qdir / f"{i:03d}.png")
        save_image(img, q["file"])
    (workdir / "queries.json").write_text(json.dumps(queries))
    return {
        "n_real": len(real),
        "n_synthetic": args.n,
        "describe_ms_per_real_ref": 1000 * describe_s / len(real),
        "build_s": build_s,
        "calibrate_s": calibrate_s,
    }


def measure(workdir: Path) -> dict:
    """Open the index read-only and time the queries (run in a fresh process)."""
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    queries = json.loads((workdir / "queries.json").read_text())
    images = [load_image(q["file"]) for q in queries]
    before = rss_bytes()
    t0 = time.perf_counter()
    ci = CopyIndex.open(workdir / "index", read_only=True)
    open_s = time.perf_counter() - t0
    rss_delta = rss_bytes() - before
    cfg = ci.config
    ci.search(images[0], k=10)  # warm-up
    rows = []
    for q, img in zip(queries, images, strict=True):
        t0 = time.perf_counter()
        feats = local.extract(img, kind="sift", max_features=global_desc.N_FEATURES)
        qvlad = global_desc.describe_features(feats, mirror=True)
        pdq8, _ = pdq.pdq_dihedral(img, packed=True)
        t1 = time.perf_counter()
        ci.index.search("vlad", qvlad, cfg.candidates)
        ci.index.search("pdq", pdq8, 3)
        t2 = time.perf_counter()
        matches = ci.search(img, k=10)
        t3 = time.perf_counter()
        extract_ms, retrieve_ms, total_ms = 1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (t3 - t2)
        top = matches[0] if matches else None
        rows.append(
            {
                "label": q["label"],
                "extract_ms": extract_ms,
                "retrieve_ms": retrieve_ms,
                "verify_ms": max(0.0, total_ms - extract_ms - retrieve_ms),
                "total_ms": total_ms,
                "top1": top is not None and top.source == q["source"],
                "decision": top is not None and top.source == q["source"] and top.decision,
                "in_top10": any(m.source == q["source"] for m in matches),
                "verified": len(matches),
            }
        )
    stats = ci.stats()
    ci.close()
    return {"open_s": open_s, "rss_delta_bytes": rss_delta, "queries": rows, "stats": stats}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("extract_ms", "retrieve_ms", "verify_ms", "total_ms"):
        vals = [r[key] for r in rows]
        out[key] = {"median": statistics.median(vals), "p95": float(np.percentile(vals, 95))}
    for key in ("top1", "decision", "in_top10"):
        out[key] = float(np.mean([r[key] for r in rows]))
    return out


def format_markdown(results: list[dict], command: str) -> str:
    """The docs section: one column per ``vlad`` index kind."""
    first = results[0]
    n = first["stats"]["count"]
    kinds = [r["float_index"] for r in results]

    def row(label: str, cell: object) -> str:
        return f"| {label} | " + " | ".join(cell(r) for r in results) + " |"  # type: ignore[operator]

    def lat(key: str, stat: str) -> object:
        return lambda r: f"{r['summary'][key][stat]:.1f} ms"

    date = datetime.now(UTC).date().isoformat()
    names = {"flat": "flat (exact, `CopyIndex` default)", "hnsw": "HNSW (M=32, efSearch 128)"}
    return "\n".join(
        [
            "## Copy-detection query at scale",
            "",
            "Query latency with verification of the top candidates included, index build time and "
            "memory per reference.",
            "",
            f"Command: `{command}` ({date}; machine: 2 cores, {platform.machine()}, shared with another "
            f"benchmark during the run; FAISS {faiss.__version__}, everything on one thread).",
            "",
            f"{n:,} references: {first['n_real']} real corpus images (held-out half) and "
            f"{first['n_synthetic']:,} synthetic ones (six VLAD region rows each from a Gaussian fitted "
            "to the real rows, a random PDQ hash, a `local` blob copied from distractor images so that "
            f"verification does real RANSAC work). {len(first['queries'])} queries: edited copies of "
            "real references (`copydetect-hard` and `disc21-like` entries, alternating), "
            "`CopyIndex.search(k=10)` after a warm-up, in a fresh process that opened the index "
            "read-only. Extraction and retrieval are the steps `search` runs, timed separately; "
            "verification + scoring is the rest of `search`'s time.",
            "",
            "| `vlad` vector set | " + " | ".join(names.get(k, k) for k in kinds) + " |",
            "|---|" + "---:|" * len(kinds),
            row(
                "build: `Index.add_many` of all references (features precomputed), one commit",
                lambda r: f"{r['build_s']:.1f} s",
            ),
            row(
                "feature extraction per real reference (SIFT 1000, VLAD, PDQ)",
                lambda r: f"{r['describe_ms_per_real_ref']:.0f} ms",
            ),
            row(
                f"calibration ({N_BACKGROUND} background images)",
                lambda r: f"{r['calibrate_s']:.1f} s",
            ),
            row("query: feature extraction, median", lat("extract_ms", "median")),
            row("query: feature extraction, p95", lat("extract_ms", "p95")),
            row("query: retrieval (`vlad` + `pdq` searches), median", lat("retrieve_ms", "median")),
            row("query: retrieval (`vlad` + `pdq` searches), p95", lat("retrieve_ms", "p95")),
            row("query: verification + scoring, median", lat("verify_ms", "median")),
            row("query: verification + scoring, p95", lat("verify_ms", "p95")),
            row(
                "**query total** (`CopyIndex.search`), median",
                lambda r: f"**{r['summary']['total_ms']['median']:.1f} ms**",
            ),
            row("**query total** (`CopyIndex.search`), p95", lat("total_ms", "p95")),
            row("true reference ranked first", lambda r: f"{r['summary']['top1']:.2f}"),
            row("decided a copy", lambda r: f"{r['summary']['decision']:.2f}"),
            row("in the top 10", lambda r: f"{r['summary']['in_top10']:.2f}"),
            row("open read-only", lambda r: f"{r['open_s']:.1f} s"),
            row("memory: RSS growth on open", lambda r: f"{r['rss_delta_bytes'] / 2**20:.0f} MiB"),
            row(
                "memory: RSS growth on open, per reference",
                lambda r: f"{r['rss_delta_bytes'] / n:,.0f} B/ref",
            ),
            row("disk", lambda r: f"{r['stats']['disk_bytes'] / 2**20:,.0f} MiB"),
            row("disk, per reference", lambda r: f"{r['stats']['disk_bytes'] / n:,.0f} B/ref"),
            "",
            f"Building 100k real references means extracting their features first: at "
            f"{first['describe_ms_per_real_ref']:.0f} ms per image that is "
            f"{first['describe_ms_per_real_ref'] * 1e5 / 3.6e6:.1f} h on one core (the build row above "
            "excludes it). Memory per reference: six VLAD rows (6 x 1,024 B, plus ids and, for HNSW, "
            "the graph links) and one PDQ row (32 B) held by FAISS; the `local` blob "
            f"({first['stats']['blobs']['bytes'] / max(1, first['stats']['blobs']['count']):,.0f} B "
            "per reference) and the raw vectors stay in SQLite on disk, read per verified candidate.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--n", type=int, default=100_000, help="synthetic references")
    ap.add_argument("--real", type=int, default=170)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float-index", default="flat,hnsw", help="comma-separated: flat, hnsw")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    results = []
    for kind in args.float_index.split(","):
        args.kind = kind
        print(f"{kind}: building {args.n:,} references, then {args.queries} queries ...",
              file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="tracemark-bench-qscale-") as tmp:
            result = build(args, Path(tmp))
            child = subprocess.run(
                [sys.executable, __file__, "--measure", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            measured = json.loads(child.stdout)
        result.update(measured, float_index=kind, summary=summarise(measured["queries"]))
        results.append(result)
    command = (
        f"python benchmarks/bench_query_scale.py --n {args.n} --real {args.real} "
        f"--queries {args.queries} --float-index {args.float_index}"
    )
    md = format_markdown(results, command)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "copydetect-scale", md)
    print(md)


if __name__ == "__main__":
    main()
