#!/usr/bin/env bash
# Regenerate the golden data in tests/fixtures/llama_cpp/ from llama.cpp (the reference peer):
# greedy tokens for three fixed prompts and perplexities on ../shared/data/eval.txt for each test
# model. Tests compare our engine against these files; they never come from our own output.
# Usage: tools/make-golden.sh     (takes ~30 minutes on 2 cores; needs python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=$("$here/make-models.sh" | tail -n1)
BIN=$(bash "${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}" | tail -n1)
python3 "$here/llama_cpp_golden.py" --bin "$BIN" --models "$DIR" \
  --eval "$here/../../shared/data/eval.txt" --out "$here/../tests/fixtures/llama_cpp/golden.json" "$@"
