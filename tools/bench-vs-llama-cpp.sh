#!/usr/bin/env bash
# Speed of our engine against llama.cpp on the same GGUF files and thread counts, alternating
# runs (llama-bench, then `autoround-cpu bench`, REPS times), medians per test, ratio ours/llama.
#
# Usage: tools/bench-vs-llama-cpp.sh FILE.gguf [FILE.gguf ...]
# Env:   THREADS="2 1"  REPS=5  P=512  N=128   (pp<P> and tg<N>, llama-bench's tests)
#        PARALLEL="4 8"  also tg<N>x<S>: S sequences of N tokens decoded together, one token of
#                       each per forward pass (a server with S clients); llama.cpp's side is
#                       llama-batched-bench -npp 1 -ntg N -npl S (its S_TG), ours
#                       `bench -p 0 -n N --parallel S`; both count all S·N tokens
#        LLAMA_BENCH    llama-bench to use (default: tools/peer-llama-cpp-noamx.sh's build: the
#                       native build crashes in its AMX path here unless repacking is off)
#        AR_BIN         our binary (default: target/release/autoround-cpu, built if missing)
#        AR_ARGS        more arguments for `autoround-cpu bench` (e.g. --repack)
#        OUT            folder for the raw jsonl (default: a temporary folder)
# Prints one markdown table; the raw runs stay in $OUT.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 FILE.gguf [FILE.gguf ...]" >&2; exit 2; }
THREADS="${THREADS:-2 1}"; REPS="${REPS:-5}"; P="${P:-512}"; N="${N:-128}"
PARALLEL="${PARALLEL:-}"
LB="${LLAMA_BENCH:-$("$here/peer-llama-cpp-noamx.sh" | tail -n1)/llama-bench}"
LBB="$(dirname "$LB")/llama-batched-bench"
AR="${AR_BIN:-$root/target/release/autoround-cpu}"
if [ -z "${AR_BIN:-}" ]; then (cd "$root" && cargo build --release --quiet); fi
OUT="${OUT:-$(mktemp -d)}"; mkdir -p "$OUT"
read -r -a AR_EXTRA <<< "${AR_ARGS:-}"
for f in "$@"; do [ -f "$f" ] || { echo "no such file: $f" >&2; exit 2; }; done
for f in "$@"; do
  for t in $THREADS; do
    tag="$(basename "$f" .gguf).t$t"
    for i in $(seq "$REPS"); do
      echo "[bench] $tag run $i/$REPS" >&2
      "$LB" -m "$f" -p "$P" -n "$N" -t "$t" -r 1 -o jsonl 2>/dev/null >> "$OUT/$tag.llama.jsonl"
      "$AR" bench -m "$f" -p "$P" -n "$N" -t "$t" -r 1 -o jsonl "${AR_EXTRA[@]}" >> "$OUT/$tag.ours.jsonl"
      for s in $PARALLEL; do
        "$LBB" -m "$f" -c $((s * (N + 1) + 256)) -npp 1 -ntg "$N" -npl "$s" -t "$t" \
          --output-format jsonl 2>/dev/null >> "$OUT/$tag.llama.jsonl"
        "$AR" bench -m "$f" -p 0 -n "$N" --parallel "$s" -t "$t" -r 1 -o jsonl "${AR_EXTRA[@]}" \
          >> "$OUT/$tag.ours.jsonl"
      done
    done
  done
done
python3 - "$OUT" "$@" <<'PY'
import json, os, statistics, sys
out, files = sys.argv[1], sys.argv[2:]
print("| model | threads | test | llama.cpp t/s | ours t/s | ours / llama.cpp |")
print("|---|---:|---|---:|---:|---:|")
for f in files:
    base = os.path.basename(f)[:-5]
    for name in sorted(os.listdir(out)):
        if not (name.startswith(base + ".t") and name.endswith(".llama.jsonl")):
            continue
        tag = name[: -len(".llama.jsonl")]
        t = tag.rsplit(".t", 1)[1]
        def runs(path):
            r = {}
            for line in open(path):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                j = json.loads(line)
                if "speed_tg" in j:  # llama-batched-bench
                    test, ts = f"tg{j['tg']}x{j['pl']}", j["speed_tg"]
                else:
                    test = f"pp{j['n_prompt']}" if j["n_gen"] == 0 else f"tg{j['n_gen']}"
                    if j.get("n_parallel", 1) > 1:
                        test += f"x{j['n_parallel']}"
                    ts = j["avg_ts"]
                r.setdefault(test, []).append(ts)
            return r
        ll, us = runs(os.path.join(out, name)), runs(os.path.join(out, tag + ".ours.jsonl"))
        for test in sorted(ll, key=lambda s: (s[:2] != "pp", s)):
            a, b = statistics.median(ll[test]), statistics.median(us.get(test, [float("nan")]))
            print(f"| {base} | {t} | {test} | {a:.2f} ({len(ll[test])} runs) | {b:.2f} ({len(us.get(test, []))} runs) | {b / a:.3f} |")
PY
echo "raw runs: $OUT" >&2
