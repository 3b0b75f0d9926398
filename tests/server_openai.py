#!/usr/bin/env python3
"""Drives `autoround-cpu serve` with the real `openai` Python client (run by tests/server.rs).

Usage: server_openai.py BASE_URL CHAT_GOLDEN_JSON   (the server runs with --api-key k and
--numerics llama-cpp, on SmolLM2-135M-Instruct Q8_0)
"""
import json
import sys

import openai

base, golden_path = sys.argv[1], sys.argv[2]
gold = json.load(open(golden_path))["models"]["Q8_0"]
client = openai.OpenAI(base_url=base, api_key="k", max_retries=0, timeout=300)


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


models = client.models.list()
check(len(models.data) == 1 and models.data[0].object == "model", f"models: {models}")


def same_greedy(ours, case):
    """Our answer is llama-server's, or the same up to a near tie in llama.cpp (as tests/server.rs)."""
    prefix = ""
    for i, step in enumerate(case["steps"]):
        if ours.startswith(prefix + step["token"]):
            prefix += step["token"]
            continue
        check(step["margin"] < 0.1, f"chat: {ours!r} leaves {case['content']!r} at step {i}")
        return False
    check(ours == case["content"], f"chat: {ours!r} != {case['content']!r}")
    return True


for case in gold:
    r = client.chat.completions.create(model="m", messages=case["messages"], max_tokens=case["max_tokens"],
                                       temperature=0)
    if same_greedy(r.choices[0].message.content, case):
        check(r.choices[0].finish_reason == case["finish_reason"], f"finish: {r.choices[0].finish_reason}")
        check(r.usage.completion_tokens == case["completion_tokens"], f"usage: {r.usage}")
    check(r.usage.prompt_tokens == case["prompt_tokens"], f"usage: {r.usage}")
    plain = r.choices[0].message.content

    text, finish, usage = "", None, None
    stream = client.chat.completions.create(model="m", messages=case["messages"], max_tokens=case["max_tokens"],
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    check(text == plain, f"stream: {text!r} != {plain!r}")
    check(finish == r.choices[0].finish_reason, f"stream finish: {finish}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"stream usage: {usage}")

# completions, with a stop string cut out of the text
EXTRA = {"ignore_eos": True}  # so that the text is long enough to cut
r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=16, temperature=0,
                              extra_body=EXTRA)
full = r.choices[0].text
check(r.object == "text_completion" and len(full) > 0, f"completion: {r}")
stop = full[len(full) // 2:][:3]
r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=16, temperature=0, stop=[stop],
                              extra_body=EXTRA)
check(r.choices[0].text == full[:full.index(stop)] and r.choices[0].finish_reason == "stop",
      f"stop {stop!r}: {r.choices[0].text!r} from {full!r}")
parts = [c.choices[0].text for c in client.completions.create(model="m", prompt="The capital of France is",
                                                                max_tokens=16, temperature=0, stream=True,
                                                                extra_body=EXTRA)]
check("".join(parts) == full, f"streamed completion {parts!r} != {full!r}")

# seeded sampling repeats itself
a = client.completions.create(model="m", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=7)
b = client.completions.create(model="m", prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=7)
check(a.choices[0].text == b.choices[0].text, "same seed, different text")

# errors the client raises
for kwargs, exc in [
    (dict(messages=[{"role": "user", "content": "hi"}], n=2), openai.BadRequestError),
    (dict(messages=[{"role": "user", "content": "hi"}], max_tokens=100000), openai.BadRequestError),
    (dict(messages=[{"role": "user", "content": "hi"}], top_p=0), openai.BadRequestError),
]:
    try:
        client.chat.completions.create(model="m", **kwargs)
        sys.exit(f"FAILED: no error for {kwargs}")
    except exc as e:
        check(e.status_code == 400 and "message" in e.body, f"{kwargs}: {e}")
try:
    openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    sys.exit("FAILED: a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, f"auth: {e}")

print("openai client: all checks passed")
