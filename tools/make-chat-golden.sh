#!/usr/bin/env bash
# Regenerate tests/fixtures/llama_cpp/chat_golden.json: llama-server's greedy chat answers on
# SmolLM2-135M-Instruct (Q8_0, Q4_K_M) for fixed conversations, with the model's own template.
# Usage: tools/make-chat-golden.sh   (a few minutes; builds the llama.cpp peer if needed)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=$("$here/make-models.sh" | tail -n1)
BIN=$(bash "${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}" | tail -n1)
python3 "$here/chat_golden.py" --bin "$BIN" --models "$DIR" \
  --out "$here/../tests/fixtures/llama_cpp/chat_golden.json" "$@"
