#!/usr/bin/env bash
# Install the Debian packages named on the command line that are not installed yet: idempotent,
# `apt-get update` first, `sudo` when not root. Used by scripts/setup.sh and install-toolchains.sh.
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail
missing=()
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]} == 0)); then echo "apt packages present${*:+: $*}"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
