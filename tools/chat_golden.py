#!/usr/bin/env python3
"""Record llama-server's greedy chat answers for fixed conversations (golden data for the
OpenAI server's tests).

llama-server (the reference peer) renders each model's own chat template (--jinja) and answers
/v1/chat/completions with temperature 0; we record the text, the finish reason and
the token counts, and per generated token its text and the margin between the two most likely
tokens' log-probabilities. tests/server.rs asks our server the same and compares: equal text,
except that at a near tie (margin < 0.1) another order of float additions may pick the other
token, after which the texts may differ.

Usage: tools/chat_golden.py --bin LLAMA_BIN_DIR --models MODELS_DIR --out FILE
"""
import argparse, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_cpp_golden import llama_server, post  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a pirate. Answer in one sentence."},
     {"role": "user", "content": "How do I make tea?"}],
    [{"role": "user", "content": "Hi! My name is Ada."},
     {"role": "assistant", "content": "Hello Ada! How can I help you today?"},
     {"role": "user", "content": "What is my name?"}],
]
MODELS = ["Q8_0", "Q4_K_M"]
MAX_TOKENS = 48


def answers(bin_dir, model, threads):
    # --no-repack: its AMX repacking hangs on this kind of machine and changes the arithmetic
    with llama_server(bin_dir, model, threads, "--jinja", "--no-repack") as base:
        out = []
        for msgs in CONVERSATIONS:
            r = post(base + "/v1/chat/completions", {"messages": msgs, "max_tokens": MAX_TOKENS,
                                                     "temperature": 0.0, "seed": 0, "cache_prompt": False,
                                                     "logprobs": True, "top_logprobs": 2})
            c = r["choices"][0]
            steps = [{"token": t["token"],
                      "margin": round(t["top_logprobs"][0]["logprob"] - t["top_logprobs"][1]["logprob"], 4)}
                     for t in c["logprobs"]["content"]]
            out.append({"messages": msgs, "max_tokens": MAX_TOKENS, "content": c["message"]["content"],
                        "finish_reason": c["finish_reason"],
                        "prompt_tokens": r["usage"]["prompt_tokens"],
                        "completion_tokens": r["usage"]["completion_tokens"], "steps": steps})
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    res = {}
    for m in MODELS:
        path = os.path.join(a.models, f"SmolLM2-135M-Instruct.{m}.gguf")
        res[m] = answers(a.bin, path, a.threads)
        print(f"[chat-golden] {m}: {[x['content'][:40] for x in res[m]]}", file=sys.stderr)
    with open(a.out, "w") as f:
        json.dump({"models": res, "llama_cpp_bin": os.path.basename(os.path.dirname(a.bin.rstrip("/")))}, f,
                  indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
