"""Near-duplicate groups on the shared corpus: ``tracemark dedup`` vs imagededup's hashes.

    .venv/bin/python benchmarks/bench_dedup.py [--originals 100] [--write-docs]

Builds the folder of :mod:`tracemark.bench.dedup` from shared/data/corpus (originals,
edited copies from the ``disc21-like`` suite, exact PNG re-encodes, distractors), runs
tracemark and imagededup's PHash, DHash, WHash and AHash (default thresholds) on the same
files in the same run, on one thread, and writes benchmarks/results/dedup/ (results.json,
report.md) and, with ``--write-docs``, the "dedup" section of docs/benchmarks.md.

imagededup: ``pip install 'tracemark[bench]' && pip install --no-deps imagededup==0.3.3.post2``
(its declared torch/torchvision dependencies serve only its CNN method, not the hashes).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tracemark.bench.dedup import (  # noqa: E402
    METHODS,
    DedupBenchConfig,
    format_markdown,
    run_dedup_bench,
    write_outputs,
)
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import list_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DOC_KEY = "dedup"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--originals", type=int, default=100)
    ap.add_argument("--distractors", type=int, default=None,
                    help="single images besides the originals (default: the rest of the folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dedup")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true",
                    help="also write the section of docs/benchmarks.md")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="rewrite the report from a results.json")
    args = ap.parse_args()

    config = DedupBenchConfig(seed=args.seed, originals=args.originals,
                              distractors=args.distractors, max_side=args.max_side,
                              methods=tuple(m for m in args.methods.split(",") if m))
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        result = run_dedup_bench(list_images(args.images), config, progress=True)
    write_outputs(result, args.out)
    flags = [f"--{k.replace('_', '-')} {v}" for k, v in (
        ("originals", args.originals), ("distractors", args.distractors),
        ("max_side", args.max_side)) if v is not None]
    command = " ".join(["python benchmarks/bench_dedup.py", *flags])
    body = "\n".join([
        "Groups of edited copies and exact duplicates in one folder, tracemark's matcher "
        "against imagededup's perceptual hashes on the same files in the same run.",
        "",
        f"Command: `{command}` (machine: 2 cores, shared with other work during the run; "
        "every method on one thread). Date: " + result["date"][:10] + ".",
        "",
        format_markdown(result, level=3),
    ])
    if args.write_docs:
        update_section(args.docs, DOC_KEY, "## Near-duplicate groups\n\n" + body)
    print(body)


if __name__ == "__main__":
    main()
