"""Attack speed benchmark: every registered attack on a 512x512 corpus image, one thread.

    .venv/bin/python benchmarks/bench_attacks.py [--repeats 50]

Writes benchmarks/results/attack_speed.json; with ``--write-docs`` also the "attack-speed"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tracemark.bench.attack_speed import format_markdown, run_attack_speed  # noqa: E402
from tracemark.bench.report import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "corpus" / "photo" / "gcompris_100.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    args = ap.parse_args()
    print(f"timing every attack, {args.repeats} repeats per configuration ...", file=sys.stderr, flush=True)
    result = run_attack_speed(image_path=args.image, size=args.size, repeats=args.repeats)
    result["image"] = str(args.image.relative_to(ROOT.parent)) if args.image.is_relative_to(ROOT.parent) else str(args.image)
    result["command"] = f"python benchmarks/bench_attacks.py --size {args.size} --repeats {args.repeats}"
    out = ROOT / "benchmarks" / "results" / "attack_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = format_markdown(result)
    body = f"Command: `{result['command']}` (machine: 2 cores; timed on one thread).\n\n{md}"
    if args.write_docs:
        update_section(ROOT / "docs" / "benchmarks.md", "attack-speed", body)
    print(md)


if __name__ == "__main__":
    main()
