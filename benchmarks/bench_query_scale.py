"""Copy-detection query latency against 100k references, verification included, one core.

    .venv/bin/python benchmarks/bench_query_scale.py [--n 100000] [--real 170] [--queries 50]
        [--configs v1:flat,v2:flat,v2:none[:1000000]] [--json F] [--write-docs]

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
from tracemark.copydetect import CopyIndex, MatchConfig  # noqa: E402
from tracemark.copydetect.describe import MAX_SIDE, REFERENCE_WORDS, describe_query  # noqa: E402
from tracemark.copydetect.index import new_reference  # noqa: E402
from tracemark.fingerprint import global_desc, local, words  # noqa: E402
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
    """What ``CopyIndex.add`` stores for one image, and its VLAD rows."""
    ref, _words = new_reference(load_image(path), max_features=config.max_features,
                                source=name, owner="bench")
    return ref, ref.vectors["vlad"]


def synthetic_words(pool: list[words.Words], rng: np.random.Generator) -> bytes:
    """One synthetic reference's words blob: 100 features of each of two distractor images,
    each set rotated (orientation bins shifted) and zoomed (scale bins shifted by -2..2) at
    random, every signature XOR-ed with a random 1-3 bit mask (as ``bench_words_scale.py``)."""
    half = REFERENCE_WORDS // 2
    parts = []
    for src in rng.choice(len(pool), 2, replace=False):
        w = pool[int(src)]
        pick = rng.choice(len(w), min(half, len(w)), replace=False)
        g = w.geometry[pick].astype(np.int64)
        a = ((g >> 4) + int(rng.integers(0, 16))) % 16
        sc = np.clip((g & 15) + int(rng.integers(-2, 3)), 0, 15)
        flips = np.zeros(len(pick), np.uint32)
        for _ in range(3):
            bit = rng.integers(0, 32, len(pick)).astype(np.uint32)
            flips ^= np.where(rng.random(len(pick)) < 0.67, np.uint32(1) << bit, np.uint32(0)).astype(np.uint32)
        parts.append((w.words[pick], w.signatures[pick] ^ flips, ((a << 4) | sc).astype(np.uint8),
                      w.xy[pick]))
    cat = [np.concatenate(x) for x in zip(*parts, strict=True)]
    return words.Words(cat[0], cat[1], cat[2], cat[3], 640, 480).to_bytes()


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
    blob_feats = [local.extract(load_image(p), kind="sift", max_features=global_desc.N_FEATURES,
                                max_side=MAX_SIDE) for p in blob_src]
    blobs = [f.head(config.max_features).to_bytes() for f in blob_feats]
    pool_words = [words.quantize(f) for f in blob_feats if len(f) >= REFERENCE_WORDS]
    rng = np.random.default_rng(args.seed)
    real_rows = np.vstack([v for _, v in described])
    n_rows = len(global_desc.REGIONS)
    vlad = synthetic_vlad(real_rows, args.n * n_rows, rng).reshape(args.n, n_rows, global_desc.DIM)
    hashes = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    specs = CopyIndex.vector_specs()
    specs["vlad"] = VectorSpec("float", global_desc.DIM, index=args.kind)
    path = workdir / "index"
    (workdir / "config.json").write_text(json.dumps({"retrieval": args.retrieval}))
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
                    blobs={"local": blobs[i % len(blobs)],
                           "words": synthetic_words(pool_words, rng)},
                )
                for i in range(start, stop)
            )
    build_s = time.perf_counter() - t0
    del vlad, hashes
    ci = CopyIndex.open(path, config=MatchConfig(retrieval=args.retrieval))
    t0 = time.perf_counter()
    ivf_s = None
    if args.retrieval == "v2":
        ci.inverted_file()  # built from the words blobs and cached beside the index
        ivf_s = time.perf_counter() - t0
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
        "ivf_build_s": ivf_s,
        "calibrate_s": calibrate_s,
    }


def measure(workdir: Path) -> dict:
    """Open the index read-only and time the queries (run in a fresh process)."""
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    queries = json.loads((workdir / "queries.json").read_text())
    retrieval = json.loads((workdir / "config.json").read_text())["retrieval"]
    images = [load_image(q["file"]) for q in queries]
    before = rss_bytes()
    t0 = time.perf_counter()
    ci = CopyIndex.open(workdir / "index", read_only=True, config=MatchConfig(retrieval=retrieval))
    open_s = time.perf_counter() - t0
    rss_open = rss_bytes() - before
    cfg = ci.config
    t0 = time.perf_counter()
    ci.search(images[0], k=10)  # warm-up (v2: loads the inverted file from its cache file)
    warm_s = time.perf_counter() - t0
    rss_warm = rss_bytes() - before
    searchable = ci.index.vector_specs["vlad"].index != "none"
    rows = []
    for q, img in zip(queries, images, strict=True):
        t0 = time.perf_counter()
        d = describe_query(img)
        t1 = time.perf_counter()
        if retrieval == "v2":
            ci.inverted_file().search(d.words, mirror=d.words_mirror, top=cfg.candidates)
            if searchable and cfg.global_candidates:
                ci.index.search("vlad", d.vlad, cfg.global_candidates)
        else:
            ci.index.search("vlad", d.vlad, cfg.candidates)
        ci.index.search("pdq", d.pdq8, 3)
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
    rss_end = rss_bytes() - before
    ci.close()
    return {"open_s": open_s, "rss_delta_bytes": rss_open, "warm_s": warm_s,
            "rss_after_first_search_bytes": rss_warm, "rss_after_queries_bytes": rss_end,
            "queries": rows, "stats": stats}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("extract_ms", "retrieve_ms", "verify_ms", "total_ms"):
        vals = [r[key] for r in rows]
        out[key] = {"median": statistics.median(vals), "p95": float(np.percentile(vals, 95))}
    for key in ("top1", "decision", "in_top10"):
        out[key] = float(np.mean([r[key] for r in rows]))
    return out


def format_markdown(results: list[dict], command: str) -> str:
    """The docs section: one column per configuration (retrieval, ``vlad`` index, size)."""
    first = results[0]

    def row(label: str, cell: object) -> str:
        return f"| {label} | " + " | ".join(cell(r) for r in results) + " |"  # type: ignore[operator]

    def lat(key: str, stat: str) -> object:
        return lambda r: f"{r['summary'][key][stat]:.1f} ms"

    def per_ref(key: str) -> object:
        return lambda r: f"{r[key] / 2**20:,.0f} MiB ({r[key] / r['stats']['count']:,.0f} B/ref)"

    names = {"flat": "VLAD flat", "hnsw": "VLAD HNSW", "none": "VLAD stored only"}
    head = [f"{r['retrieval']}, {names.get(r['float_index'], r['float_index'])}, "
            f"{r['stats']['count']:,} refs" for r in results]
    date = datetime.now(UTC).date().isoformat()
    return "\n".join(
        [
            "## Copy-detection query at scale",
            "",
            "Query latency with verification of the candidates included, index build time, memory "
            "and disk per reference: the previous retrieval (`v1`: VLAD region rows, flat, + PDQ) "
            "beside copy detection v2 (inverted file over visual words + PDQ + 5 VLAD candidates; "
            "with the VLAD rows stored only, inverted file + PDQ).",
            "",
            f"Command: `{command}` ({date}; machine: 2 cores, {platform.machine()}; FAISS "
            f"{faiss.__version__}, everything on one thread).",
            "",
            f"References: {first['n_real']} real corpus images (held-out half) and synthetic ones: six "
            "VLAD region rows from a Gaussian fitted to the real rows, a random PDQ hash, a `local` "
            "blob copied from distractor images (verification does real RANSAC work) and a `words` "
            "blob drawn from real distractor descriptors (two images' features, rotated, zoomed and "
            f"bit-flipped: see `synthetic_words`). {len(first['queries'])} queries: edited copies of "
            "real references (`copydetect-hard` and `disc21-like` entries, alternating), "
            "`CopyIndex.search(k=10)` after a warm-up, in a fresh process that opened the index "
            "read-only. Extraction and retrieval are the steps `search` runs, timed separately; "
            "verification + scoring is the rest of `search`'s time.",
            "",
            "| configuration | " + " | ".join(head) + " |",
            "|---|" + "---:|" * len(results),
            row("build: `Index.add_many` of all references (features precomputed), one commit",
                lambda r: f"{r['build_s']:.1f} s"),
            row("build: inverted file from the `words` blobs (then cached in a file)",
                lambda r: "-" if r.get("ivf_build_s") is None else f"{r['ivf_build_s']:.1f} s"),
            row("feature extraction per real reference",
                lambda r: f"{r['describe_ms_per_real_ref']:.0f} ms"),
            row(f"calibration ({N_BACKGROUND} background images)",
                lambda r: f"{r['calibrate_s']:.1f} s"),
            row("query: feature extraction, median / p95",
                lambda r: f"{r['summary']['extract_ms']['median']:.1f} / {r['summary']['extract_ms']['p95']:.1f} ms"),
            row("query: retrieval, median / p95",
                lambda r: f"{r['summary']['retrieve_ms']['median']:.1f} / {r['summary']['retrieve_ms']['p95']:.1f} ms"),
            row("query: verification + scoring, median / p95",
                lambda r: f"{r['summary']['verify_ms']['median']:.1f} / {r['summary']['verify_ms']['p95']:.1f} ms"),
            row("**query total** (`CopyIndex.search`), median",
                lambda r: f"**{r['summary']['total_ms']['median']:.1f} ms**"),
            row("**query total** (`CopyIndex.search`), p95", lat("total_ms", "p95")),
            row("true reference ranked first", lambda r: f"{r['summary']['top1']:.2f}"),
            row("decided a copy", lambda r: f"{r['summary']['decision']:.2f}"),
            row("in the top 10", lambda r: f"{r['summary']['in_top10']:.2f}"),
            row("open read-only", lambda r: f"{r['open_s']:.1f} s"),
            row("first search (v2: loads the inverted file)", lambda r: f"{r.get('warm_s', 0):.1f} s"),
            row("memory: RSS growth on open", per_ref("rss_delta_bytes")),
            row("memory: RSS growth after the first search",
                lambda r: per_ref("rss_after_first_search_bytes")(r) if "rss_after_first_search_bytes" in r else "-"),
            row("memory: RSS growth after all queries",
                lambda r: per_ref("rss_after_queries_bytes")(r) if "rss_after_queries_bytes" in r else "-"),
            row("disk", lambda r: f"{r['stats']['disk_bytes'] / 2**20:,.0f} MiB "
                f"({r['stats']['disk_bytes'] / r['stats']['count']:,.0f} B/ref)"),
            "",
            "Disk per reference: the `local` blob (SIFT features for verification, "
            f"{first['stats']['blobs']['bytes'] / max(1, first['stats']['blobs']['count']):,.0f} B per blob on "
            "average over `local` and `words`), six VLAD rows (6 KB) and PDQ in SQLite, plus the FAISS "
            "files and the inverted-file cache.",
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
    ap.add_argument("--configs", default="v1:flat,v2:flat,v2:none",
                    help="comma-separated RETRIEVAL:GLOBAL_INDEX[:N] (v1|v2 : flat|hnsw|none "
                         "[: synthetic references, default --n])")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary indexes")
    ap.add_argument("--from-json", type=Path, default=None, help="rewrite the report from --json output")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        md = format_markdown(results, results[0].get("command", "python benchmarks/bench_query_scale.py"))
        if args.write_docs:
            update_section(ROOT / "docs" / "benchmarks.md", "copydetect-scale", md)
        print(md)
        return
    results = []
    for spec in args.configs.split(","):
        retrieval, kind, *n = spec.split(":")
        args.retrieval, args.kind = retrieval, kind
        n_synth = int(n[0]) if n else args.n
        args_n = args.n
        args.n = n_synth
        print(f"{spec}: building {args.n:,} references, then {args.queries} queries ...",
              file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="tracemark-bench-qscale-", dir=args.tmp) as tmp:
            result = build(args, Path(tmp))
            child = subprocess.run(
                [sys.executable, __file__, "--measure", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            measured = json.loads(child.stdout)
        args.n = args_n
        result.update(measured, float_index=kind, retrieval=retrieval,
                      summary=summarise(measured["queries"]))
        results.append(result)
        print(f"{spec}: median {result['summary']['total_ms']['median']:.1f} ms, "
              f"top1 {result['summary']['top1']:.2f}", file=sys.stderr, flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    command = (
        f"python benchmarks/bench_query_scale.py --n {args.n} --real {args.real} "
        f"--queries {args.queries} --configs {args.configs}"
    )
    for r in results:
        r["command"] = command
    md = format_markdown(results, command)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "copydetect-scale", md)
    print(md)


if __name__ == "__main__":
    main()
