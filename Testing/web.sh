#!/usr/bin/env bash
# PolyCL Segment in the browser (issue 12): bash Testing/web.sh --data DIR [--port 8080] [--host 127.0.0.1]
#   [--token T] [--mode pipeline|refine|unet] [--device auto|cpu|cuda] [--engine auto|chain|sam2]
#   [--max-upload-mb 1024] [--finetune-args "--size 128"]  (extra `polycl finetune` options, fixed by the server)
# Sets up .venv/ if needed, then serves the page; open the URL it prints. Defaults: 127.0.0.1 only, no token;
# any other --host needs --token or gets a generated one (printed). Files are read from and saved to --data only;
# Save's files can be downloaded from the page (the same token policy), Fine-tune runs on labelled folders under --data.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/Testing/setup_venv.sh"
bash "$root/Testing/setup_web.sh"
cd "$root/PolyCLSegment"
export PYTHONPATH="$root/PolyCLSegment:$root/Testing${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m PolyCLSegmentWeb "$@"
