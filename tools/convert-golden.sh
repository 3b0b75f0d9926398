#!/usr/bin/env bash
# Regenerate the golden data of `autoround-cpu convert --to gguf` with llama.cpp's own converter
# (convert_hf_to_gguf.py from the peer llama.cpp tree):
#   tests/fixtures/convert/          tiny synthetic HF checkpoints (llama, mistral, qwen2, qwen3)
#                                    and llama.cpp's GGUFs of them (committed; see
#                                    tools/convert_golden.py)
#   ~/.cache/autoround-cpu/convert-golden/smollm2.f16.gguf
#                                    llama.cpp's GGUF of an HF folder of SmolLM2-135M-Instruct
#                                    (not committed, 270 MB; tests/convert_roundtrip.rs skips
#                                    its comparison when it is absent)
# The SmolLM2 HF folder is made from the F16 GGUF by our GGUF -> HF converter (llama.cpp has no
# GGUF -> HF converter); only its conversion back is llama.cpp's.
# Needs: tools/convert-venv.sh (torch, transformers, sentencepiece: ~4 GB from PyPI, whose torch
# wheels need the CUDA libraries), the peer llama.cpp, the test models, cargo.
# Usage: tools/convert-golden.sh        (~3 minutes once the venv exists)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
PY=$("$here/convert-venv.sh" | tail -n1)
BIN=$(bash "${PEER_LLAMA_CPP:-$root/../shared/tools/peer-llama-cpp.sh}" | tail -n1)
build="${BIN%/bin}"
SRC="${LLAMA_CPP_SRC:-${build%/build-*}/src-${build##*/build-}}"
[ -f "$SRC/convert_hf_to_gguf.py" ] || { echo "no convert_hf_to_gguf.py in $SRC (set LLAMA_CPP_SRC)" >&2; exit 1; }
CACHE="${AUTOROUND_CONVERT_GOLDEN:-$HOME/.cache/autoround-cpu/convert-golden}"
MODELS="${AUTOROUND_MODELS:-$HOME/.cache/autoround-cpu/models}"
F16="$MODELS/SmolLM2-135M-Instruct.F16.gguf"
[ -s "$F16" ] || "$here/make-models.sh" >/dev/null
(cd "$root" && cargo build --release --quiet)
mkdir -p "$CACHE"
# The folder name matters: the converters derive general.* names from it (tests use the same).
"$root/target/release/autoround-cpu" convert -m "$F16" --to hf -o "$CACHE/SmolLM2-135M-Instruct-hf" --overwrite
"$PY" "$here/convert_golden.py" --llama-cpp "$SRC" --fixtures "$root/tests/fixtures/convert" \
  --text "$root/../shared/data/eval.txt" --smollm2 "$CACHE/SmolLM2-135M-Instruct-hf" --cache "$CACHE"
echo "[convert-golden] done: $root/tests/fixtures/convert, $CACHE" >&2
