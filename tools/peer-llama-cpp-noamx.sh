#!/usr/bin/env bash
# llama.cpp built for this CPU's AVX-512 (VNNI, BF16, VBMI) without its AMX path, as the speed
# peer of `tools/bench-vs-llama-cpp.sh`.
#
# Why: on AMX machines here, the native build (../shared/tools/peer-llama-cpp.sh) segfaults in
# ggml_backend_amx_mul_mat for every quantized type unless weight repacking is turned off
# (--repack 0 / --no-repack), and turning repacking off also drops llama.cpp's AVX2/AVX-512
# repacked Q4_0/Q4_K/IQ4_NL GEMMs. This build keeps those and leaves out only AMX, so it is
# llama.cpp at its fastest working configuration on this machine.
#
# Same source as the shared peer (its cache); prints the bin dir on the last stdout line.
# Idempotent. Env: LLAMA_CPP_HOME (default ~/.cache/peers/llama.cpp), LLAMA_CPP_JOBS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ROOT="${LLAMA_CPP_HOME:-$HOME/.cache/peers/llama.cpp}"
JOBS="${LLAMA_CPP_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PEER="${PEER_LLAMA_CPP:-$here/../../shared/tools/peer-llama-cpp.sh}"
bash "$PEER" >/dev/null # the source (and the native build, which the other tools use)
SRC=$(ls -d "$ROOT"/src-* | head -n1)
BUILD="$ROOT/build-noamx"
STAMP="$BUILD/.peer-build-complete"
if [ -f "$STAMP" ] && [ -x "$BUILD/bin/llama-bench" ] && [ -x "$BUILD/bin/llama-batched-bench" ]; then
  echo "[peer-noamx] already built: $BUILD/bin" >&2
  echo "$BUILD/bin"; exit 0
fi
flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
cpu=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $cpu " == *" $1 "* ]]; }
if has avx512f && has avx512bw && has avx512vl && has avx512dq; then flags+=(-DGGML_AVX512=ON); fi
has avx512_vnni && flags+=(-DGGML_AVX512_VNNI=ON)
has avx512_bf16 && flags+=(-DGGML_AVX512_BF16=ON)
has avx512vbmi && flags+=(-DGGML_AVX512_VBMI=ON)
has avx_vnni && flags+=(-DGGML_AVX_VNNI=ON)
echo "[peer-noamx] configuring $BUILD: ${flags[*]}" >&2
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_CCACHE=OFF \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF "${flags[@]}" \
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$BUILD" --config Release -j "$JOBS" --target llama-bench llama-batched-bench llama-server llama-cli >&2
touch "$STAMP"
echo "$BUILD/bin"
