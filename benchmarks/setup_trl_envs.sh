#!/usr/bin/env bash
# Create the peer virtual environments the benchmarks compare against (never touches the project's .venv):
#   benchmarks/.venv-trl     latest TRL (GRPOTrainer)
#   benchmarks/.venv-trl112  trl==1.12.0, the last release with PPOTrainer (trl.experimental.ppo)
# Each gets the CPU build of torch first (pinned: an unpinned torch pulls the CUDA build), then TRL and what it needs.
# Usage: bash benchmarks/setup_trl_envs.sh [trl|trl112]...   (default: both). Idempotent: a finished env is kept.
set -euo pipefail
cd "$(dirname "$0")"
TORCH="${TORCH:-torch==2.13.0}"
TRL_LATEST="${TRL_LATEST:-trl==1.16.0}"

make_env() {  # name, trl requirement
  local dir=".venv-$1" req="$2"
  if [[ -f "$dir/.installed" ]]; then echo "$dir: already installed"; return; fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q $TORCH
  "$dir/bin/pip" install -q "$req" psutil
  "$dir/bin/python" -c "import trl, transformers, torch; print('$dir', trl.__version__, transformers.__version__, torch.__version__)"
  touch "$dir/.installed"
}

targets=("$@"); [[ ${#targets[@]} -eq 0 ]] && targets=(trl trl112)
for t in "${targets[@]}"; do
  case "$t" in
    trl) make_env trl "$TRL_LATEST" ;;
    trl112) make_env trl112 "trl==1.12.0" ;;
    *) echo "unknown env $t (allowed: trl, trl112)" >&2; exit 2 ;;
  esac
done
