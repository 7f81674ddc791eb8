"""Copy-detection benchmark on the shared corpus: PDQ, pHash, local features and the pipeline.

    .venv/bin/python benchmarks/bench_copydetect.py [--refs N] [--workers 1] [--local-shortlist N]
        [--methods pdq,phash,local,full_v1,full] [--v2-queries-per-ref 2]

Builds the DISC21-style benchmark of :mod:`tracemark.bench.copydetect` from
shared/data/corpus (references: the half the VLAD model was not trained on; queries: the
version 1 set and the hard kinds of ``copydetect-v2``), runs the methods side by side (the
previous copy detector, ``full_v1``, and the current one, ``full``, on one index) on one thread per process and writes benchmarks/results/copydetect/
(results.json, report.md) and, with ``--write-docs``, the "copydetect" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tracemark.bench.copydetect import (  # noqa: E402
    CopyDetectConfig,
    format_markdown,
    run_copydetect_bench,
    write_outputs,
)
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import list_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DOC_KEY = "copydetect"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--refs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="pdq,phash,local,full_v1,full")
    ap.add_argument("--v2-queries-per-ref", type=int, default=2)
    ap.add_argument("--local-shortlist", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "copydetect")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument(
        "--from-json", type=Path, default=None, help="rewrite the report from a results.json"
    )
    args = ap.parse_args()

    config = CopyDetectConfig(
        seed=args.seed,
        refs=args.refs,
        methods=tuple(m for m in args.methods.split(",") if m),
        local_shortlist=args.local_shortlist,
        workers=args.workers,
        v2_queries_per_ref=args.v2_queries_per_ref,
    )
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        result = run_copydetect_bench(
            list_images(args.images), config=config, root=args.images, progress=True
        )
    write_outputs(result, args.out)
    flags = [
        f"--{k.replace('_', '-')} {v}"
        for k, v in (
            ("refs", args.refs),
            ("local_shortlist", args.local_shortlist),
            ("workers", args.workers),
        )
        if v
    ]
    command = " ".join(["python benchmarks/bench_copydetect.py", *flags])
    body = "\n".join(
        [
            "The full pipeline (`full`) against single-signal baselines on edited copies, edited "
            "non-copies and hard negatives.",
            "",
            f"Command: `{command}` (machine: 2 cores, shared with another benchmark during the "
            "run; each query timed on one thread).",
            "",
            format_markdown(result, level=3),
        ]
    )
    if args.write_docs:
        update_section(args.docs, DOC_KEY, "## Copy detection\n\n" + body)
    print(body)


if __name__ == "__main__":
    main()
