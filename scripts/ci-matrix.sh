#!/usr/bin/env bash
# Run the cross-compile matrix on the example model (CI, and the GitHub workflow template).
#   scripts/ci-matrix.sh [MODEL.onnx] [TARGETS]
# Prints the table, writes matrix.json, and exits non-zero when the matrix fails. Every requested
# target must build and run here; only cuda may be skipped, and only on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-examples/models/cnn.onnx}
TARGETS=${2:-x86,arm,cuda,vta}
[ -f "$MODEL" ] || { echo "shiftc matrix: model $MODEL not found" >&2; exit 2; }
.venv/bin/shiftc targets
ALLOW_SKIP=()
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "ci-matrix: no GPU (nvidia-smi -L failed): cuda may be skipped"
    ALLOW_SKIP=(--allow-skip cuda)
fi
COLUMNS=${COLUMNS:-120} .venv/bin/shiftc matrix "$MODEL" --targets "$TARGETS" "${ALLOW_SKIP[@]}" --json-out matrix.json
