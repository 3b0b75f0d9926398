#!/usr/bin/env python3
"""Check that a Hugging Face folder written by `autoround-cpu convert --to hf` loads in
transformers (AutoTokenizer, AutoModelForCausalLM) and generates llama.cpp's greedy tokens.

Usage (in the venv of tools/convert-venv.sh):
  python tools/check_hf_transformers.py HF_FOLDER [VARIANT]   # VARIANT of golden.json, default F16
Exits 1 if the prompt tokens or the first 16 greedy tokens differ from llama.cpp's.
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder = sys.argv[1]
variant = sys.argv[2] if len(sys.argv) > 2 else "F16"
golden = json.loads((Path(__file__).parent.parent / "tests/fixtures/llama_cpp/golden.json").read_text())
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
ok = True
for case in golden["models"][variant]["greedy"]:
    ids = tok(case["prompt"], return_tensors="pt").input_ids
    same_prompt = ids[0].tolist() == case["prompt_ids"]
    out = model.generate(ids, max_new_tokens=16, do_sample=False)
    got = out[0, ids.shape[1]:].tolist()
    same = got == case["tokens"][:16]
    ok &= same_prompt and same
    print(f"{case['prompt']!r}: prompt ids {'equal' if same_prompt else 'DIFFER'}, "
          f"16 greedy tokens {'equal' if same else 'DIFFER'} to llama.cpp {variant}: {tok.decode(got)!r}")
sys.exit(0 if ok else 1)
