"""Load benchmark of `tracemark serve` on loopback: search and detect requests per second,
with p50 and p99 latency, at 8 and 64 concurrent clients.

    .venv/bin/python benchmarks/bench_service.py [--seconds 20] [--refs 100] [--concurrency 2]

Starts a real server process (uvicorn, one process, ``--concurrency`` worker threads for the
blocking work) on 127.0.0.1 with a fresh data directory, registers ``--refs`` corpus images
(longest side 512 px) in a collection, then for each endpoint and client count runs
closed-loop clients (asyncio + httpx, each sends its next request when the previous one
answers) for ``--seconds``. Queries: a JPEG-80 copy of a registered image (search) and a
watermarked JPEG-90 image (detect). The load generator runs on the same machine, so client
and server share its cores. Writes benchmarks/results/service/results.json and, with
``--write-docs``, the "service-load" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

from tracemark.bench.report import update_section
from tracemark.bench.watermark import list_images
from tracemark.imageio import encode_image, load_image

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DOC_KEY = "service-load"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fit(rgb: np.ndarray, side: int = 512) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((round(w * s), round(h * s)), Image.BILINEAR))


async def _load(url: str, headers: dict, body: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, headers=headers,
                                          files={"image": ("q.jpg", io.BytesIO(body), "image/jpeg")})
                    code = r.status_code
                except httpx.HTTPError:
                    code = 0
                if code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[code] = errors.get(code, 0) + 1
        t_start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - t_start
    lat = sorted(latencies)
    return {
        "clients": clients, "seconds": round(elapsed, 2), "ok": len(lat), "errors": errors,
        "rps": round(len(lat) / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=CORPUS)
    ap.add_argument("--refs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=2, help="server worker threads")
    ap.add_argument("--clients", default="8,64")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--write-docs", action="store_true", help="also write the section of docs/benchmarks.md")
    args = ap.parse_args()

    from tracemark.service.keys import KeyStore, service_engine

    data = Path(tempfile.mkdtemp(prefix="tm-load-"))
    token, _ = KeyStore(service_engine(data, None)).create(scope="write", collections=["*"])
    h = {"Authorization": f"Bearer {token}"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tracemark.cli import main; main()", "serve", "--store",
         str(data), "--port", str(port), "--concurrency", str(args.concurrency),
         "--timeout", "120"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        httpx.post(f"{base}/collections", json={"name": "load"}, headers=h, timeout=60)
        paths = list_images(args.images)[: args.refs]
        refs = [_fit(load_image(p)) for p in paths]
        t0 = time.perf_counter()
        for rgb in refs:
            r = httpx.post(f"{base}/collections/load/images", headers=h, timeout=120,
                           files={"image": ("r.png", io.BytesIO(encode_image(rgb, "PNG")), "image/png")})
            r.raise_for_status()
        add_s = time.perf_counter() - t0
        search_q = encode_image(refs[len(refs) // 2][16:-16, 16:-16], "JPEG", quality=80)
        r = httpx.post(f"{base}/collections/load/watermark/embed", headers=h, timeout=120,
                       data={"payload": "12345", "format": "png"},
                       files={"image": ("w.png", io.BytesIO(encode_image(refs[0], "PNG")), "image/png")})
        r.raise_for_status()
        detect_q = encode_image(load_image(r.content), "JPEG", quality=90)
        check = httpx.post(f"{base}/collections/load/watermark/detect", headers=h, timeout=120,
                           files={"image": ("q.jpg", io.BytesIO(detect_q), "image/jpeg")}).json()
        runs = []
        for endpoint, body in (("search", search_q), ("watermark/detect", detect_q)):
            for clients in (int(c) for c in args.clients.split(",")):
                res = asyncio.run(_load(f"{base}/collections/load/{endpoint}", h, body, clients,
                                        args.seconds))
                res["endpoint"] = endpoint
                runs.append(res)
                print(json.dumps(res), flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    result = {
        "benchmark": "service-load", "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "refs": len(refs), "add_seconds": round(add_s, 1), "server_threads": args.concurrency,
        "seconds_per_run": args.seconds, "detect_check": check, "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    flags = [f"--{k} {v}" for k, v in (("refs", args.refs), ("seconds", args.seconds),
                                        ("concurrency", args.concurrency))
             if v != {"refs": 100, "seconds": 20.0, "concurrency": 2}[k]]
    command = " ".join(["python benchmarks/bench_service.py", *flags])
    lines = [
        "Sustained search and detect requests per second with p50 and p99 latency at 8 and 64 "
        "concurrent clients, loopback only, bounded in time.",
        "",
        f"Run {result['date']} on {result['machine']} (`{command}`): one `tracemark serve` "
        f"process with {args.concurrency} worker threads for the blocking work; "
        f"{len(refs)} corpus images (longest side 512 px) registered over HTTP in "
        f"{result['add_seconds']} s; closed-loop clients (asyncio + httpx) on the same "
        f"machine, {args.seconds:g} s per row. Search query: a JPEG-80 crop of a registered "
        "image; detect query: a watermarked JPEG-90 image "
        f"(found: {check.get('present')}).",
        "",
        "| endpoint | clients | requests/s | p50 ms | p99 ms | ok | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {r['endpoint']} | {r['clients']} | {r['rps']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['ok']} | {errs} |")
    lines += ["", "Throughput is bounded by the blocking work (SIFT extraction and geometric "
              "verification for search, the lattice detector for detect) on the worker threads; "
              "64 clients queue behind them, so p50 grows with the queue while requests/s stays "
              "flat. The load generator shares the 2 cores with the server."]
    if args.write_docs:
        update_section(args.docs, DOC_KEY, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
