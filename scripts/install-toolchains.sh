#!/usr/bin/env bash
# Install the Debian packages of shiftc's targets: the ones `shiftc targets --apt --missing` lists
# (each target declares its tools; a tool already on PATH, e.g. nvcc from an NVIDIA install, needs
# nothing). Needs shiftc installed: scripts/setup.sh runs this after creating .venv.
#
#   scripts/install-toolchains.sh                 x86, arm and vta toolchains (every target but cuda)
#   scripts/install-toolchains.sh arm cuda        only these targets
#   scripts/install-toolchains.sh --list [T...]   print the packages, install nothing
set -euo pipefail
cd "$(dirname "$0")/.."
SHIFTC=${SHIFTC:-.venv/bin/shiftc}

if [[ "${1:-}" == "--list" ]]; then shift; exec "$SHIFTC" targets --apt "$@"; fi
packages=$("$SHIFTC" targets --apt --missing "$@")
if [ -z "$packages" ]; then echo "toolchains present: $("$SHIFTC" targets --apt "$@" | tr '\n' ' ')"; exit 0; fi
# shellcheck disable=SC2086 # one package name per word
exec bash scripts/apt-install.sh $packages
