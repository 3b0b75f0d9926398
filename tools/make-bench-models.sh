#!/usr/bin/env bash
# The GGUF files of the engine's speed comparison (tools/bench-vs-llama-cpp.sh), beside the test
# models in ~/.cache/autoround-cpu/models:
#   SmolLM2-135M-Instruct.Q4_0.gguf        llama-quantize --allow-requantize of the shipped Q4_1
#                                          (F16, Q8_0, Q4_K_M come from tools/make-models.sh)
#   synth-1b.{F16,Q4_0,Q4_K_M,Q6_K,Q8_0}.gguf  the ~1B-parameter Llama-shaped synthetic model
#                                          (tools/make-synthetic-model --preset 1b: hidden 2048,
#                                          ffn 5632, 22 layers; rows are whole K-quant blocks,
#                                          so its Q4_K_M really is Q4_K/Q6_K) and llama-quantize's
#                                          types of it.
# Idempotent; about 8 GB of disk. Env: AUTOROUND_MODELS, PEER_LLAMA_CPP (as make-models.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR=$("$here/make-models.sh" | tail -n1)
PEER="${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}"
BIN=$(bash "$PEER" | tail -n1)
make() { # out, command...
  local out="$1"; shift
  if [ -s "$out" ]; then echo "[bench-models] present: $out" >&2; return; fi
  echo "[bench-models] $out" >&2
  "$@" "$out.tmp" >/dev/null 2>"$DIR/.bench-models.log" || { cat "$DIR/.bench-models.log" >&2; rm -f "$out.tmp"; exit 1; }
  mv "$out.tmp" "$out"
}
make "$DIR/SmolLM2-135M-Instruct.Q4_0.gguf" sh -c \
  "\"$BIN/llama-quantize\" --allow-requantize \"$DIR/SmolLM2-135M-Instruct.Q4_1.gguf\" \"\$0\" Q4_0 2"
make "$DIR/synth-1b.F16.gguf" sh -c \
  "python3 \"$here/make-synthetic-model\" --preset 1b --tokenizer-from \"$DIR/SmolLM2-135M-Instruct.F16.gguf\" -o \"\$0\""
for t in Q4_0 Q4_K_M Q6_K Q8_0; do
  make "$DIR/synth-1b.$t.gguf" sh -c "\"$BIN/llama-quantize\" \"$DIR/synth-1b.F16.gguf\" \"\$0\" $t 2"
done
rm -f "$DIR/.bench-models.log"
echo "$DIR"
