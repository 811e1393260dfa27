#!/usr/bin/env bash
# Run the cross-compile matrix on the example model (CI, and the GitHub workflow template).
#   scripts/ci-matrix.sh [MODEL.onnx] [TARGETS]
# Prints the table, writes matrix.json, and exits non-zero when the matrix fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-examples/models/cnn.onnx}
TARGETS=${2:-x86,arm,cuda}
if [ ! -f "$MODEL" ]; then
  echo "shiftc matrix: SKIPPED, the example model $MODEL is not in this checkout" >&2
  exit 0
fi
.venv/bin/shiftc targets
COLUMNS=${COLUMNS:-120} .venv/bin/shiftc matrix "$MODEL" --targets "$TARGETS" --json-out matrix.json
