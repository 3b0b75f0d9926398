#!/usr/bin/env bash
# Side-by-side numbers for the foundation (information, not a test): for each test model,
#  - perplexity on ../shared/data/eval.txt (-c 512, CHUNKS windows): ours vs llama-perplexity
#    (llama.cpp's value comes from tests/fixtures/llama_cpp/golden.json when CHUNKS=40)
#  - decode speed (64 tokens, greedy) and load time: ours vs llama-completion, same threads,
#    alternating runs, median of REPS
#  - peak RSS of our perplexity run (/usr/bin/time)
# Usage: tools/compare-llama-cpp.sh [MODEL_VARIANT ...]   Env: THREADS (2), CHUNKS (40), REPS (3)
set -euo pipefail
# llama.cpp's AMX path (repacked weights) crashes on AMX machines here: run it without repacking.
export LLAMA_ARG_REPACK=0
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
DIR=$("$here/make-models.sh" | tail -n1)
BIN=$(bash "${PEER_LLAMA_CPP:-$root/../shared/tools/peer-llama-cpp.sh}" | tail -n1)
T="${THREADS:-2}"; CHUNKS="${CHUNKS:-40}"; REPS="${REPS:-3}"
EVAL="$root/../shared/data/eval.txt"
OURS="$root/target/release/autoround-cpu"
(cd "$root" && cargo build --release -q)
PROMPT="The capital of France is"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
variants=("$@"); [ ${#variants[@]} -gt 0 ] || variants=(Q4_1 F16 Q8_0 Q4_K_M)
printf '%-7s %10s %10s %8s | %9s %9s %6s | %8s %8s | %8s\n' model ppl_ours ppl_llama rel% tg_ours tg_llama ratio load_ours load_llama rss_MiB
for v in "${variants[@]}"; do
  m="$DIR/SmolLM2-135M-Instruct.$v.gguf"
  out=$( { /usr/bin/time -f 'RSS %M' "$OURS" perplexity -m "$m" -f "$EVAL" -c 512 --chunks "$CHUNKS" -t "$T"; } 2>&1 )
  ppl=$(echo "$out" | sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p')
  rss=$(echo "$out" | sed -n 's/^RSS \([0-9]*\)/\1/p')
  if [ "$CHUNKS" = 40 ]; then
    ref=$(python3 -c "import json,sys; print(json.load(open('$root/tests/fixtures/llama_cpp/golden.json'))['models']['$v']['perplexity']['final'])")
  else
    ref=$("$BIN/llama-perplexity" -m "$m" -f "$EVAL" -c 512 --chunks "$CHUNKS" -t "$T" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  fi
  tg_o=(); tg_l=(); ld_o=(); ld_l=()
  for _ in $(seq "$REPS"); do
    o=$("$OURS" run -m "$m" -p "$PROMPT" -n 64 --temp 0 --ignore-eos -t "$T" 2>&1 >/dev/null | tail -n1)
    tg_o+=("$(echo "$o" | sed -n 's/.*generated [0-9]* tokens, \([0-9.]*\) t\/s.*/\1/p')")
    ld_o+=("$(echo "$o" | sed -n 's/^load \([0-9.]*\) s.*/\1/p')")
    l=$("$BIN/llama-completion" -m "$m" -p "$PROMPT" -n 64 --temp 0 --ignore-eos -t "$T" -no-cnv --no-warmup 2>&1 </dev/null)
    tg_l+=("$(echo "$l" | sed -n 's/.*eval time = .* runs *( *[0-9.]* ms per token, *\([0-9.]*\) tokens per second).*/\1/p' | tail -n1)")
    ld_l+=("$(echo "$l" | sed -n 's/.*load time = *\([0-9.]*\) ms.*/\1/p' | head -n1 | awk '{print $1/1000}')")
  done
  tgo=$(printf '%s\n' "${tg_o[@]}" | median); tgl=$(printf '%s\n' "${tg_l[@]}" | median)
  ldo=$(printf '%s\n' "${ld_o[@]}" | median); ldl=$(printf '%s\n' "${ld_l[@]}" | median)
  printf '%-7s %10s %10s %8s | %9s %9s %6s | %8s %8s | %8s\n' "$v" "$ppl" "$ref" \
    "$(awk -v a="$ppl" -v b="$ref" 'BEGIN{printf "%.3f", (a-b)/b*100}')" "$tgo" "$tgl" \
    "$(awk -v a="$tgo" -v b="$tgl" 'BEGIN{printf "%.2f", a/b}')" "$ldo" "$ldl" "$((rss / 1024))"
done
