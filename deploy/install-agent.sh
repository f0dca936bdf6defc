#!/bin/sh
# Installs the edgebench agent on this machine (a Raspberry Pi, a Jetson, a laptop) from
# the wheel its coordinator serves, enrolls it, and installs it as a systemd service
# where systemd runs. Safe to run again: the venv is reused, the wheel upgraded, an
# enrolled agent is not enrolled again.
set -eu

usage() {
  cat <<'USAGE'
usage: install-agent.sh --coordinator HOST:PORT --token TOKEN [options]

  --coordinator HOST:PORT  the coordinator's agent port (gRPC), e.g. 192.168.1.10:50051
  --token TOKEN            an enrollment token (`edgebench coordinator token create`);
                           not needed when this machine is enrolled already
  --url URL                the coordinator's dashboard, which serves the wheel
                           (default: https://HOST:8080; http:// for one on loopback)
  --ca FILE                the coordinator's CA (`edgebench coordinator ca`), to verify
                           the download over HTTPS
  --name NAME              the device name (default: the host name)
  --user                   a systemd --user unit instead of a system one (no root)
  --extras LIST            pip extras (default: agent,llama)
  --venv DIR               the virtual environment (default: ~/.local/share/edgebench/venv)
  -h, --help               this help

Raspberry Pi OS and JetPack refuse a system-wide pip, so the agent gets a venv of its own.
llama-cpp-python compiles on ARM: install build-essential, cmake and python3-venv first
(sudo apt install build-essential cmake python3-venv); a 512 MB board needs swap for it.
USAGE
}

coordinator="" token="" url="" ca="" name="" user="" extras="agent,llama"
venv="${HOME}/.local/share/edgebench/venv"
while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) coordinator="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --url) url="$2"; shift 2 ;;
    --ca) ca="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --user) user="--user"; shift ;;
    --extras) extras="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-agent.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$coordinator" ] || { echo "install-agent.sh: --coordinator HOST:PORT is required" >&2; exit 2; }
host="${coordinator%:*}"
if [ -z "$url" ]; then
  case "$host" in 127.*|localhost) url="http://$host:8080" ;; *) url="https://$host:8080" ;; esac
fi

echo "platform: $(uname -sm); venv: $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
wheel=$("$py" - "$url" "$ca" <<'PY'
import json, ssl, sys, urllib.request
url, ca = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=ca or None)
with urllib.request.urlopen(url + "/agent/", timeout=30, context=context) as answer:
    print(json.load(answer)["wheel"])
PY
)
echo "installing $wheel from $url"
if [ -n "$ca" ]; then
  "$py" -m pip install --quiet --cert "$ca" --upgrade "edgebench[$extras] @ $url/agent/$wheel"
else
  "$py" -m pip install --quiet --upgrade "edgebench[$extras] @ $url/agent/$wheel"
fi
edgebench() { "$py" -m edgebench "$@"; }

if edgebench agent status --json | grep -q '"enrolled": true'; then
  echo "enrolled already"
else
  [ -n "$token" ] || { echo "install-agent.sh: not enrolled yet: give --token" >&2; exit 2; }
  set -- --coordinator "$coordinator" --token "$token"
  [ -z "$name" ] || set -- "$@" --name "$name"
  edgebench agent enroll "$@"
fi
if command -v systemctl >/dev/null 2>&1 && state=$(systemctl $user is-system-running 2>/dev/null; true) \
    && [ -n "$state" ] && [ "$state" != offline ] && [ "$state" != unknown ]; then
  edgebench agent install $user
else
  echo "service install skipped: no systemd manager runs here; start the agent with:"
  echo "  $py -m edgebench agent run"
fi
