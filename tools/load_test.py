#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server (ours or llama-server): CLIENTS concurrent clients,
each sending REQUESTS streamed chat completions one after another (loopback only).

Every request asks for exactly MAX_TOKENS tokens (ignore_eos), so a complete answer is known by
its size. Checks that no request is lost (each gets HTTP 200), that no stream is garbled (every
chunk parses, one id per stream, a finish_reason, `data: [DONE]` last, usage equal to the count
asked for). Prints one JSON line: clients, requests, tokens, seconds, aggregate tokens/s,
median request latency, errors.

Usage: load_test.py BASE_URL [--clients N] [--requests N] [--max-tokens N]
"""
import argparse, json, statistics, sys, threading, time, urllib.request

QUESTIONS = [
    "Tell me about the sea.", "What is a good breakfast?", "Describe a forest in autumn.",
    "How do birds fly?", "Why is the sky blue?", "Write a short poem about rain.",
    "What is the capital of Italy?", "Give me advice for a job interview.",
]


def one(base, i, max_tokens, stats, lock):
    body = {"model": "m", "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.time()
    problem = None
    try:
        with urllib.request.urlopen(req, timeout=900) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
            raw = r.read().decode()
        events = [e[len("data: "):] for e in raw.split("\n\n") if e.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            raise RuntimeError("no [DONE] at the end")
        chunks = [json.loads(e) for e in events[:-1]]
        ids = {c["id"] for c in chunks}
        if len(ids) != 1:
            raise RuntimeError(f"ids {ids}")
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and
                  c["choices"][0].get("finish_reason")]
        usage = [c["usage"] for c in chunks if c.get("usage")]
        if finish != ["length"]:
            raise RuntimeError(f"finish reasons {finish}")
        if not usage or usage[-1]["completion_tokens"] != max_tokens:
            raise RuntimeError(f"usage {usage}")
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        if not text:
            raise RuntimeError("empty answer")
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported
        problem = f"{type(e).__name__}: {e}"
    with lock:
        stats["latency"].append(time.time() - t0)
        if problem:
            stats["errors"].append(problem)
        else:
            stats["tokens"] += max_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    stats = {"tokens": 0, "latency": [], "errors": []}
    lock = threading.Lock()

    def client(c):
        for r in range(a.requests):
            one(a.base, c * a.requests + r, a.max_tokens, stats, lock)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.time() - t0
    print(json.dumps({"clients": a.clients, "requests": a.clients * a.requests, "tokens": stats["tokens"],
                      "seconds": round(secs, 2), "tokens_per_s": round(stats["tokens"] / secs, 2),
                      "median_latency_s": round(statistics.median(stats["latency"]), 3),
                      "errors": len(stats["errors"]), "first_errors": stats["errors"][:3]}))
    sys.exit(1 if stats["errors"] else 0)


if __name__ == "__main__":
    main()
