#!/usr/bin/env bash
# Build tools/ggml-harness/quantize.c against the peer llama.cpp's libggml-base.a: a tiny program
# that runs llama.cpp's own ggml_quantize_chunk (the reference for kernels/src/quantize/).
# The peer is built (once, cached) by ../shared/tools/peer-llama-cpp.sh; this script is idempotent
# and rebuilds the harness only when its source or the peer library is newer than the binary.
# Last stdout line: the harness binary path. Progress goes to stderr.
# Env: PEER_LLAMA_CPP (path of the peer script), CC (C compiler, default cc),
#      GGML_HARNESS_DIR (output dir, default <repo>/target/ggml-harness)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PEER="${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}"
[ -f "$PEER" ] || { echo "[ggml-harness] peer script not found: $PEER (set PEER_LLAMA_CPP)" >&2; exit 1; }

BIN=$(bash "$PEER" | tail -n1)
BUILD=$(cd "$BIN/.." && pwd)
LIB="$BUILD/ggml/src/libggml-base.a"
[ -f "$LIB" ] || { echo "[ggml-harness] missing $LIB (peer build incomplete?)" >&2; exit 1; }
# The source dir is recorded in the peer's CMake cache; the public ggml headers live under it.
GGML_SRC=$(sed -n 's/^ggml_SOURCE_DIR:STATIC=//p' "$BUILD/CMakeCache.txt" | head -n1)
INC="$GGML_SRC/include"
[ -f "$INC/ggml.h" ] || { echo "[ggml-harness] ggml.h not found under $INC" >&2; exit 1; }

SRC="$repo/tools/ggml-harness/quantize.c"
OUT_DIR="${GGML_HARNESS_DIR:-$repo/target/ggml-harness}"
OUT="$OUT_DIR/ggml-quantize"
STAMP="$OUT.peer"   # which peer library the binary was linked against
mkdir -p "$OUT_DIR"
if [ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "$LIB" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$LIB" ]; then
  echo "[ggml-harness] up to date: $OUT" >&2
else
  echo "[ggml-harness] compiling $OUT against $LIB" >&2
  "${CC:-cc}" -O2 -std=c11 -Wall -Wextra -I"$INC" "$SRC" "$LIB" \
    -lstdc++ -lm -lpthread -fopenmp -o "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  echo "$LIB" > "$STAMP"
fi
echo "$OUT"
