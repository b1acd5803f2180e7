#!/usr/bin/env bash
# The web front end's extra (PolyCLSegment/PolyCLSegmentWeb), after Testing/setup_venv.sh:
# trame-slicer and Playwright come from Testing/requirements.txt; this adds slicer-layer-dm, the compiled
# "layer displayable manager" trame-slicer's views and Segment Editor need. Its wheel declares
# slicer-core==5.11.0.*, which would replace the project's slicer-core 5.13 pin, so it is installed
# --no-deps: it loads and runs against slicer-core 5.13.31053.0 (its libraries link by unversioned
# soname; checked by PolyCLSegment/Testing/Python/test_web.py in a real browser).
# With --browser, also installs Debian's Chromium for the browser tests (Testing/setup_browser.sh).
# Idempotent and quiet when everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want="slicer-layer-dm==2.0.0"
pip=(.venv/bin/python -m pip --disable-pip-version-check)
if ! "${pip[@]}" show -q slicer-layer-dm >/dev/null 2>&1 || \
   [ "$("${pip[@]}" show slicer-layer-dm 2>/dev/null | sed -n 's/^Version: //p')" != "${want#*==}" ]; then
  echo "[setup-web] installing $want (--no-deps: keeps slicer-core $("${pip[@]}" show slicer-core 2>/dev/null | sed -n 's/^Version: //p'))" >&2
  "${pip[@]}" install -q --no-deps "$want" 2>&1 | grep -v "is ignored: it is neither" || true
fi
.venv/bin/python -c "import slicer; slicer.vtkMRMLLayerDisplayableManager; import trame_slicer.core" \
  || { echo "[setup-web] trame-slicer does not import on this slicer-core" >&2; exit 1; }
if [ "${1:-}" = "--browser" ]; then
  bash "$root/Testing/setup_browser.sh"
fi
