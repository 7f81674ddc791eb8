"""Durable content credentials: sign, strip (JPEG 80, resize 0.5, screenshot-like crop), verify.

    .venv/bin/python benchmarks/bench_credentials.py [--signed 100 --other 100 --unsigned 100]

Runs :mod:`tracemark.bench.credentials` on shared/data/corpus and writes
benchmarks/results/credentials/ (results.json, report.md) and, with ``--write-docs``, the
"credentials" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tracemark.bench.credentials import (  # noqa: E402
    CredentialsBenchConfig,
    format_markdown,
    run_credentials_bench,
)
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import list_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DOC_KEY = "credentials"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--signed", type=int, default=100)
    ap.add_argument("--other", type=int, default=100)
    ap.add_argument("--unsigned", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "credentials")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="rewrite the report from a results.json")
    args = ap.parse_args()
    cfg = CredentialsBenchConfig(signed=args.signed, other=args.other, unsigned=args.unsigned,
                                 seed=args.seed)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        result = run_credentials_bench(list_images(args.images), cfg, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    flags = [f"--{k} {v}" for k, v in (("signed", args.signed), ("other", args.other),
                                        ("unsigned", args.unsigned)) if v != 100]
    command = " ".join(["python benchmarks/bench_credentials.py", *flags])
    report = format_markdown(result, command)
    (args.out / "report.md").write_text(report + "\n")
    body = "\n".join([
        "Sign, strip (re-encode JPEG 80, resize 0.5, screenshot-like crop), verify: how often "
        "the original manifest comes back, and whether an unsigned image or one signed by "
        "another store ever gets one.",
        "",
        report,
    ])
    if args.write_docs:
        update_section(args.docs, DOC_KEY, body)
    print(report)


if __name__ == "__main__":
    main()
