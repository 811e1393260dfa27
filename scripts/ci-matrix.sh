#!/usr/bin/env bash
# Run the cross-compile matrix on the example model (CI, and the GitHub workflow template).
#   scripts/ci-matrix.sh [MODEL.onnx] [TARGETS]
# Prints the table, writes matrix.json, and exits non-zero when the matrix fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-examples/models/cnn.onnx}
TARGETS=${2:-x86,arm,cuda,vta}
[ -f "$MODEL" ] || { echo "shiftc matrix: model $MODEL not found" >&2; exit 2; }
.venv/bin/shiftc targets
COLUMNS=${COLUMNS:-120} .venv/bin/shiftc matrix "$MODEL" --targets "$TARGETS" --json-out matrix.json
