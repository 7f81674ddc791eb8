#!/usr/bin/env bash
# Set up .venv with the test extras (and the peers' and benchmark extras, so that every
# registered watermark method is tested) and run the whole test suite (2 workers).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_env.sh" dev,peers,bench,c2pa,service
exec .venv/bin/python -m pytest -n "${TRACEMARK_TEST_WORKERS:-2}" -q "$@"
