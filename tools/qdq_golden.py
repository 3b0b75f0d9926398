#!/usr/bin/env python3
"""Golden data for the single-level tuning schemes (src/tuner/qdq.rs, QuantLayer without
`IntScheme::dq`): the reference's own `quant_tensor_sym` (int_sym: W4A16, W2A16G64, ...) and
`quant_tensor_asym` (int_asym) from auto-round 0.16.1 with their default f16 scales, on seeded
random weights, rounding offsets V and clipping scales α/β, plus the gradients of V, α and β of
the loss Σ qdq(W)·R that torch's autograd computes (straight-through rounding; torch's clamp
passes no gradient to a value exactly at a bound, so weights on the lowest or highest level get
none).

Run with the reference venv (tools/ref-autoround.sh sets it up), e.g.
    ~/.cache/autoround-cpu/ref-venv/bin/python tools/qdq_golden.py > tests/fixtures/qdq_golden.json
"""
import json

import numpy as np
import torch
from auto_round.data_type.int import quant_tensor_asym, quant_tensor_sym

# name, bits, group, sym
SCHEMES = [
    ("w4g128_sym", 4, 128, True),
    ("w2g64_sym", 2, 64, True),
    ("w3g32_sym", 3, 32, True),
    ("w4g128_asym", 4, 128, False),
    ("w2g32_asym", 2, 32, False),
]

rng = np.random.default_rng(12)
cases = []
for name, bits, gs, sym in SCHEMES:
    rows, cols = 2, 512
    ng = rows * cols // gs
    w = (rng.standard_t(5, size=(rows, cols)) * 0.02).astype(np.float32)
    # a group of zeros (the scale threshold) and a group whose maximum is positive, so the
    # symmetric scale is negative
    w[0, :gs] = 0.0
    w[1, gs + 3] = 0.5
    v = rng.uniform(-0.5, 0.5, size=(ng, gs)).astype(np.float32)
    alpha = rng.uniform(0.6, 1.0, size=(ng,)).astype(np.float32)
    beta = rng.uniform(0.6, 1.0, size=(ng,)).astype(np.float32)
    # leave some groups unclipped, as at the start of tuning
    alpha[::3] = 1.0
    beta[::3] = 1.0
    r = rng.standard_normal(size=(rows, cols)).astype(np.float32)

    tw = torch.from_numpy(w)
    tv = torch.from_numpy(v).requires_grad_()
    ta = torch.from_numpy(alpha).requires_grad_()
    tb = torch.from_numpy(beta).requires_grad_()
    fn = quant_tensor_sym if sym else quant_tensor_asym
    qdq, scale, _ = fn(tw, bits=bits, group_size=gs, v=tv, min_scale=tb, max_scale=ta)
    (qdq * torch.from_numpy(r)).sum().backward()
    # shortest decimal that reads back as the same f32
    f = lambda t: [float(np.format_float_positional(x, unique=True)) for x in t.detach().float().reshape(-1).numpy()]
    cases.append({
        "name": name,
        "bits": bits,
        "group_size": gs,
        "sym": sym,
        "rows": rows,
        "cols": cols,
        "w": f(tw),
        "v": f(tv),
        "alpha": f(ta),
        "beta": f(tb),
        "r": f(torch.from_numpy(r)),
        "qdq": f(qdq),
        "scale": f(scale),
        "grad_v": f(tv.grad),
        "grad_alpha": f(ta.grad),
        "grad_beta": f(tb.grad),
    })
print(json.dumps({"source": "auto-round 0.16.1 quant_tensor_sym / quant_tensor_asym", "cases": cases}))
