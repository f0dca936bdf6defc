#!/usr/bin/env bash
# Sets up and runs the whole test suite on a fresh Debian or Ubuntu machine:
# PostgreSQL's server binaries (the tests start a private server on 127.0.0.1), Chromium
# (the dashboard's browser tests), a virtual environment with every extra, then pytest
# (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if [ -z "${EDGEBENCH_TEST_POSTGRES_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# Debian and Ubuntu ship venv (ensurepip) apart from python3.
python3 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
# The dashboard's browser tests drive Debian's Chromium (Playwright downloads nothing).
[ -n "${EDGEBENCH_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The agent's systemd units are checked with systemd-analyze (no manager is started).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# /metrics is linted with promtool (Debian's prometheus package ships it).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y "${missing[@]}"
fi

python3 -m venv .venv
# torch is pinned to the CPU build the suite is verified with (any torch >= 2.4 works).
.venv/bin/pip install torch==2.13.0 -e '.[agent,coordinator,llama,onnx,hf,postgres,dev]'
exec .venv/bin/python -m pytest "$@"
