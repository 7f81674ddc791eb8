#!/usr/bin/env bash
# Set up .venv with the test extras (and the peers', benchmark, C2PA, service and HEIF extras, so
# that every registered method and the HTTP service are tested), start a throw-away
# PostgreSQL server for the store tests (Debian's package, installed if missing; see
# scripts/_pg.sh), and run the whole test suite (2 workers).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev,peers,bench,c2pa,service,heif,ray
. scripts/_pg.sh
exec .venv/bin/python -m pytest -n "${TRACEMARK_TEST_WORKERS:-2}" -q "$@"
