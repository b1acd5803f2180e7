#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv/ in the repository root and install
# every dependency from Testing/requirements.txt, sam2 and polycl-core (editable).
# Re-running is cheap: nothing is reinstalled unless Testing/requirements.txt or pyproject changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${POLYCL_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
stamp=".venv/.polycl-installed"
want="$(cat Testing/requirements.txt PolyCLCore/pyproject.toml PolyCLCore/src/polycl/requirements/*.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $python" >&2
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
echo "[setup] installing pinned dependencies (first time: a few minutes, ~6 GB with torch)" >&2
"${pip[@]}" install -q -r Testing/requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
"${pip[@]}" show -q torch >/dev/null 2>&1 || { echo "[setup] torch failed to install" >&2; exit 1; }
if ! "${pip[@]}" show -q sam2 >/dev/null 2>&1; then
  echo "[setup] building sam2 1.1.0 (CPU, no CUDA extension)" >&2
  SAM2_BUILD_CUDA=0 "${pip[@]}" install -q --no-build-isolation sam2==1.1.0 2>&1 | grep -v "is ignored: it is neither" || true
  "${pip[@]}" show -q sam2 >/dev/null 2>&1 || { echo "[setup] sam2 failed to install" >&2; exit 1; }
fi
"${pip[@]}" install -q --no-deps -e PolyCLCore 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import polycl, torch, monai, SimpleITK, skimage, segment_anything, sam2" \
  || { echo "[setup] import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "[setup] .venv ready" >&2
