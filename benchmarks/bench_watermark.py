"""Watermark robustness benchmark: tracemark's lattice against the invisible-watermark peers.

    .venv/bin/python benchmarks/bench_watermark.py [--limit 100] [--workers 1]

Embeds a random payload into each image with every method (peers whose ``peers`` extra is
missing are skipped), attacks the marked and the clean image with every entry of the
suites, detects, and aggregates bit accuracy, exact payload rate and TPR at FPR 1% / 0.1%
(W-Bench's protocol; see :mod:`tracemark.bench.watermark`). Images: ``--limit`` images
evenly spread over the sorted corpus (art and photos mixed), resized to 512x512 like
W-Bench. Writes benchmarks/results/watermark/ (results.json, report.md, csv/ with one CSV per
suite, plots/ with the per-group plots and a WAVES quality-versus-robustness plot per
suite) and, with
``--write-docs``, the "watermark-robustness" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import tracemark.watermark.peers  # noqa: E402, F401  (registers dwtDct, dwtDctSvd, rivaGan)
from tracemark.bench.report import update_section  # noqa: E402
from tracemark.bench.watermark import (  # noqa: E402
    BenchConfig,
    format_markdown,
    list_images,
    run_watermark_bench,
    select_spread,
    write_outputs,
)
from tracemark.watermark import list_methods  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
METHODS = "lattice,dwtDct,dwtDctSvd,rivaGan"
SUITES = (
    "watermark-v2",
    "watermark-robustness",
    "wbench-distortions",
    "waves-distortions",
    "stable-signature",
    "tree-ring",
    "copyrightmeter-classical",
)
DOC_KEY = "watermark-robustness"
DOC_HEADING = "## Watermark robustness"


def _rel(path: Path) -> str:
    """The path as written from the repository root (absolute when outside its parent)."""
    path = path.resolve()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT.parent) else str(path)


def _write_docs(
    args: argparse.Namespace, result: dict, suites: list[str], command: str
) -> None:
    """Write the ``args.doc_key`` section of the docs (appended under :data:`DOC_HEADING`
    when the file has no such section yet)."""
    if args.docs.exists() and f"<!-- BEGIN {args.doc_key} -->" not in args.docs.read_text(
        encoding="utf-8"
    ):
        text = args.docs.read_text(encoding="utf-8").rstrip()
        args.docs.write_text(
            f"{text}\n\n{DOC_HEADING}\n\ntracemark's own watermark against the "
            "invisible-watermark peers under the published attack suites.\n",
            encoding="utf-8",
        )
    body = (
        f"Command: `{command}` (machine: {os.cpu_count()} cores, {result['date']}). "
        f"All suites: `{_rel(args.out / 'report.md')}`; CSVs in `{_rel(args.out / 'csv')}`; "
        f"plots (with the WAVES quality-versus-robustness plot `<suite>_waves.png`) in "
        f"`{_rel(args.out / 'plots')}`.\n\n"
        + format_markdown(result, suites=suites, level=3)
    )
    update_section(args.docs, args.doc_key, body)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--methods", default=METHODS, help="comma-separated (default: %(default)s)")
    ap.add_argument("--suite", action="append", dest="suites", help="repeatable (default: all seven)")
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--resize", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "watermark")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--doc-key", default=DOC_KEY, help="the docs section to write (default: %(default)s)")
    ap.add_argument(
        "--from-results",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: rewrite the report, CSVs, plots (and with --write-docs the docs "
        "section) from a results.json that an earlier run wrote (its command is kept)",
    )
    args = ap.parse_args()

    if args.from_results is not None:
        import json

        result = json.loads(args.from_results.read_text(encoding="utf-8"))
        write_outputs(result, args.out, plots=not args.no_plots)
        if args.write_docs:
            _write_docs(args, result, [s["name"] for s in result["suites"]], result["command"])
        print(f"rewrote the outputs in {_rel(args.out)} from {_rel(args.from_results)}", file=sys.stderr)
        return

    suites = args.suites or list(SUITES)
    known = set(list_methods())
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in known:
            print(f"skipped {m}: not a registered watermark method", file=sys.stderr)
    methods = [m for m in methods if m in known]
    paths = select_spread(list_images(args.images), args.limit)
    config = BenchConfig(seed=args.seed, resize=args.resize, workers=args.workers)
    result = run_watermark_bench(
        paths, methods, suites, config=config, root=args.images, progress=True
    )
    command = (
        f"python benchmarks/bench_watermark.py --methods {','.join(methods)} "
        + " ".join(f"--suite {s}" for s in suites)
        + f" --images {_rel(args.images)} --limit {args.limit} --resize {args.resize}"
        f" --seed {args.seed} --workers {args.workers}"
    )
    result["command"] = command
    write_outputs(result, args.out, plots=not args.no_plots)
    for s in result["skipped_methods"]:
        print(f"skipped {s['method']}: {s['reason']}", file=sys.stderr)
    if args.write_docs:
        _write_docs(args, result, suites, command)
    summ = result["summary"]
    print(
        f"{summ['n_detections']} detections on {summ['n_images']} images in {summ['elapsed_s']:.0f} s, "
        f"{summ['n_errors']} error records; results in {_rel(args.out)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
