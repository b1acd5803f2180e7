#!/usr/bin/env bash
# Alias of the installed command (after Testing/setup_venv.sh and Testing/setup_web.sh): polycl-web --data DIR [...]
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/polycl-web" "$@"
