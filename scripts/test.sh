#!/usr/bin/env bash
# Set up .venv with the test extras (and the peers', benchmark, C2PA, service, HEIF, Milvus
# and Ray extras, so that every registered method, the HTTP service and every engine are
# tested), start a throw-away PostgreSQL server (Debian's package, installed if missing;
# scripts/_pg.sh) and a standalone Milvus server (the milvus-server extra;
# scripts/_milvus.sh) for the engine tests, install Debian's Chromium for the page's browser
# test (scripts/_chromium.sh), run the whole test suite (2 workers; the Ray
# tests start and stop their own local cluster), and stop the servers this run started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev,peers,bench,c2pa,service,heif,milvus,milvus-server,ray,guard
tracemark_pg_stop() { :; }
tracemark_milvus_stop() { :; }
trap 'tracemark_milvus_stop; tracemark_pg_stop' EXIT
. scripts/_pg.sh
. scripts/_milvus.sh
. scripts/_chromium.sh
# CI runs every engine test: a server that should be there and is not fails the run
# instead of skipping its tests (TRACEMARK_SKIP_PG / TRACEMARK_SKIP_MILVUS opt out).
[ "${TRACEMARK_SKIP_PG:-0}" = "1" ] || [ -n "${TRACEMARK_TEST_PG_URL:-}" ] || { echo "no PostgreSQL" >&2; exit 1; }
[ "${TRACEMARK_SKIP_MILVUS:-0}" = "1" ] || [ -n "${TRACEMARK_TEST_MILVUS_URL:-}" ] || { echo "no Milvus" >&2; exit 1; }
.venv/bin/python -m pytest -n "${TRACEMARK_TEST_WORKERS:-2}" -q "$@"
