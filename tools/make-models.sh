#!/usr/bin/env bash
# Make the llama.cpp-quantized variants of the test model that tests and fixtures use:
#   SmolLM2-135M-Instruct.{F16,Q8_0,Q4_K_M}.gguf  from the shipped Q4_1 file, with llama-quantize
#   --allow-requantize (llama.cpp built by ../shared/tools/peer-llama-cpp.sh);
#   synthetic-ci.F16.gguf  from tools/make-synthetic-model --preset ci.
# Idempotent: existing files are kept. Writes through a temporary name, then renames.
# Env: AUTOROUND_MODELS (default ~/.cache/autoround-cpu/models), PEER_LLAMA_CPP (path of the peer script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR="${AUTOROUND_MODELS:-$HOME/.cache/autoround-cpu/models}"
PEER="${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}"
SRC=$("$here/fetch-models.sh" | tail -n1)
BIN=$(bash "$PEER" | tail -n1)
for t in F16 Q8_0 Q4_K_M; do
  out="$DIR/SmolLM2-135M-Instruct.$t.gguf"
  if [ -s "$out" ]; then echo "[make-models] present: $out" >&2; continue; fi
  echo "[make-models] llama-quantize --allow-requantize -> $t" >&2
  "$BIN/llama-quantize" --allow-requantize "$SRC" "$out.tmp" "$t" 2 >/dev/null 2>"$DIR/.quantize-$t.log" \
    || { cat "$DIR/.quantize-$t.log" >&2; rm -f "$out.tmp"; exit 1; }
  mv "$out.tmp" "$out"
  rm -f "$DIR/.quantize-$t.log"
done
# The synthetic Llama-shaped model whose rows are whole K-quant blocks (tests/quantize_*).
out="$DIR/synthetic-ci.F16.gguf"
if [ -s "$out" ]; then echo "[make-models] present: $out" >&2
else
  echo "[make-models] make-synthetic-model --preset ci -> $out" >&2
  python3 "$here/make-synthetic-model" --preset ci --tokenizer-from "$DIR/SmolLM2-135M-Instruct.F16.gguf" -o "$out" >/dev/null
fi
echo "$DIR"
