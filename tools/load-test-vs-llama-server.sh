#!/usr/bin/env bash
# Aggregate throughput of `autoround-cpu serve` next to llama-server on the same GGUF file and
# threads, with 1, 4 and 16 concurrent clients (tools/load_test.py: streamed greedy chat
# completions of exactly MAX_TOKENS tokens each; lost requests and garbled streams counted).
# Servers run one at a time, on loopback.
#
# Usage: tools/load-test-vs-llama-server.sh MODEL.gguf
# Env:   THREADS=2  CLIENTS="1 4 16"  REQUESTS=20  MAX_TOKENS=64  CTX=1024 (per sequence)
#        LLAMA_BIN (folder with llama-server; default: tools/peer-llama-cpp-noamx.sh's build, the
#                   speed peer of tools/bench-vs-llama-cpp.sh)
#        AR_BIN (our binary; default target/release/autoround-cpu)
#        AR_ARGS (more arguments for `autoround-cpu serve`, e.g. --repack)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 MODEL.gguf" >&2; exit 2; }
MODEL=$1
THREADS="${THREADS:-2}"; CLIENTS="${CLIENTS:-1 4 16}"; REQUESTS="${REQUESTS:-20}"
MAX_TOKENS="${MAX_TOKENS:-64}"; CTX="${CTX:-1024}"
LB="${LLAMA_BIN:-$("$here/peer-llama-cpp-noamx.sh" | tail -n1)}"
AR="${AR_BIN:-$root/target/release/autoround-cpu}"
read -r -a AR_EXTRA <<< "${AR_ARGS:-}"
PORT=18700
wait_health() {
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0; sleep 0.2; done
  echo "server on $PORT did not come up" >&2; return 1
}
for c in $CLIENTS; do
  # ours: --parallel = clients (continuous batching over all of them)
  "$AR" serve -m "$MODEL" --port $PORT -t "$THREADS" -c "$CTX" --parallel "$c" "${AR_EXTRA[@]}" >/dev/null 2>&1 &
  pid=$!; wait_health
  echo "ours c=$c $(python3 "$here/load_test.py" "http://127.0.0.1:$PORT" --clients "$c" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" || true)"
  kill $pid; wait $pid 2>/dev/null || true
  # llama-server: c slots, each with CTX (its -c is the total), continuous batching (default)
  "$LB/llama-server" -m "$MODEL" --port $PORT -t "$THREADS" -c $((CTX * c)) -np "$c" --jinja >/dev/null 2>&1 &
  pid=$!; wait_health
  echo "llama-server c=$c $(python3 "$here/load_test.py" "http://127.0.0.1:$PORT" --clients "$c" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" || true)"
  kill $pid; wait $pid 2>/dev/null || true
done
