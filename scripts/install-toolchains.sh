#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that shiftc's targets need (called by scripts/setup.sh).
#
#   scripts/install-toolchains.sh                 x86, arm and vta toolchains
#   scripts/install-toolchains.sh arm cuda        only these targets
#   scripts/install-toolchains.sh --list [T...]   print the packages, install nothing
#
# cuda is installed only when named: Debian's nvidia-cuda-toolkit is large and in non-free (an
# NVIDIA CUDA install that puts nvcc on PATH works just as well). `shiftc targets` shows what is
# still missing and which package provides it.
set -euo pipefail

declare -A PACKAGES=(
  [x86]="g++"                                   # links model libraries
  [arm]="g++-aarch64-linux-gnu qemu-user"       # cross-compiler; runs aarch64 artifacts here
  [cuda]="nvidia-cuda-toolkit g++"              # nvcc (PTX ahead of time); host link
  [vta]="iverilog verilator yosys"              # RTL simulation and synthesis
)
DEFAULT_TARGETS=(x86 arm vta)

list=0
if [[ "${1:-}" == "--list" ]]; then list=1; shift; fi
targets=("$@")
((${#targets[@]})) || targets=("${DEFAULT_TARGETS[@]}")

wanted=()
for t in "${targets[@]}"; do
  [[ -n "${PACKAGES[$t]+x}" ]] || { echo "unknown target '$t'; known: ${!PACKAGES[*]}" >&2; exit 2; }
  for p in ${PACKAGES[$t]}; do wanted+=("$p"); done
done
mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | sort -u)

if ((list)); then printf '%s\n' "${wanted[@]}"; exit 0; fi

missing=()
for p in "${wanted[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# nvcc from an NVIDIA install (not the Debian package) is fine too
if command -v nvcc >/dev/null 2>&1; then
  missing=("${missing[@]/nvidia-cuda-toolkit}")
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sed '/^$/d')
if ((${#missing[@]} == 0)); then echo "toolchains present: ${wanted[*]}"; exit 0; fi

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
