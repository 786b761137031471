#!/usr/bin/env bash
# Quick start, line 1: start the demo site (a private broker, the hub with its dashboard, simulated nodes).
# Creates .venv with maskwatch[edge,hub] on first use; extra arguments go to 'maskwatch demo'
# (e.g. --nodes 5 --http 0.0.0.0:8080). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "demo: Python >= 3.11 is needed" >&2; exit 1
fi
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null \
    || echo "demo: could not install mosquitto; using the embedded broker" >&2
fi
"$PY" -c 'import venv, ensurepip' 2>/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq python3-venv >/dev/null; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[edge,hub]"
exec .venv/bin/maskwatch demo "$@"
