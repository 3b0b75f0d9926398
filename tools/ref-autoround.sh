#!/usr/bin/env bash
# Run the reference AutoRound (intel/auto-round 0.16.1, CPU torch from PyPI) on a float Hugging
# Face folder, for side-by-side comparisons with `autoround-cpu quantize`.
#
# - Sets up (once) its own venv: torch without the CUDA wheels where that imports, auto-round.
# - Makes the calibration jsonl the reference can read: ../shared/data/calib.txt tokenized
#   without special tokens and cut into 520-token chunks (the reference's local loader takes only
#   .json/.jsonl and silently drops samples shorter than --seqlen).
# - Runs `auto-round` with the given arguments under /usr/bin/time -v and prints wall time and
#   peak RSS at the end.
#
# Usage:  tools/ref-autoround.sh MODEL_DIR OUT_DIR [auto-round args...]
#   e.g.  tools/ref-autoround.sh smol-f32 out/w4-i50 --scheme W4A16 --iters 50 --nsamples 128 \
#           --seqlen 512 --batch_size 8
# Env:    REF_VENV (default ~/.cache/autoround-cpu/ref-venv), THREADS (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
VENV="${REF_VENV:-$HOME/.cache/autoround-cpu/ref-venv}"
PY="$VENV/bin/python"
model=$1
out=$2
shift 2
if [ ! -f "$VENV/.autoround-ready" ]; then
  [ -x "$PY" ] || python3 -m venv "$VENV"
  pip=("$PY" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --upgrade pip >&2
  "${pip[@]}" filelock typing-extensions sympy networkx jinja2 fsspec >&2
  "${pip[@]}" --no-deps torch >&2
  if ! "$PY" -c 'import torch; torch.zeros(2).float()' >/dev/null 2>&1; then
    "${pip[@]}" torch >&2
  fi
  "${pip[@]}" "auto-round==0.16.1" >&2
  touch "$VENV/.autoround-ready"
fi
calib="$out.calib.jsonl"
mkdir -p "$(dirname "$out")"
"$PY" - "$model" "$root/../shared/data/calib.txt" "$calib" <<'EOF'
import json, sys
from transformers import AutoTokenizer
model, src, dst = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(model)
ids = tok(open(src, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
with open(dst, "w", encoding="utf-8") as f:
    for i in range(0, len(ids) - 520 + 1, 520):
        f.write(json.dumps({"text": tok.decode(ids[i:i + 520])}) + "\n")
EOF
export OMP_NUM_THREADS="${THREADS:-2}" MKL_NUM_THREADS="${THREADS:-2}"
/usr/bin/time -v "$VENV/bin/auto-round" --model "$model" --device cpu --seed 42 \
  --dataset "$calib" --format auto_round --output_dir "$out" "$@" 2> >(tee "$out.log" >&2)
grep -E "Elapsed \(wall|Maximum resident" "$out.log"
