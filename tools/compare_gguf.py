#!/usr/bin/env python3
"""Compare two GGUF files with gguf-py (the reference reader): metadata keys (order, types,
values) and tensors (names, order, types, shapes, bytes). Prints every difference; exits 1 if
the tensors differ (metadata differences are reported, and fail only with --strict-metadata).

Usage: tools/compare_gguf.py A.gguf B.gguf [--strict-metadata] [--json OUT.json]
"""
import argparse
import json
import sys

import gguf


def fields(r):
    out = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        try:
            value = f.contents()
        except Exception:  # noqa: BLE001
            value = None
        out[f.name] = (types, value)
    return out


def short(v):
    s = repr(v)
    return s if len(s) < 120 else s[:117] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--strict-metadata", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    ra, rb = gguf.GGUFReader(args.a), gguf.GGUFReader(args.b)
    fa, fb = fields(ra), fields(rb)
    meta = []
    for k in fa:
        if k not in fb:
            meta.append({"key": k, "only_in": "a", "a": short(fa[k][1]), "type": fa[k][0]})
    for k in fb:
        if k not in fa:
            meta.append({"key": k, "only_in": "b", "b": short(fb[k][1]), "type": fb[k][0]})
    for k in fa:
        if k in fb and fa[k] != fb[k]:
            meta.append({"key": k, "a": short(fa[k][1]), "b": short(fb[k][1]),
                         "type_a": fa[k][0], "type_b": fb[k][0]})
    common_a = [k for k in fa if k in fb]
    common_b = [k for k in fb if k in fa]
    order_same = common_a == common_b
    ta = {t.name: t for t in ra.tensors}
    tb = {t.name: t for t in rb.tensors}
    tens = []
    if set(ta) != set(tb):
        tens.append({"problem": "tensor names differ",
                     "only_a": sorted(set(ta) - set(tb)), "only_b": sorted(set(tb) - set(ta))})
    tensor_order_same = [t.name for t in ra.tensors] == [t.name for t in rb.tensors]
    for n, t in ta.items():
        if n not in tb:
            continue
        u = tb[n]
        if t.tensor_type != u.tensor_type or list(t.shape) != list(u.shape):
            tens.append({"tensor": n, "a": [t.tensor_type.name, list(map(int, t.shape))],
                         "b": [u.tensor_type.name, list(map(int, u.shape))]})
        elif t.data.tobytes() != u.data.tobytes():
            tens.append({"tensor": n, "problem": "bytes differ"})
    for m in meta:
        print("metadata:", json.dumps(m, ensure_ascii=False))
    print(f"metadata: {len(meta)} difference(s); common keys in the same order: {order_same}")
    for t in tens:
        print("tensor:", json.dumps(t))
    print(f"tensors: {len(ta)} vs {len(tb)}, {len(tens)} difference(s); same order: {tensor_order_same}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"metadata": meta, "metadata_order_same": order_same, "tensors": tens,
                       "tensor_order_same": tensor_order_same}, f, indent=1)
    sys.exit(1 if tens or (args.strict_metadata and (meta or not order_same)) else 0)


if __name__ == "__main__":
    main()
