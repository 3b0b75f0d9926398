#!/usr/bin/env bash
# Perplexity of a Hugging Face float folder (e.g. a `--format fake` export) with llama.cpp:
# convert it to an F32 GGUF with our converter, then run llama-perplexity on
# ../shared/data/eval.txt (context 512) with the same chunks for every model.
#
# Usage:  tools/eval-ppl.sh FOLDER [CHUNKS]     (CHUNKS default 24; THREADS env, default 2)
# Prints llama-perplexity's "Final estimate" line.
set -euo pipefail
# llama.cpp's AMX path (repacked weights) crashes on AMX machines here: run it without repacking.
export LLAMA_ARG_REPACK=0
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$1
chunks=${2:-24}
BIN="$root/target/release/autoround-cpu"
LLAMA_BIN=$("$root/../shared/tools/peer-llama-cpp.sh" 2>/dev/null | tail -n1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" convert -m "$dir" --to gguf --outtype f32 -o "$tmp/model.gguf" >/dev/null 2>&1
"$LLAMA_BIN/llama-perplexity" -m "$tmp/model.gguf" -f "$root/../shared/data/eval.txt" \
  -c 512 --chunks "$chunks" -t "${THREADS:-2}" 2>&1 | grep -E "Final estimate"
