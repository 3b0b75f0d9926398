#!/usr/bin/env python3
"""Compare our engine's intermediate tensors (AUTOROUND_TRACE_DIR) with llama.cpp's (llama-dump).

Usage: compare-dumps.py OURS_DIR LLAMA_DIR [--step K]
For each step and each tensor we dump, takes llama.cpp's *last* tensor of that name in that step
(e.g. Qcur after RoPE) and prints how many values differ in their bits, the largest absolute
difference and the largest difference in units of the last place. Where llama.cpp kept fewer rows
(the last layer's FFN and the output run only on rows whose logits are wanted), our last rows are
compared. Stops listing at the first tensor that differs unless --all.
"""
import argparse, os, re, sys
import numpy as np

def load(path):
    with open(path, 'rb') as f:
        head = f.readline().decode().split()
        data = np.frombuffer(f.read(), dtype='<f4')
    ne = [int(x) for x in head[1:]]
    return head[0], ne, data

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('ours'); ap.add_argument('theirs')
    ap.add_argument('--step', type=int, default=None)
    ap.add_argument('--all', action='store_true')
    a = ap.parse_args()
    steps = sorted(d for d in os.listdir(a.ours) if d.startswith('step'))
    if a.step is not None:
        steps = [f'step{a.step}']
    for st in steps:
        tdir = os.path.join(a.theirs, st)
        if not os.path.isdir(tdir):
            print(f'{st}: llama.cpp has no such step'); continue
        last = {}
        order = {}
        for fn in sorted(os.listdir(tdir)):
            m = re.match(r'(\d+)_(.*)\.f32$', fn)
            if m:
                last[m.group(2)] = os.path.join(tdir, fn)
                order[m.group(2)] = int(m.group(1))
        ours = []
        for fn in os.listdir(os.path.join(a.ours, st)):
            name = fn[:-4]
            if name in last:
                ours.append((order[name], name, os.path.join(a.ours, st, fn)))
        ours.sort()
        print(f'== {st}')
        for _, name, p in ours:
            _, one, x = load(p)
            _, tne, y = load(last[name])
            row = one[0]
            if y.size % row:
                print(f'{name:16s} shape mismatch: ours row {row}, theirs {tne}'); continue
            x = x[-y.size:]
            diff = x.view(np.int32) != y.view(np.int32)
            nd = int(diff.sum())
            ad = float(np.max(np.abs(x - y))) if x.size else 0.0
            ulp = int(np.max(np.abs(x.view(np.int32).astype(np.int64) - y.view(np.int32).astype(np.int64)))) if x.size else 0
            flag = 'OK ' if nd == 0 else 'DIFF'
            first = ''
            if nd:
                i = int(np.argmax(diff))
                first = f' first@{i} (row {i // row}, col {i % row}): {x[i]!r} vs {y[i]!r}'
            print(f'{flag} {name:16s} {nd:8d}/{y.size:<8d} max|d| {ad:.3e} max ulp {ulp}{first}')
            if nd and not a.all:
                break

if __name__ == '__main__':
    main()
