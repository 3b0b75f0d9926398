#!/usr/bin/env bash
# Set up (idempotently) the Python environment that runs llama.cpp's own converter,
# convert_hf_to_gguf.py, the reference for `autoround-cpu convert --to gguf`:
# torch (CPU use only), transformers, sentencepiece, numpy, pyyaml, safetensors, tqdm.
#
# Only PyPI is reachable from our machines, so torch comes from PyPI. Its wheel is tried first
# without the NVIDIA libraries (about 3 GB that a CPU-only conversion never uses); if it cannot
# be imported that way, it is installed again with its full dependencies.
#
# Usage:  tools/convert-venv.sh     # prints the venv's python on the last stdout line
# Env:    CONVERT_VENV (default ~/.cache/autoround-cpu/convert-venv)
set -euo pipefail
VENV="${CONVERT_VENV:-$HOME/.cache/autoround-cpu/convert-venv}"
PY="$VENV/bin/python"
stamp="$VENV/.autoround-ready"
if [ -x "$PY" ] && [ -f "$stamp" ]; then
  echo "[convert-venv] ready: $VENV" >&2
  echo "$PY"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || python3 -m venv "$VENV"
pip=("$PY" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip >&2
# torch's own pure-Python dependencies, then torch without the CUDA wheels.
"${pip[@]}" filelock typing-extensions sympy networkx jinja2 fsspec >&2
"${pip[@]}" --no-deps torch >&2
if ! "$PY" -c 'import torch; torch.zeros(2, dtype=torch.bfloat16).float()' >/dev/null 2>&1; then
  echo "[convert-venv] torch does not import without its CUDA libraries; installing them" >&2
  "${pip[@]}" torch >&2
fi
"${pip[@]}" transformers sentencepiece numpy pyyaml safetensors tqdm protobuf >&2
"$PY" -c 'import torch, transformers, sentencepiece, numpy, yaml; print("[convert-venv] torch", torch.__version__, "transformers", transformers.__version__)' >&2
touch "$stamp"
echo "$PY"
