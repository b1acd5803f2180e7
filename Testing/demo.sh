#!/usr/bin/env bash
# The README's demo command: set up .venv/ if needed, then segment a real CT with the bundled
# liver model. Writes demo-output/example_ct_liver.nii.gz and an overlay PNG; prints the Dice.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/Testing/setup_venv.sh"
cd "$root"
export POLYCL_DATA_DIR="${POLYCL_DATA_DIR:-$root/../shared/data}"  # else the demo downloads its CT
exec .venv/bin/polycl demo -o "${1:-demo-output}"
