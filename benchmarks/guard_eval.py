"""The generation guard's evaluation (issue 16, item 5): detection per prompt kind, benign
false positives, confusion and latency on benchmarks/data/guard/.

    python benchmarks/guard_eval.py [--split test|dev] [--matchers lexical|lexical,semantic]
        [--threads 1] [--out results.json] [--write-docs]
    python benchmarks/guard_eval.py --baseline names      # a plain name/alias block list

Registers the concepts of the split (dev concepts for tuning, test concepts for the
reported figures) with a screen built by ``--screen MODULE:FACTORY`` (default
``tracemark.guard.screen:Guard``; called as ``FACTORY(concepts, matchers=[...])``,
with ``threads=N`` too when it takes that keyword, and used as ``screen(prompts)``, or ``screen.screen(prompts)``), screens every request
once (:func:`tracemark.bench.guard.run_guard_eval`), prints progress on stderr and the
table on stdout, writes the JSON result with ``--out`` and, only with ``--write-docs``,
a dated section of docs/benchmarks.md (one per split and screen).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "guard"
DEFAULT_SCREEN = "tracemark.guard.screen:Guard"


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", choices=("test", "dev"), default="test")
    ap.add_argument("--matchers", default="lexical,semantic",
                    help="comma-separated matcher names (lexical, semantic)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for numerical libraries and the model (set before import)")
    ap.add_argument("--screen", default=DEFAULT_SCREEN, help="MODULE:FACTORY of the screen")
    ap.add_argument("--baseline", choices=("names",), default=None,
                    help="evaluate a baseline instead of the guard: names = whole name or "
                         "alias in a positive prompt")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true",
                    help="also write this run's section of docs/benchmarks.md")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="report (and --write-docs) a saved result instead of running")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def _build_screen(spec: str, concepts: list, matchers: list[str], threads: int):
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot load the screen {spec!r} ({exc}); "
                         "try --baseline names, or --screen MODULE:FACTORY") from None
    try:
        takes_threads = "threads" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_threads = False
    kwargs = {"matchers": matchers} | ({"threads": threads} if takes_threads else {})
    screen = factory(concepts, **kwargs)
    if hasattr(screen, "calibrate"):  # calibrate before the clock starts
        t0 = time.perf_counter()
        print("calibrating the screen on its benign background...", flush=True)
        screen.calibrate()
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return screen if callable(screen) else screen.screen


def main() -> None:
    args = _args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    from tracemark.bench.guard import (
        format_markdown,
        load_dataset,
        name_lookup_screen,
        run_guard_eval,
    )
    from tracemark.bench.report import update_section

    matchers = [m.strip() for m in args.matchers.split(",") if m.strip()]
    flags = [f"--split {args.split}"]
    if args.baseline:
        flags.append(f"--baseline {args.baseline}")
    else:
        flags.append(f"--matchers {','.join(matchers)}")
        if args.screen != DEFAULT_SCREEN:
            flags.append(f"--screen {args.screen}")
    command = " ".join(["python benchmarks/guard_eval.py", *flags, f"--threads {args.threads}"])
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        dataset = load_dataset(args.data)
        concepts = dataset.concepts_of(args.split)
        if args.baseline == "names":
            screen = name_lookup_screen(concepts)
            meta = {"screen": "baseline: names", "matchers": "names"}
        else:
            screen = _build_screen(args.screen, concepts, matchers, args.threads)
            meta = {"screen": args.screen, "matchers": ",".join(matchers)}
        meta |= {"threads": args.threads, "command": command}
        step = max(1, len(dataset.cases_of(args.split)) // 20)

        def progress(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                print(f"\r{done}/{total} requests", end="\n" if done == total else "",
                      file=sys.stderr, flush=True)

        result = run_guard_eval(screen, dataset, split=args.split, meta=meta,
                                progress=progress)
    report = format_markdown(result, result.get("meta", {}).get("command", command))
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    if args.write_docs:
        meta = result.get("meta", {})
        who = "names" if "baseline" in str(meta.get("screen", "")) else \
            str(meta.get("matchers", "guard")).replace(",", "+")
        key = f"guard-{result['split']}-{who}"
        body = "\n".join([
            f"### Generation guard, {result['split']} split, {who} "
            f"({result['environment']['date'][:10]})",
            "",
            "Prompt screening on the project's evaluation set (benchmarks/data/guard, "
            "invented concepts, CC0): detection rate per prompt kind (flagged with the "
            "expected concept), false positives on benign prompts, latency per request on "
            f"{result.get('meta', {}).get('threads', '?')} thread(s).",
            "",
            report,
        ])
        update_section(args.docs, key, body)


if __name__ == "__main__":
    main()
