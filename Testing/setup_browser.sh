#!/usr/bin/env bash
# Debian's Chromium for the web front end's end-to-end tests (Playwright drives /usr/bin/chromium;
# no test tool ever downloads a browser of its own). Idempotent: does nothing when it is installed.
# Needs root (CI and the project's machines run as root) or sudo.
set -euo pipefail
browser="${POLYCL_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then
  exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "[setup-browser] $browser missing; run as root: apt-get install -y chromium" >&2; exit 1; }
  sudo=(sudo)
fi
echo "[setup-browser] installing Debian's chromium (once, about a minute)" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null
[ -x "$browser" ] || { echo "[setup-browser] chromium did not install" >&2; exit 1; }
echo "[setup-browser] $("$browser" --version 2>/dev/null | head -1)" >&2
