#!/usr/bin/env python3
"""Dequantize raw ggml blocks with the Python `gguf` package (gguf-py's numpy reference).

Used by kernels/tests/dequant_vs_gguf_py.rs to check our Rust reference bit for bit.

Usage:
    gguf_py_dequant.py TYPE INPUT N_ELEMENTS OUTPUT [TYPE INPUT N_ELEMENTS OUTPUT ...]

For each request, INPUT holds exactly the bytes of N_ELEMENTS elements of ggml type TYPE
(a GGMLQuantizationType name such as Q4_K, IQ4_NL, BF16; case-insensitive), and OUTPUT
receives the dequantized values as N_ELEMENTS little-endian float32.

Exit status 2 for a bad request, 3 if gguf/numpy cannot be imported.
"""

import sys


def main(argv: list[str]) -> int:
    try:
        import numpy as np
        from gguf import GGMLQuantizationType
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize
    except ImportError as e:  # the caller decides whether that is a skip or a failure
        print(f"gguf_py_dequant: cannot import gguf/numpy: {e}", file=sys.stderr)
        return 3

    args = argv[1:]
    if not args or len(args) % 4 != 0:
        print(__doc__, file=sys.stderr)
        return 2

    for i in range(0, len(args), 4):
        name, src, n_str, dst = args[i:i + 4]
        try:
            qtype = GGMLQuantizationType[name.upper()]
        except KeyError:
            print(f"gguf_py_dequant: unknown type {name!r}", file=sys.stderr)
            return 2
        n = int(n_str)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if n % block_size != 0:
            print(f"gguf_py_dequant: {n} is not a multiple of {name}'s block size {block_size}", file=sys.stderr)
            return 2
        data = np.fromfile(src, dtype=np.uint8)
        want = n // block_size * type_size
        if data.size != want:
            print(f"gguf_py_dequant: {src} holds {data.size} bytes, {n} {name} elements need {want}", file=sys.stderr)
            return 2

        out = dequantize(data, qtype)
        if out.dtype != np.float32 or out.size != n:
            print(f"gguf_py_dequant: gguf returned {out.dtype} x {out.size}, expected float32 x {n}", file=sys.stderr)
            return 2
        out.reshape(-1).astype("<f4", copy=False).tofile(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
