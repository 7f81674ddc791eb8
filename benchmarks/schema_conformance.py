"""Schemathesis, every check, against a real ``tracemark serve``-style uvicorn server.

Starts the service (a temporary data directory, a development CA so that ``sign`` works, a
write key for every collection and one collection, ``fuzz``) on a free port of 127.0.0.1 in
this process, then runs the ``schemathesis run`` CLI on its ``/openapi.json`` with
``--checks all`` (not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, response_headers_conformance, negative_data_rejection,
positive_data_acceptance, use_after_free, ensure_resource_availability, ignored_auth, ...)
and every phase (examples, coverage, fuzzing, stateful: the schema's OpenAPI links),
``--max-examples`` per operation (default 150). schemathesis' own progress and summary are
printed as they come; the last line is this script's summary (operations, failures, wall
seconds, test cases, unique failures, and per OpenAPI link the stateful calls made along it
and how many answered 2xx, read from schemathesis' NDJSON report), for docs/benchmarks.md.
Exit status: schemathesis' (0: no failure).

The hooks in ``tests/_schema_hooks.py`` (``SCHEMATHESIS_HOOKS``) make most ``format: binary``
values real JPEG/PNG/WebP images and most ``{name}`` values the existing collection, so that
register, sign, verify, search, calibrate and byContent succeed and the links are followed to
resources that exist.

    python benchmarks/schema_conformance.py [--max-examples 150] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "schemathesis.toml"
"""The statuses each check expects where the schema cannot describe the content (shared
with tests/test_service_schema.py)."""

HOOKS = CONFIG.with_name("_schema_hooks.py")
"""schemathesis hooks (``SCHEMATHESIS_HOOKS``): real images for ``format: binary`` and the
existing collection for ``{name}`` (shared with tests/test_service_schema.py)."""

COLLECTION = "fuzz"
"""The collection made before the run (the hooks' ``COLLECTION``)."""


def serve(data: Path) -> tuple[int, str, object]:
    """Start the service on a free port; its port, an admin token, and the uvicorn server."""
    import uvicorn

    from tracemark.credentials import init_dev_ca
    from tracemark.service.app import ServiceSettings, create_app

    certs = data / "certs"
    certs.mkdir()
    init_dev_ca(certs)
    app = create_app(ServiceSettings(data_dir=data / "svc", cert=certs / "signer.pem",
                                     key=certs / "signer.key", trust=certs / "ca.pem",
                                     max_upload_bytes=256 * 1024, max_pixels=1_000_000,
                                     request_timeout=30))
    token, _ = app.state.tm.keys.create(scope="write", collections=["*"], name="schema")
    app.state.tm.create(COLLECTION)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    server.thread = thread  # type: ignore[attr-defined]  # joined before the data goes
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    return server.servers[0].sockets[0].getsockname()[1], token, server


def link_name(transition_id: str) -> str:
    """``RemoveImage`` of schemathesis' ``POST /a -> [201] RemoveImage -> DELETE /b``."""
    parts = transition_id.split(" -> ")
    return parts[1].split("] ", 1)[-1] if len(parts) == 3 else transition_id


def tally(report: Path) -> dict[str, object]:
    """What the run's NDJSON report says: test cases sent, the failing (operation, check,
    title), and per OpenAPI link of the schema (``links``; schemathesis' inferred transitions
    apart, ``inferred``) the calls the stateful phase made along it with the value it carried,
    and how many of those answered 2xx (the resource the link names existed)."""
    cases = 0
    failures: set[tuple[str, str, str]] = set()
    links: dict[str, list[int]] = {}
    inferred = [0, 0]
    with report.open(encoding="utf-8") as f:
        for line in f:
            event = json.loads(line).get("ScenarioFinished")
            if event is None:
                continue
            rec = event["recorder"]
            cases += len(rec.get("cases", {}))
            for checks in rec.get("checks", {}).values():
                for c in checks:
                    if c["status"] == "failure":
                        info = c["failure_info"]["failure"]
                        failures.add((info["operation"], c["name"], info["title"]))
            for cid, case in rec.get("cases", {}).items():
                t = case.get("transition")
                if not t or not case.get("is_transition_applied"):
                    continue
                status = rec.get("interactions", {}).get(cid, {}).get("response", {})
                ok = 200 <= (status or {}).get("status_code", 0) < 300
                slot = inferred if t["is_inferred"] else links.setdefault(link_name(t["id"]),
                                                                           [0, 0])
                slot[0] += 1
                slot[1] += ok
    return {"test_cases": cases, "failing_checks": len(failures),
            "failed": sorted(" / ".join(f) for f in failures),
            "links": {k: {"calls": v[0], "2xx": v[1]} for k, v in sorted(links.items())},
            "linked_calls": sum(v[0] for v in links.values()),
            "linked_2xx": sum(v[1] for v in links.values()),
            "inferred_calls": inferred[0], "inferred_2xx": inferred[1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=150)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tm-schema-") as tmp:
        port, token, server = serve(Path(tmp))
        base = f"http://127.0.0.1:{port}"
        report = Path(tmp) / "report.json"
        cmd = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG), "run",
               f"{base}/openapi.json", "--checks", "all",
               "--max-examples", str(args.max_examples), "--workers", str(args.workers),
               "--seed", str(args.seed), "--generation-database", "none",
               "--continue-on-failure",
               "-H", f"Authorization: Bearer {token}",
               "--report", "ndjson", "--report-ndjson-path", str(report)]
        print("$", " ".join(c if "Bearer" not in c else "Authorization: Bearer ***"
                             for c in cmd), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False, cwd=tmp,  # its run cache stays in the temp dir
                            env={**os.environ, "NO_COLOR": "1",
                                                "SCHEMATHESIS_HOOKS": str(HOOKS)}).returncode
        wall = time.perf_counter() - t0
        server.should_exit = True  # type: ignore[attr-defined]
        server.thread.join(60)  # type: ignore[attr-defined]  # its stores commit on shutdown
        summary = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "max_examples": args.max_examples, "exit_status": rc,
                   "wall_seconds": round(wall, 1),
                   **(tally(report) if report.exists() else {})}
        print(json.dumps(summary), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
