#!/usr/bin/env python3
"""Golden data for the double-quantized tuning schemes of the GGUF K-quants (src/tuner/qdq.rs,
QuantLayer with `IntScheme::dq`): the reference's own `quant_tensor_asym_dq` (int_asym_dq:
Q2_K, Q4_K, Q5_K) and `quant_tensor_sym_dq` (int_sym_dq: Q3_K, Q6_K) from auto-round 0.16.1,
with f32 scales and the 1e-8 scale threshold as its GGUF tuning uses, on seeded random weights,
rounding offsets V and clipping scales α/β, plus the gradients of V, α and β of the loss
Σ qdq(W)·R that torch's autograd computes (straight-through rounding).

Run with the reference venv (tools/ref-autoround.sh sets it up), e.g.
    ~/.cache/autoround-cpu/ref-venv/bin/python tools/dq_golden.py > tests/fixtures/dq_golden.json
"""
import json

import numpy as np
import torch
from auto_round.data_type.gguf import quant_tensor_asym_dq, quant_tensor_sym_dq

# name, bits, group, sym, super bits, groups per super-block
SCHEMES = [
    ("q2_k", 2, 16, False, 4, 16),
    ("q3_k", 3, 16, True, 6, 16),
    ("q4_k", 4, 32, False, 6, 8),
    ("q5_k", 5, 32, False, 6, 8),
    ("q6_k", 6, 16, True, 8, 16),
]

rng = np.random.default_rng(11)
cases = []
for name, bits, gs, sym, sbits, sgroups in SCHEMES:
    rows, cols = 2, 512
    ng = rows * cols // gs
    w = (rng.standard_t(5, size=(rows, cols)) * 0.02).astype(np.float32)
    # a group of zeros and a group with one large outlier, to reach the clamps
    w[0, :gs] = 0.0
    w[1, gs + 3] = 0.5
    v = rng.uniform(-0.5, 0.5, size=(ng, gs)).astype(np.float32)
    alpha = rng.uniform(0.6, 1.0, size=(ng,)).astype(np.float32)
    beta = rng.uniform(0.6, 1.0, size=(ng,)).astype(np.float32)
    r = rng.standard_normal(size=(rows, cols)).astype(np.float32)

    tw = torch.from_numpy(w)
    tv = torch.from_numpy(v).requires_grad_()
    ta = torch.from_numpy(alpha).requires_grad_()
    tb = torch.from_numpy(beta).requires_grad_()
    fn = quant_tensor_sym_dq if sym else quant_tensor_asym_dq
    qdq, scale, _ = fn(
        tw,
        bits=bits,
        group_size=gs,
        v=tv,
        min_scale=tb,
        max_scale=ta,
        scale_dtype=torch.float32,
        q_scale_thresh=1e-8,
        super_group_size=sgroups,
        super_bits=sbits,
    )
    (qdq * torch.from_numpy(r)).sum().backward()
    # shortest decimal that reads back as the same f32
    f = lambda t: [float(np.format_float_positional(x, unique=True)) for x in t.detach().reshape(-1).numpy()]
    cases.append({
        "name": name,
        "bits": bits,
        "group_size": gs,
        "sym": sym,
        "super_bits": sbits,
        "super_groups": sgroups,
        "rows": rows,
        "cols": cols,
        "w": f(tw),
        "v": f(tv),
        "alpha": f(ta),
        "beta": f(tb),
        "r": f(torch.from_numpy(r)),
        "qdq": f(qdq),
        "d": f(scale["d_scale"]),
        "grad_v": f(tv.grad),
        "grad_alpha": f(ta.grad),
        "grad_beta": f(tb.grad),
    })
print(json.dumps({"source": "auto-round 0.16.1 quant_tensor_asym_dq / quant_tensor_sym_dq", "cases": cases}))
