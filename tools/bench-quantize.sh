#!/usr/bin/env bash
# Quantizer throughput: llama-quantize and `autoround-cpu quantize --iters 0` on the same input,
# same threads, alternating runs; prints per mixture the median seconds, MB/s of input tensor
# data, and the ratio ours/llama (throughput; > 1 means we are faster). Outputs are checked to be
# byte-identical on every run.
# Usage: tools/bench-quantize.sh MODEL.gguf [MIXTURE...]   (default: q4_0 q8_0 q4_k_m q6_k)
# Env: REPS (default 5), THREADS (default 2), IMATRIX (an imatrix file for both tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MODEL=$1; shift
MIXES=("$@"); [ ${#MIXES[@]} -gt 0 ] || MIXES=(q4_0 q8_0 q4_k_m q6_k)
REPS=${REPS:-5}; T=${THREADS:-2}
BIN=$(bash "${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}" | tail -n1)
OURS="$here/../target/release/autoround-cpu"
[ -x "$OURS" ] || (cd "$here/.." && cargo build --release >&2)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
im=(); [ -n "${IMATRIX:-}" ] && im=(--imatrix "$IMATRIX")
# Input tensor bytes (what both read and convert), from our inspect's data offset and file size.
bytes=$(python3 - "$MODEL" <<'PY'
import sys, gguf
r = gguf.GGUFReader(sys.argv[1])
print(sum(int(t.n_bytes) for t in r.tensors))
PY
)
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
printf "%-8s %10s %10s %10s %10s %8s\n" mixture "llama s" "ours s" "llama MB/s" "ours MB/s" ratio
for m in "${MIXES[@]}"; do
  : >"$TMP/l"; : >"$TMP/o"
  for ((r = 0; r < REPS; r++)); do
    a=$(now); "$BIN/llama-quantize" --allow-requantize "${im[@]}" "$MODEL" "$TMP/l.gguf" "$m" "$T" >/dev/null 2>&1; b=$(now)
    "$OURS" quantize -m "$MODEL" --format "gguf:$m" --iters 0 "${im[@]}" -t "$T" -o "$TMP/o.gguf" --overwrite >/dev/null 2>&1; c=$(now)
    echo "$b - $a" | bc >>"$TMP/l"; echo "$c - $b" | bc >>"$TMP/o"
    cmp -s "$TMP/l.gguf" "$TMP/o.gguf" || { echo "$m: outputs differ" >&2; exit 1; }
  done
  ls=$(median <"$TMP/l"); os=$(median <"$TMP/o")
  printf "%-8s %10.2f %10.2f %10.1f %10.1f %8.2f\n" "$m" "$ls" "$os" \
    "$(echo "$bytes / 1000000 / $ls" | bc -l)" "$(echo "$bytes / 1000000 / $os" | bc -l)" "$(echo "$ls / $os" | bc -l)"
done
