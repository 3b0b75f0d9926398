#!/usr/bin/env python3
"""Perplexity of a quantized checkpoint (auto_round / GPTQ / AWQ folder) loaded by stock
transformers + auto-round on CPU, with llama-perplexity's method (consecutive windows of --ctx
tokens, no BOS for models without one, the second half of every window scored), for comparison
with `autoround-cpu perplexity` / `tools/eval-ppl.sh` on the same folder.

Needs torch, transformers and auto-round (the venv of tools/ref-autoround.sh):
    ~/.cache/autoround-cpu/ref-venv/bin/python tools/check_auto_round_transformers.py FOLDER \\
        ../shared/data/eval.txt --chunks 4
Prints the layer backends transformers chose and a "Final estimate: PPL = ..." line.
"""
import argparse
import math

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("ckpt")
ap.add_argument("text")
ap.add_argument("--chunks", type=int, default=4)
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)

tok = AutoTokenizer.from_pretrained(a.ckpt)
model = AutoModelForCausalLM.from_pretrained(a.ckpt, device_map="cpu", dtype=torch.float32)
model.eval()
kinds = sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})
print(f"quantized layer classes: {kinds}; dtype {next(model.parameters()).dtype}")
if not kinds:
    raise SystemExit("no quantized layers were loaded: the checkpoint was not read as quantized")

ids = tok(open(a.text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
n = min(a.chunks, len(ids) // a.ctx)
first = a.ctx // 2
nll, count = 0.0, 0
for c in range(n):
    x = torch.tensor([ids[c * a.ctx:(c + 1) * a.ctx]])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    for j in range(first, a.ctx - 1):
        nll -= logp[j, x[0, j + 1]].item()
        count += 1
    print(f"[{c + 1}]{math.exp(nll / count):.4f}", flush=True)
print(f"Final estimate: PPL = {math.exp(nll / count):.4f}")
