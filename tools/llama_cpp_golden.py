#!/usr/bin/env python3
"""Record llama.cpp's greedy tokens and perplexities for the test models (golden data).

Greedy tokens come from llama-server's /completion endpoint (return_tokens, temperature 0,
top_k 1, ignore_eos) on 127.0.0.1; perplexities from llama-perplexity's output (the running
estimate after each chunk and the final line). Same threads for every run.
"""
import argparse, contextlib, json, os, re, socket, subprocess, sys, time, urllib.request

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
]
MODELS = ["Q4_1", "F16", "Q8_0", "Q4_K_M"]
N_PREDICT = 64


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def llama_server(bin_dir, model, threads, *extra):
    """llama-server on a free loopback port, one slot, context 2048; yields its base URL."""
    port = free_port()
    srv = subprocess.Popen([os.path.join(bin_dir, "llama-server"), "-m", model, "--host", "127.0.0.1",
                            "--port", str(port), "-t", str(threads), "-c", "2048", "-np", "1", *extra],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        else:
            sys.exit("llama-server did not become healthy")
        yield base
    finally:
        srv.terminate()
        srv.wait(30)


def greedy(bin_dir, model, threads):
    with llama_server(bin_dir, model, threads) as base:
        out = []
        for p in PROMPTS:
            ids = post(base + "/tokenize", {"content": p, "add_special": True, "parse_special": True})["tokens"]
            r = post(base + "/completion", {"prompt": p, "n_predict": N_PREDICT, "temperature": 0.0, "top_k": 1,
                                            "ignore_eos": True, "cache_prompt": False, "return_tokens": True,
                                            "seed": 0})
            out.append({"prompt": p, "prompt_ids": ids, "tokens": r["tokens"], "text": r["content"]})
        return out


def perplexity(bin_dir, model, eval_file, threads, ctx, chunks):
    r = subprocess.run([os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", eval_file, "-c", str(ctx),
                        "--chunks", str(chunks), "-t", str(threads)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    text = r.stdout + r.stderr
    running = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", text)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", text)
    if not m or len(running) != chunks:
        sys.exit("could not parse llama-perplexity output:\n" + text[-3000:])
    return {"ctx": ctx, "chunks": chunks, "final": float(m.group(1)), "err": float(m.group(2)), "running": running}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--only", default=",".join(MODELS))
    a = ap.parse_args()
    golden = {"models": {}}
    if os.path.exists(a.out):
        with open(a.out) as f:
            golden = json.load(f)
    commit_file = os.path.join(os.path.dirname(os.path.dirname(a.bin.rstrip("/"))), "commit-0.3.36")
    if os.path.exists(commit_file):
        golden["llama_cpp_commit"] = open(commit_file).read().strip()
    for name in a.only.split(","):
        path = os.path.join(a.models, f"SmolLM2-135M-Instruct.{name}.gguf")
        print(f"[golden] {name}: greedy", file=sys.stderr)
        g = greedy(a.bin, path, a.threads)
        print(f"[golden] {name}: perplexity", file=sys.stderr)
        p = perplexity(a.bin, path, a.eval, a.threads, 512, a.chunks)
        golden["models"][name] = {"greedy": g, "perplexity": p}
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(golden, f, indent=1)
        os.replace(tmp, a.out)
        print(f"[golden] {name}: PPL {p['final']}", file=sys.stderr)


if __name__ == "__main__":
    main()
