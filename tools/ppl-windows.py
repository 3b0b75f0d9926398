#!/usr/bin/env python3
"""Per-window comparison of two perplexity runs over the same windows.

Usage: tools/ppl-windows.py A.log B.log
A and B are the outputs of `autoround-cpu perplexity` or `llama-perplexity` (both print the
running estimate `[k]P_k` after each window). Window k's mean NLL over its scored tokens is
k·ln P_k − (k−1)·ln P_{k−1}; this prints A − B per window, their mean (as a perplexity ratio)
with its standard error, the standard deviation per window, and the standard deviation that
mean would have over N windows (default 210, all of ../shared/data/eval.txt at -c 512).
"""
import math
import re
import sys


def windows(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    ppl = [float(x) for x in re.findall(r"\[\d+\]([0-9.eE+]+)", text)]
    out, prev = [], 0.0
    for k, p in enumerate(ppl, 1):
        total = k * math.log(p)
        out.append(total - prev)
        prev = total
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: tools/ppl-windows.py A.log B.log [N]")
    a, b = windows(sys.argv[1]), windows(sys.argv[2])
    full = int(sys.argv[3]) if len(sys.argv) == 4 else 210
    n = min(len(a), len(b))
    if n < 2:
        sys.exit("need at least two windows in both logs")
    d = [a[i] - b[i] for i in range(n)]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    print("per-window mean NLL, A - B (nats):", " ".join(f"{x:+.4f}" for x in d))
    print(
        f"windows {n}: ln PPL(A)/PPL(B) = {mean:+.5f} ± {sd / math.sqrt(n):.5f} "
        f"(ratio {math.exp(mean):.5f}); sd per window {sd:.4f}; "
        f"expected sd over {full} windows {sd / math.sqrt(full):.5f}"
    )


if __name__ == "__main__":
    main()
