"""Small files that decode to huge images: peak memory and time per operation.

    .venv/bin/python benchmarks/bench_bombs.py [--only png-1bit,strip] [--ops load,embed]
                                               [--workdir DIR] [--write-docs]

Generates "bombs" that every limit accepts (under the loader's default of 100 Mpx), each
small on disk: a 1-bit PNG of 9999 x 9999, a complete flat-colour JPEG of 9000 x 9000, a
16-bit grey PNG of 9999 x 9999, an RGB PNG strip of 100000 x 900, an RGBA PNG of
9000 x 9000 (the alpha path), and a JPEG whose 2 KB hold only the header of a
9000 x 9000 image (refused: its data ends early). Each operation runs on each file in a
fresh process, started by a small watcher process whose ``RUSAGE_CHILDREN`` maximum
resident set size is the operation's peak memory (imports included); wall time is that
of the whole process (imports included, about 1 s).

Operations: ``load`` (``load_image``), ``embed`` (``get_method("lattice").embed`` on
the loaded image), ``embed-cli`` (``tracemark watermark embed``: load, embed, write PNG,
read back for the PSNR), ``index-add`` (``tracemark index add`` into a new collection),
``sign`` (``tracemark sign`` to PNG with a development certificate from ``tracemark
certs init``, into a new store). An operation that refuses the file (a typed error, exit
code 1 or 3 from the commands) is reported as such, with its memory and time.

With ``--write-docs`` writes the "bombs" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from tracemark.bench.report import update_section

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "TRACEMARK_BENCH_PASSPHRASE"


# --- the bombs ----------------------------------------------------------------------------


def _png_1bit(path: Path) -> None:
    im = Image.new("1", (9999, 9999), 0)
    im.paste(1, (2000, 2000, 8000, 8000))  # a white square: something to mark
    im.save(path, optimize=True)


def _jpeg_flat(path: Path) -> None:
    Image.new("RGB", (9000, 9000), (40, 90, 160)).save(path, quality=50)


def _png_16bit(path: Path) -> None:
    a = np.full((9999, 9999), 30000, np.uint16)
    a[3000:7000, 3000:7000] = 50000
    Image.fromarray(a).save(path)


def _png_strip(path: Path) -> None:
    Image.new("RGB", (100000, 900), (200, 100, 50)).save(path)


def _png_rgba(path: Path) -> None:
    im = Image.new("RGBA", (9000, 9000), (200, 100, 50, 255))
    im.paste((0, 0, 0, 0), (0, 0, 3000, 9000))  # a transparent third
    im.save(path)


def _webp_flat(path: Path) -> None:
    Image.new("RGB", (9000, 9000), (120, 130, 140)).save(path, "WEBP")


def _jpeg_header_only(path: Path) -> None:
    whole = path.with_suffix(".whole.jpg")
    _jpeg_flat(whole)
    path.write_bytes(whole.read_bytes()[:2048])
    whole.unlink()


BOMBS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "png-1bit": ("png", _png_1bit, "1-bit PNG 9999 x 9999"),
    "jpeg-flat": ("jpg", _jpeg_flat, "JPEG 9000 x 9000, flat colour, complete"),
    "png-16bit": ("png", _png_16bit, "16-bit grey PNG 9999 x 9999"),
    "png-strip": ("png", _png_strip, "RGB PNG strip 100000 x 900"),
    "png-rgba": ("png", _png_rgba, "RGBA PNG 9000 x 9000"),
    "webp-flat": ("webp", _webp_flat, "WebP 9000 x 9000, flat colour (lossy)"),
    "jpeg-header": ("jpg", _jpeg_header_only, "JPEG header of 9000 x 9000, data cut at 2 KB"),
}


# --- the operations -------------------------------------------------------------------------

_LOAD = "from tracemark.imageio import load_image; load_image({path!r})"
_EMBED = ("from tracemark.imageio import load_image; from tracemark.watermark import get_method;"
          " get_method('lattice').embed(load_image({path!r}), 0xC0FFEE, 'bench passphrase 0123')")
_CLI = "import sys; from tracemark.cli import main; sys.argv[0] = 'tracemark'; sys.exit(main())"


def _command(op: str, path: Path, work: Path, certs: Path) -> list[str]:
    py = sys.executable
    out = work / f"{op}-{path.stem}"
    if op == "load":
        return [py, "-c", _LOAD.format(path=str(path))]
    if op == "embed":
        return [py, "-c", _EMBED.format(path=str(path))]
    if op == "embed-cli":
        return [py, "-c", _CLI, "watermark", "embed", str(path), "--out", str(out), "--payload",
                "0xC0FFEE", "--passphrase-env", KEY_ENV, "--format", "png"]
    if op == "embed-cli-webp":  # WebP output: libwebp's encoder and Pillow's RGBA copy
        return [py, "-c", _CLI, "watermark", "embed", str(path), "--out", str(out), "--payload",
                "0xC0FFEE", "--passphrase-env", KEY_ENV, "--format", "webp"]
    if op == "attack":  # a photometric-free suite: JPEG q50 and a 10-degree rotation
        suite = work / "bomb-suite.json"
        suite.write_text(json.dumps({"name": "bomb", "entries": [
            {"attack": "jpeg", "params": {"quality": 50}},
            {"attack": "rotate", "params": {"angle": 10}}]}))
        return [py, "-c", _CLI, "attack", "--suite", str(suite), str(path), "--out", str(out),
                "--force"]
    if op == "index-add":
        return [py, "-c", _CLI, "index", "add", str(path), "--store", str(out)]
    if op == "sign":
        return [py, "-c", _CLI, "sign", str(path), "--out", str(out / "signed"), "--format",
                "png", "--cert", str(certs / "signer.pem"), "--key", str(certs / "signer.key"),
                "--store", str(out / "store")]
    raise SystemExit(f"unknown operation {op!r}")


OPS = ("load", "embed", "embed-cli", "embed-cli-webp", "index-add", "sign", "attack")


def _watch(cmd: list[str]) -> None:
    """Run ``cmd``; print its exit code, wall time and peak RSS (MiB) as one JSON line."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    err = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    print(json.dumps({"rc": proc.returncode, "wall_s": wall, "peak_mib": peak,
                      "stderr": err[0][:200] if err else ""}))


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, object]:
    """Peak RSS and wall time of ``cmd`` in a fresh process (via a watcher process)."""
    watcher = [sys.executable, __file__, "--_watch", json.dumps(cmd)]
    out = subprocess.run(watcher, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(rows: list[dict[str, object]]) -> str:
    lines = ["| file | size on disk | operation | result | peak RSS (MiB) | wall (s) |",
             "|---|---:|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['kb']:,} KB | {r['op']} | {r['result']} | "
                     f"{r['peak_mib']:.0f} | {r['wall_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(BOMBS), help="bombs to run (comma-separated)")
    ap.add_argument("--ops", default=",".join(OPS), help="operations (comma-separated)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    ap.add_argument("--write-docs", action="store_true",
                    help="also write the section of docs/benchmarks.md")
    ap.add_argument("--_watch", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._watch:
        _watch(json.loads(args._watch))
        return
    names = [n for n in args.only.split(",") if n]
    ops = [o for o in args.ops.split(",") if o]
    for n in names:
        if n not in BOMBS:
            raise SystemExit(f"unknown bomb {n!r}; known: {', '.join(BOMBS)}")
    with tempfile.TemporaryDirectory(prefix="tracemark-bombs-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, KEY_ENV: "bench passphrase 0123",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                              os.environ.get("PYTHONPATH", "")])}
        certs = work / "certs"
        if "sign" in ops and not (certs / "signer.pem").exists():
            subprocess.run([sys.executable, "-c", _CLI, "certs", "init", str(certs)], env=env,
                           check=True, capture_output=True)
        rows: list[dict[str, object]] = []
        for name in names:
            suffix, make, what = BOMBS[name]
            path = work / f"{name}.{suffix}"
            if not path.exists():
                print(f"making {name} ...", file=sys.stderr, flush=True)
                make(path)
            kb = round(path.stat().st_size / 1024)
            for op in ops:
                shutil.rmtree(work / f"{op}-{path.stem}", ignore_errors=True)  # a fresh output
                res = measure(_command(op, path, work, certs), env)
                result = "ok" if res["rc"] == 0 else f"refused (exit {res['rc']})"
                row = {"bomb": name, "what": what, "kb": kb, "op": op, "result": result, **res}
                rows.append(row)
                print(f"{name:12s} {op:10s} {result:18s} peak {res['peak_mib']:6.0f} MiB "
                      f"{res['wall_s']:6.1f} s  {res['stderr']}", file=sys.stderr, flush=True)
    table = _table(rows)
    print(table)
    if args.write_docs:
        cmd = "python benchmarks/bench_bombs.py" + (f" --only {args.only}" if args.only !=
                                                     ",".join(BOMBS) else "")
        body = (
            "## Decompression bombs under the limit: peak memory and time\n\n"
            f"`{cmd}` on {datetime.now(UTC).date()} ({platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}). "
            "Each operation on each file in a fresh process; peak RSS includes the imports "
            "(about 150 MiB for the commands). The documented bound (docs/watermark.md, "
            "*Large images*) is 1.5 GiB at the default 100 Mpx limit; it does **not** hold "
            "for WebP output (`embed-cli-webp`: Pillow's WebP encoder) nor for `tracemark "
            "attack` (see the rows and docs/watermark.md).\n\n" + table + "\n"
        )
        update_section(ROOT / "docs" / "benchmarks.md", "bombs", body)
        print("wrote docs/benchmarks.md (bombs)", file=sys.stderr)


if __name__ == "__main__":
    main()
