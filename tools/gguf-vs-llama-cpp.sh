#!/usr/bin/env bash
# Quality of tuned GGUF files next to llama.cpp's own quantization of the same float model:
# perplexity and KL divergence against the float model on ../shared/data/eval.txt (context 512,
# the same chunks for every file), all measured by llama-perplexity.
#
# Usage:  tools/gguf-vs-llama-cpp.sh FLOAT_FOLDER TYPE [FILE.gguf ...]
#   FLOAT_FOLDER  the Hugging Face float folder the files were made from
#   TYPE          llama-quantize's type for the peer rows, e.g. Q4_K_M
#   FILE.gguf     our files (e.g. `quantize --format gguf:q4_k_m` outputs)
# Env: CHUNKS (default 24), THREADS (default 2), WORK (a folder to keep the intermediate files).
#
# Rows: llama.cpp TYPE from the F32 GGUF without an importance matrix, and with one made by
# llama-imatrix from ../shared/data/calib.txt (context 512, every chunk), then each FILE.
set -euo pipefail
# llama.cpp's AMX path (repacked weights) crashes on AMX machines here: run it without repacking.
export LLAMA_ARG_REPACK=0
root=$(cd "$(dirname "$0")/.." && pwd)
float=$1
type=$2
shift 2
chunks=${CHUNKS:-24}
threads=${THREADS:-2}
BIN="$root/target/release/autoround-cpu"
LLAMA_BIN=$("$root/../shared/tools/peer-llama-cpp.sh" 2>/dev/null | tail -n1)
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
data="$root/../shared/data"

[ -f "$work/float.gguf" ] || "$BIN" convert -m "$float" --to gguf --outtype f32 -o "$work/float.gguf" >/dev/null 2>&1
if [ ! -f "$work/imatrix.gguf" ]; then
  "$LLAMA_BIN/llama-imatrix" -m "$work/float.gguf" -f "$data/calib.txt" -c 512 -t "$threads" \
    -o "$work/imatrix.gguf" >"$work/imatrix.log" 2>&1
fi
[ -f "$work/lc-$type.gguf" ] || "$LLAMA_BIN/llama-quantize" "$work/float.gguf" "$work/lc-$type.gguf" "$type" "$threads" >"$work/q.log" 2>&1
[ -f "$work/lc-$type-imatrix.gguf" ] || "$LLAMA_BIN/llama-quantize" --imatrix "$work/imatrix.gguf" \
  "$work/float.gguf" "$work/lc-$type-imatrix.gguf" "$type" "$threads" >"$work/qi.log" 2>&1
if [ ! -f "$work/base-$chunks.kld" ]; then
  "$LLAMA_BIN/llama-perplexity" -m "$work/float.gguf" -f "$data/eval.txt" -c 512 --chunks "$chunks" \
    -t "$threads" --kl-divergence-base "$work/base-$chunks.kld" >"$work/base.log" 2>&1
fi
printf '| model | size (MiB) | PPL | PPL(Q)/PPL(float) | mean KLD | same top token |\n|---|---|---|---|---|---|\n'
first=1
for f in "$work/lc-$type.gguf" "$work/lc-$type-imatrix.gguf" "$@"; do
  log="$work/$(basename "$f").kld-$chunks.log"
  # a log newer than its file is reused
  if [ ! -s "$log" ] || [ "$f" -nt "$log" ]; then
    "$LLAMA_BIN/llama-perplexity" -m "$f" --kl-divergence-base "$work/base-$chunks.kld" --kl-divergence \
      -t "$threads" >"$log" 2>&1
  fi
  val() { grep -E "^$1" "$log" | head -n1 | sed -E 's/^[^:]*: *//; s/ +/ /g'; }
  if [ $first = 1 ]; then
    printf '| float (F32) | %s | %s | 1 | 0 | 100 %% |\n' "$(( $(stat -c %s "$work/float.gguf") / 1048576 ))" "$(val 'Mean PPL\(base\) +:')"
    first=0
  fi
  name=$(basename "$f")
  case "$name" in
    lc-$type.gguf) name="llama.cpp $type (no imatrix)" ;;
    lc-$type-imatrix.gguf) name="llama.cpp $type (imatrix)" ;;
  esac
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(( $(stat -c %s "$f") / 1048576 ))" \
    "$(val 'Mean PPL\(Q\) +:')" "$(val 'Mean PPL\(Q\)/PPL\(base\) +:')" "$(val 'Mean +KLD:')" "$(val 'Same top p:')"
done
