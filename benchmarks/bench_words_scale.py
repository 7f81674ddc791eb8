"""Copy detection v2 at scale: the inverted file (retrieval) at 100k and 1M references, beside PDQ.

    .venv/bin/python benchmarks/bench_words_scale.py [--n 100000,1000000] [--queries 100]
        [--out benchmarks/results/words-scale] [--write-docs]

References: the held-out half of the corpus (real images, described as ``CopyIndex.add``
does: SIFT, their first 200 features as visual words, PDQ) plus ``n`` synthetic ones. A
synthetic reference is drawn from real descriptors of *distractor* images (the training
half, never queried): 100 features of one distractor image and 100 of another, each set
rotated by its own random angle (orientation bins shifted), zoomed by a random scale
(scale bins shifted by -2..2 half octaves), and every signature XOR-ed with a random 1-3 bit
mask, so synthetic references carry real word co-occurrences and real geometry without
duplicating one image. Each synthetic reference also gets a random 256-bit PDQ hash.

Queries: ``--queries`` edited copies of real references (a ``copydetect-hard`` or
``disc21-like`` entry, alternating, as in ``bench_query_scale.py``). Per query, on one
thread: description (SIFT 1000 on the image at most 400 px, words of the image and its
mirror (the first 500 features), each with its ``--assign`` nearest words, 8 dihedral PDQ hashes), retrieval
in the inverted file (top 25, the candidates
``CopyIndex.search`` verifies), and PDQ retrieval in a FAISS binary flat index over the same
references (8 orientations, top 25). Reported: whether the true reference is among the
candidates (recall of the retrieval stage) and at rank 1, latencies, build time, and the
inverted file's memory. Verification cost per candidate comes from the copy-detection
benchmark (it does not depend on the collection size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import faiss  # noqa: E402
import numpy as np  # noqa: E402

from tracemark.attacks.base import get_attack  # noqa: E402
from tracemark.attacks.suites import derive_seed  # noqa: E402
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import list_images  # noqa: E402
from tracemark.copydetect.describe import (  # noqa: E402
    MAX_SIDE,
    QUERY_ASSIGN,
    QUERY_WORDS,
    REFERENCE_WORDS,
)
from tracemark.copydetect.ivf import InvertedFile  # noqa: E402
from tracemark.fingerprint import global_desc, local, pdq, words  # noqa: E402
from tracemark.imageio import load_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query_scale import make_queries, rss_bytes  # noqa: E402  (one recipe for both)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DOC_KEY = "words-scale"
TOP = 25


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthetic_postings(pool: list[words.Words], n: int, first_id: int, rng: np.random.Generator):
    """Posting arrays of ``n`` synthetic references (see the module docstring)."""
    half = REFERENCE_WORDS // 2
    lens = np.array([len(w) for w in pool])
    ok = np.flatnonzero(lens >= half)
    W = np.concatenate([w.words for w in pool])
    S = np.concatenate([w.signatures for w in pool])
    G = np.concatenate([w.geometry for w in pool])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    out = []
    for c0 in range(0, n, 50_000):
        m = min(n, c0 + 50_000) - c0
        src = rng.choice(ok, (m, 2))
        # 100 random features of each source image
        pick = (rng.random((m, 2, half)) * lens[src][:, :, None]).astype(np.int64)
        idx = (starts[src][:, :, None] + pick).reshape(m, -1)
        wds, sig, geo = W[idx], S[idx], G[idx].astype(np.int64)
        rot = rng.integers(0, 16, (m, 2, 1))
        zoom = rng.integers(-2, 3, (m, 2, 1))
        a = ((geo.reshape(m, 2, half) >> 4) + rot) % 16
        s = np.clip((geo.reshape(m, 2, half) & 15) + zoom, 0, 15)
        geo = ((a << 4) | s).reshape(m, -1).astype(np.uint8)
        flips = np.zeros(idx.shape, np.uint32)
        for _ in range(3):
            bit = rng.integers(0, 32, idx.shape).astype(np.uint32)
            flips ^= np.where(rng.random(idx.shape) < 0.67, np.uint32(1) << bit, np.uint32(0)).astype(np.uint32)
        refs = np.repeat(np.arange(first_id + c0, first_id + c0 + m, dtype=np.uint32), idx.shape[1])
        out.append((refs, wds.ravel(), (sig ^ flips).ravel(), geo.ravel()))
    return [np.concatenate(x) for x in zip(*out, strict=True)]


def run(args: argparse.Namespace) -> dict:
    faiss.omp_set_num_threads(1)
    cv2.setNumThreads(1)
    model = words.default_model()
    images = list_images(args.images)
    held = [p for p in images if not global_desc.in_training_half(p.name)]
    train = [p for p in images if global_desc.in_training_half(p.name)]
    real = [(p, p.relative_to(args.images).as_posix()) for p in held]
    log(f"describing {len(real)} real references")
    t0 = time.perf_counter()
    real_words, real_pdq = [], []
    for p, _ in real:
        rgb = load_image(p)
        f = local.extract(rgb, kind="sift", max_features=global_desc.N_FEATURES, max_side=MAX_SIDE)
        real_words.append(words.quantize(f.head(REFERENCE_WORDS), model))
        real_pdq.append(pdq.pdq_hash(rgb, packed=True)[0])
    describe_ms = 1000 * (time.perf_counter() - t0) / len(real)
    # the target is stated at 512 px: every real reference resized to a 512 px long
    # side, described as CopyIndex.add does (SIFT, VLAD regions, PDQ, words)
    from tracemark.bench.watermark import prepare_image
    from tracemark.copydetect.describe import describe_reference

    at512 = [prepare_image(load_image(p), max_side=512) for p, _ in real[:60]]
    at512 = [cv2.resize(im, (round(im.shape[1] * 512 / max(im.shape[:2])),
                             round(im.shape[0] * 512 / max(im.shape[:2]))),
                        interpolation=cv2.INTER_AREA) if max(im.shape[:2]) != 512 else im
             for im in at512]
    t0 = time.perf_counter()
    for im in at512:
        describe_reference(im)
    describe_512_ms = 1000 * (time.perf_counter() - t0) / len(at512)
    log(f"describing {len(train)} distractor images (synthetic source)")
    pool = [words.quantize(local.extract(load_image(p), kind="sift", max_features=1000,
                                         max_side=MAX_SIDE), model) for p in train]
    queries = make_queries(real, args.queries, [str(p) for p in train], args.seed)
    log(f"describing {len(queries)} queries")
    qdesc: dict[int, list] = {a: [] for a in args.assign}
    for q in queries:
        img = get_attack(q["attack"]).apply(load_image(q["path"]), q["params"])
        for a in args.assign:
            t0 = time.perf_counter()
            f = local.extract(img, kind="sift", max_features=global_desc.N_FEATURES, max_side=MAX_SIDE)
            qw = words.quantize(f.head(QUERY_WORDS), model, assign=a)
            qm = words.quantize(local.mirrored(f.head(QUERY_WORDS)), model, assign=a)
            p8, _ = pdq.pdq_dihedral(img, packed=True)
            qdesc[a].append((qw, qm, p8, 1000 * (time.perf_counter() - t0)))
    name_to_id = {name: i for i, (_, name) in enumerate(real)}
    results = []
    for n in args.n:
        log(f"--- {n:,} synthetic references: generating postings")
        rng = np.random.default_rng(derive_seed(args.seed, "synthetic", n))
        refs_s, w_s, s_s, g_s = synthetic_postings(pool, n, len(real), rng)
        refs_r = np.concatenate([np.full(len(w), i, np.uint32) for i, w in enumerate(real_words)])
        allp = [np.concatenate([refs_r, refs_s]),
                np.concatenate([np.concatenate([w.words for w in real_words]), w_s]),
                np.concatenate([np.concatenate([w.signatures for w in real_words]), s_s]),
                np.concatenate([np.concatenate([w.geometry for w in real_words]), g_s])]
        del refs_s, w_s, s_s, g_s
        log("building the inverted file")
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        ivf = InvertedFile.from_postings(*allp)
        build_s = time.perf_counter() - t0
        del allp
        rss_ivf = rss_bytes() - rss0
        log(f"built in {build_s:.1f} s: {ivf.n_postings:,} postings, {ivf.nbytes() / 2**20:.0f} MiB")
        hashes = np.vstack([np.vstack(real_pdq), rng.integers(0, 256, (n, 32), dtype=np.uint8)])
        pindex = faiss.IndexBinaryFlat(256)
        pindex.add(hashes)
        del hashes
        for a in args.assign:
            rows = []
            for q, (qw, qm, p8, dms) in zip(queries, qdesc[a], strict=True):
                truth = name_to_id[q["source"]]
                t0 = time.perf_counter()
                hits = ivf.search(qw, mirror=qm, top=TOP)
                ivf_ms = 1000 * (time.perf_counter() - t0)
                t0 = time.perf_counter()
                dist, lab = pindex.search(p8, TOP)
                pdq_ms = 1000 * (time.perf_counter() - t0)
                best: dict[int, int] = {}
                for d_row, l_row in zip(dist.tolist(), lab.tolist(), strict=True):
                    for d, lab_ in zip(d_row, l_row, strict=True):
                        if lab_ >= 0 and d < best.get(lab_, 999):
                            best[lab_] = d
                pdq_rank = sorted(best, key=lambda r: (best[r], r))[:TOP]
                ids = [r for r, _ in hits]
                rows.append({
                    "label": q["label"], "describe_ms": dms, "ivf_ms": ivf_ms, "pdq_ms": pdq_ms,
                    "ivf_top1": bool(ids[:1] == [truth]), "ivf_in_candidates": truth in ids,
                    "pdq_top1": bool(pdq_rank[:1] == [truth]), "pdq_in_candidates": truth in pdq_rank,
                    "pdq_distance": best.get(truth),
                })
            def med(k, rows=rows): return statistics.median(r[k] for r in rows)
            def p95(k, rows=rows): return float(np.percentile([r[k] for r in rows], 95))
            res = {
                "n_references": n + len(real), "n_synthetic": n, "n_real": len(real), "assign": a,
                "postings": ivf.n_postings, "ivf_bytes": ivf.nbytes(), "rss_growth_bytes": rss_ivf,
                "build_s": build_s,
                "ivf_in_candidates": float(np.mean([r["ivf_in_candidates"] for r in rows])),
                "ivf_top1": float(np.mean([r["ivf_top1"] for r in rows])),
                "pdq_in_candidates": float(np.mean([r["pdq_in_candidates"] for r in rows])),
                "pdq_top1": float(np.mean([r["pdq_top1"] for r in rows])),
                "pdq_within_31": float(np.mean([(r["pdq_distance"] or 999) <= 31 for r in rows])),
                "describe_ms": {"median": med("describe_ms"), "p95": p95("describe_ms")},
                "ivf_ms": {"median": med("ivf_ms"), "p95": p95("ivf_ms")},
                "pdq_ms": {"median": med("pdq_ms"), "p95": p95("pdq_ms")},
                "queries": rows,
            }
            log(f"{n:,}: ivf candidates {res['ivf_in_candidates']:.3f} top1 {res['ivf_top1']:.3f}; "
                f"ivf {res['ivf_ms']['median']:.1f} ms median; pdq candidates {res['pdq_in_candidates']:.3f}")
            results.append(res)
        del ivf, pindex
    return {"date": datetime.now(UTC).date().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
            "faiss": faiss.__version__, "describe_ms_per_reference": describe_ms,
            "describe_reference_512_ms": describe_512_ms, "queries": len(queries),
            "results": results}


def format_markdown(out: dict, command: str) -> str:
    lines = ["## Copy detection v2 at scale: the inverted file against PDQ", "",
             f"Command: `{command}` ({out['date']}; machine: {out['machine']}; one thread; FAISS {out['faiss']}).",
             "",
             f"Real references: the corpus's held-out half ({out['results'][0]['n_real']}); synthetic ones drawn from "
             "real descriptors of distractor images (see the script's docstring). "
             f"{out['queries']} queries: edited copies of real references (`copydetect-hard` and `disc21-like`, "
             f"alternating). Candidates: the top {TOP} of each method (what `CopyIndex.search` verifies).",
             "", "| references (query multiple assignment) | " + " | ".join(
                 f"{r['n_references']:,} (x{r.get('assign', 1)})" for r in out["results"]) + " |",
             "|---|" + "---:|" * len(out["results"])]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in out["results"]) + " |")

    row("inverted file: true reference among the candidates", lambda r: f"{r['ivf_in_candidates']:.3f}")
    row("inverted file: true reference ranked first", lambda r: f"{r['ivf_top1']:.3f}")
    row("inverted file or PDQ: true reference among the candidates",
        lambda r: f"{np.mean([q['ivf_in_candidates'] or q['pdq_in_candidates'] for q in r['queries']]):.3f}")
    row("PDQ (8 orientations): true reference among the candidates", lambda r: f"{r['pdq_in_candidates']:.3f}")
    row("PDQ: true reference ranked first", lambda r: f"{r['pdq_top1']:.3f}")
    row("PDQ: true reference within distance 31", lambda r: f"{r['pdq_within_31']:.3f}")
    row("inverted file search, median / p95 ms", lambda r: f"{r['ivf_ms']['median']:.1f} / {r['ivf_ms']['p95']:.1f}")
    row("PDQ search (FAISS flat), median / p95 ms", lambda r: f"{r['pdq_ms']['median']:.1f} / {r['pdq_ms']['p95']:.1f}")
    row("query description (SIFT, words + mirror, PDQ x 8), median / p95 ms",
        lambda r: f"{r['describe_ms']['median']:.1f} / {r['describe_ms']['p95']:.1f}")
    row("postings", lambda r: f"{r['postings']:,}")
    row("inverted file in memory", lambda r: f"{r['ivf_bytes'] / 2**20:,.0f} MiB ({r['ivf_bytes'] / r['n_references']:,.0f} B/ref)")
    row("RSS growth while building", lambda r: f"{r['rss_growth_bytes'] / 2**20:,.0f} MiB")
    row("build from posting arrays", lambda r: f"{r['build_s']:.1f} s")
    lines += ["", f"Describing a real reference (SIFT 1000 at <= 400 px, words, PDQ): "
              f"{out['describe_ms_per_reference']:.0f} ms on the corpus's own sizes"
              + (f"; `describe_reference` (as `CopyIndex.add`: SIFT, VLAD regions, PDQ, words) of "
                 f"60 references resized to a 512 px long side: "
                 f"{out['describe_reference_512_ms']:.0f} ms each."
                 if "describe_reference_512_ms" in out else ".")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--n", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--assign", default=str(QUERY_ASSIGN),
                    help="multiple assignment of the query's features, a list (default: the pipeline's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "words-scale")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--from-json", type=Path, default=None)
    args = ap.parse_args()
    args.n = [int(x) for x in args.n.split(",") if x]
    args.assign = [int(x) for x in str(args.assign).split(",") if x]
    command = "python benchmarks/bench_words_scale.py " + " ".join(sys.argv[1:])
    if args.from_json:
        out = json.loads(args.from_json.read_text())
        command = out.get("command", command)
    else:
        out = run(args)
        out["command"] = command
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(out, indent=1))
    md = format_markdown(out, out["command"])
    if not args.from_json:
        (args.out / "report.md").write_text(md)
    print(md)
    if args.write_docs:
        update_section(args.docs, DOC_KEY, md)


if __name__ == "__main__":
    main()
