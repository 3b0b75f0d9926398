#!/usr/bin/env python3
"""Read a GGUF file with the reference Python reader (the `gguf` package of llama.cpp) and print
what it found as JSON, for comparison with our Rust reader (formats/tests/gguf_rewrite.rs).

Usage: tools/check_gguf_py.py FILE

Prints one JSON object:
  version, tensor_count, kv_count, alignment, data_offset,
  keys:    [[key, value type id], ...] in file order,
  tensors: [[name, ggml type id, dims (ggml order, ne[0] first), absolute data offset, n_bytes], ...]
"""
import json
import sys

from gguf import GGUFReader


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    r = GGUFReader(sys.argv[1], "r")
    # GGUFReader exposes the header fields as pseudo-keys named "GGUF.*".
    fields = [(k, f) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    version = int(r.fields["GGUF.version"].parts[-1][0])
    out = {
        "version": version,
        "tensor_count": len(r.tensors),
        "kv_count": len(fields),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "keys": [[k, int(f.types[0])] for k, f in fields],
        "tensors": [
            [t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.data_offset), int(t.n_bytes)]
            for t in r.tensors
        ],
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
