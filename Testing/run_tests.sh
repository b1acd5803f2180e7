#!/usr/bin/env bash
# The README's test command: set up .venv/ if needed, then run the whole test suite.
# Real CT comes from POLYCL_DATA_DIR (default ../shared/data); with CI=true, tests that need it
# fail instead of skipping when it is missing. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/Testing/setup_venv.sh"
# the web front end's extra (slicer-layer-dm) and Debian's Chromium for its browser tests
bash "$root/Testing/setup_web.sh" --browser
cd "$root"
export MPLBACKEND=Agg
export POLYCL_DATA_DIR="${POLYCL_DATA_DIR:-$root/../shared/data}"  # the real CT of the tests
paths=()
for d in PolyCLCore/tests PolyCLSegment/Testing/Python; do [ -d "$d" ] && paths+=("$d"); done
exec .venv/bin/python -m pytest -q -ra --durations=30 "${paths[@]}" "$@"
