#!/usr/bin/env bash
# Installs what building and testing pi0 needs, idempotent. Each component lists its
# Debian packages in tools/deps/*.apt and its PyPI packages in tools/deps/*.pip.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
need=""
for p in $(cat tools/deps/*.apt | sed 's/#.*//'); do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $need
fi
pips=$(cat tools/deps/*.pip | sed 's/#.*//' | xargs)
if [ -n "$pips" ]; then
  python3 -m pip install -q $pips 2>/dev/null || python3 -m pip install -q --break-system-packages $pips
fi
# Packages whose pins would downgrade others (openpi-client pins numpy<2): installed without deps.
nodeps=$(cat tools/deps/*.pip-nodeps 2>/dev/null | sed 's/#.*//' | xargs)
if [ -n "$nodeps" ]; then
  python3 -m pip install -q --no-deps $nodeps 2>/dev/null || python3 -m pip install -q --no-deps --break-system-packages $nodeps
fi
