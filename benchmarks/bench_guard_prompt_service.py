"""Time the prompt screen through the HTTP service (in-process TestClient, one worker):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_guard_prompt_service.py \
        [--matchers lexical,semantic] [--requests 300]

Registers the evaluation set's concepts (benchmarks/data/guard, test split) in one
collection through ``POST .../concepts``, times ``POST .../guard/calibrate`` (the
calibration the first prompt request would otherwise make), then ``POST /v1/guard/prompt``
over the split's requests (direct, indirect, misspelled, split, benign; cycled), and prints
one JSON object: calibration seconds, per-request latency p50/p95 (ms, HTTP and JSON
included), and the share flagged per kind.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tracemark.bench.guard import load_dataset

DATA = Path(__file__).parent / "data" / "guard"


def main() -> None:
    from fastapi.testclient import TestClient

    from tracemark.service.app import ServiceSettings, create_app

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matchers", default="lexical")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    data = load_dataset(DATA)
    concepts, cases = data.concepts_of("test"), data.cases_of("test")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(ServiceSettings(data_dir=Path(tmp), max_concurrency=1,
                                         request_timeout=600,
                                         guard_matchers=args.matchers.split(",")))
        token = app.state.tm.keys.create(scope="write", collections=["*"])[0]
        h = {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            client.post("/v1/collections", json={"name": "works"}, headers=h)
            for c in concepts:
                res = client.post("/v1/collections/works/concepts", json=c.to_dict(), headers=h)
                res.raise_for_status()
            t0 = time.perf_counter()
            cal = client.post("/v1/collections/works/guard/calibrate", headers=h)
            cal.raise_for_status()
            cal_s = time.perf_counter() - t0
            ms: list[float] = []
            flagged: dict[str, list[bool]] = {}
            for i in range(args.requests):
                case = cases[i % len(cases)]
                body = {"prompts": [{"text": p.text, "weight": p.weight,
                                     "negative": p.negative} for p in case.prompts.prompts]}
                t0 = time.perf_counter()
                res = client.post("/v1/guard/prompt", json=body, headers=h)
                ms.append((time.perf_counter() - t0) * 1000)
                res.raise_for_status()
                flagged.setdefault(case.kind, []).append(res.json()["flagged"])
    print(json.dumps({
        "matchers": args.matchers, "concepts": len(concepts), "requests": len(ms),
        "calibrate_seconds": round(cal_s, 2), "calibration_size": cal.json()["size"],
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "flagged_share": {k: round(sum(v) / len(v), 3) for k, v in sorted(flagged.items())},
    }))


if __name__ == "__main__":
    main()
