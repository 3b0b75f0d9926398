#!/usr/bin/env python3
"""Golden data for the optimized-RTN scale search (src/tuner/qdq.rs, QuantLayer::search_scales):
the reference's own `search_scales` (auto_round/data_type/int.py, auto-round 0.16.1) on seeded
random groups, with and without importance weights (some of them zero, handled by the
reference's `_imatrix_handle_zero`), for 2, 3, 4 and 8 bits.

Run with the reference venv (tools/ref-autoround.sh sets it up), or any python with
auto-round 0.16.1 and torch, e.g.
    ~/.cache/autoround-cpu/ref-venv/bin/python tools/opt_rtn_golden.py > tests/fixtures/opt_rtn.json
"""
import json

import numpy as np
import torch
from auto_round.data_type.gguf import _imatrix_handle_zero
from auto_round.data_type.int import search_scales

rng = np.random.default_rng(7)
cases = []
for bits in (2, 3, 4, 8):
    for with_imatrix in (False, True):
        gs = 32
        rows = 6
        w = (rng.standard_t(5, size=(rows, gs)) * 0.02).astype(np.float32)
        qw = None
        if with_imatrix:
            qw = rng.gamma(1.0, 1.0, size=(gs,)).astype(np.float32)
            qw[3] = 0.0  # one zero: mean-filled
        t = torch.from_numpy(w)
        q = None
        if qw is not None:
            q = torch.from_numpy(qw).reshape(1, -1).expand(rows, -1).reshape(rows, gs)
            q = _imatrix_handle_zero(q, t, bits, gs)
        s = search_scales(t, bits, qw=q).reshape(-1)
        cases.append({
            "bits": bits,
            "group_size": gs,
            "rows": rows,
            "w": [float(x) for x in w.reshape(-1)],
            "importance": None if qw is None else [float(x) for x in qw],
            "scales": [float(x) for x in s],
        })
print(json.dumps({"source": "auto-round 0.16.1 search_scales", "cases": cases}))
