#!/usr/bin/env bash
# Build tools/llama-dump (llama.cpp's intermediate tensors, for bit-level comparison with our
# engine's AUTOROUND_TRACE_DIR dumps) against the peer llama.cpp build; prints the binary path.
# Env: PEER_LLAMA_CPP (path of the peer script, default ../shared/tools/peer-llama-cpp.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BIN=$(bash "${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}" | tail -n1)
BUILD="$(dirname "$BIN")"
SRC=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")
OUT="$here/../target/llama-dump"
mkdir -p "$OUT"
EXE="$OUT/llama-dump"
if [ ! -x "$EXE" ] || [ "$here/llama-dump/llama_dump.cpp" -nt "$EXE" ]; then
  g++ -O2 -std=c++17 -I"$SRC/include" -I"$SRC/ggml/include" "$here/llama-dump/llama_dump.cpp" \
    "$BUILD/src/libllama.a" "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" \
    "$BUILD/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -lm -o "$EXE" >&2
fi
echo "$EXE"
