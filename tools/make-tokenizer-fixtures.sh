#!/usr/bin/env bash
# Regenerate the tokenizer fixtures: the token ids llama.cpp's `llama-tokenize` gives for a list
# of test strings, which formats/tests/tokenizer_{gguf,vocab}.rs compare our tokenizer against.
#
# Usage:  tools/make-tokenizer-fixtures.sh [OUT_DIR]        (default: tests/fixtures/tokenizer)
# Writes:
#   OUT_DIR/smollm2.json    SmolLM2-135M-Instruct (byte-level BPE, pre "smollm"): hand-picked
#                           strings + 150 seeded random ones
#   OUT_DIR/spm-tiny.gguf   a vocabulary-only SentencePiece ("llama") GGUF of ~1100 pieces, built
#                           here with llama.cpp's gguf-py (no SentencePiece model is at hand)
#   OUT_DIR/spm-tiny.json   its fixture: hand-picked + 200 seeded random strings
# Each fixture is [{"text": ..., "ids": [...], "parse_special": bool}, ...].
#
# Env:  AUTOROUND_MODELS  where SmolLM2-135M-Instruct.Q4_1.gguf is
#                         (default $HOME/.cache/autoround-cpu/models)
#       LLAMA_CPP_BIN     directory holding llama-tokenize (default: the peer build of
#                         shared/tools/peer-llama-cpp.sh, built if missing)
#       LLAMA_CPP_SRC     llama.cpp source tree, for gguf-py (default: the peer build's source)
#       (python3 with numpy is needed for gguf-py)
#
# Each string is written to a file and tokenized with
#   llama-tokenize -m MODEL -f FILE --ids --no-escape --log-disable [--no-parse-special]
# so the model's own add_bos setting applies, as in `llama_tokenize(add_special = true)`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="${AUTOROUND_MODELS:-$HOME/.cache/autoround-cpu/models}"
SMOL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_DIR="${1:-$ROOT/tests/fixtures/tokenizer}"

if [ ! -f "$SMOL" ]; then
  echo "model not found: $SMOL" >&2
  exit 1
fi

BIN="${LLAMA_CPP_BIN:-}"
if [ -z "$BIN" ]; then
  for cand in "$ROOT/shared/tools/peer-llama-cpp.sh" "$ROOT/../shared/tools/peer-llama-cpp.sh"; do
    if [ -x "$cand" ]; then BIN="$("$cand" | tail -n1)"; break; fi
  done
fi
if [ -z "$BIN" ] || [ ! -x "$BIN/llama-tokenize" ]; then
  echo "llama-tokenize not found (set LLAMA_CPP_BIN)" >&2
  exit 1
fi
SRC="${LLAMA_CPP_SRC:-}"
if [ -z "$SRC" ]; then
  SRC="$(cd "$BIN/../.." && ls -d src-* 2>/dev/null | sort | tail -n1 || true)"
  [ -n "$SRC" ] && SRC="$(cd "$BIN/../.." && pwd)/$SRC"
fi
if [ -z "$SRC" ] || [ ! -d "$SRC/gguf-py" ]; then
  echo "llama.cpp source with gguf-py not found (set LLAMA_CPP_SRC)" >&2
  exit 1
fi

mkdir -p "$OUT_DIR"
PYTHONPATH="$SRC/gguf-py" python3 - "$BIN/llama-tokenize" "$SMOL" "$OUT_DIR" <<'PY'
import json, math, os, random, subprocess, sys, tempfile
from collections import Counter

import gguf

tokenize, smol, out_dir = sys.argv[1:4]

# (text, parse_special)
SMOL_CASES = [
    ("Hello world", True),
    ("Hello, world! How are you today?", True),
    ("The quick brown fox jumps over the lazy dog.", True),
    ("In 1492, Columbus sailed the ocean blue. The voyage took about ten weeks; "
     "his ships were the Niña, the Pinta and the Santa María.", True),
    ("Machine learning models are trained on large datasets, and their performance "
     "depends on the quality of the data as much as on the architecture.", True),
    # numbers
    ("12345", True),
    ("3.14", True),
    ("1,234,567.89", True),
    ("The year 2024 had 366 days; pi is 3.14159265358979.", True),
    ("v1.2.3-rc4 and 0x1F and 1e-10 and -42", True),
    ("2024-01-15T08:30:00Z", True),
    # code
    ("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n", True),
    ("fn main() {\n\tlet x: Vec<u8> = vec![1, 2, 3];\n\tprintln!(\"{:?}\", x);\n}\n", True),
    ("if (a != b && c >= d) { return -1; } else { i++; }", True),
    ("<div class=\"container\">&nbsp;<a href='/x?y=1&z=2'>link</a></div>", True),
    ("C:\\Users\\name\\file.txt", True),
    ("x = {'a': [1, 2, 3], \"b\": None}  # comment", True),
    ("SELECT * FROM users WHERE id = 42;", True),
    ("    indented with four spaces\n        and eight", True),
    # emoji and multibyte UTF-8
    ("I love 🦀 and 🚀!", True),
    ("👨‍👩‍👧‍👦 family, 🇺🇸 flag, 👍🏽 thumbs", True),
    ("café naïve résumé façade", True),
    ("日本語のテキストです。", True),
    ("Привет, мир! Как дела?", True),
    ("안녕하세요 세계", True),
    ("مرحبا بالعالم", True),
    ("Γειά σου Κόσμε", True),
    ("हिन्दी भाषा", True),
    ("mixed 中文 and English 123 with русский", True),
    ("ﬁ ligature, Ⅻ roman, ½ fraction, x² superscript", True),
    ("non\u00a0breaking\u00a0space and zero\u200bwidth", True),
    ("¡Hola! ¿Qué tal? Ça va très bien.", True),
    # whitespace
    (" leading space", True),
    ("trailing space ", True),
    ("  two leading spaces", True),
    ("multiple   spaces   between    words", True),
    ("\n", True),
    ("\n\n", True),
    ("line1\nline2", True),
    ("line1\n\nline2\n", True),
    ("\ttab\tseparated\tvalues", True),
    ("   ", True),
    (" ", True),
    ("", True),
    ("a\r\nb", True),
    ("trailing newline\n", True),
    ("word \n next", True),
    ("end with spaces   \n\n   start with spaces", True),
    # chat markup
    ("<|im_start|>user\nhi<|im_end|>", True),
    ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n<|im_start|>assistant\n", True),
    ("<|endoftext|>", True),
    ("text<|im_end|>more text", True),
    (" <|im_start|> spaced <|im_end|> ", True),
    ("<|im_start|><|im_end|><|endoftext|>", True),
    ("<|im_start|>user\nhi<|im_end|>", False),
    ("<|endoftext|> is a special token", False),
    # contractions
    ("don't I'll we've they're she's I'd I'm", True),
    ("DON'T I'LL WE'VE", True),
    ("rock 'n' roll, the '90s, O'Brien's", True),
    ("'s 't 're 've 'm 'll 'd", True),
    # punctuation and misc
    ("Hello!!! ??? ... ---", True),
    ("a-b_c.d/e:f;g", True),
    ("$100 + 50% = ? (approx.) [note] {x}", True),
    ("e.g. i.e. etc. vs.", True),
    ("@user #hashtag https://example.com/path?q=1&r=2", True),
    ("tokenizer's BPE-merge \"quotes\" and `backticks`", True),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True),
    ("The End.", True),
]

SPM_CASES = [
    ("Hello world", True),
    ("The quick brown fox jumps over the lazy dog.", True),
    ("Machine learning models are trained on large datasets.", True),
    ("Café naïve résumé", True),
    ("日本語 テキスト and ünknown chars: ßΩж😀", True),
    (" leading", True),
    ("trailing ", True),
    ("multiple   spaces", True),
    ("line1\nline2\n\n", True),
    ("\ttab", True),
    ("", True),
    (" ", True),
    ("<|im_start|>user\nhi<|im_end|>", True),
    ("<|im_start|>user\nhi<|im_end|>", False),
    ("<s>Hello</s>", True),
    ("<s>Hello</s>", False),
    ("a<user_tok>b <user_tok> c", True),
    ("a<user_tok>b <user_tok> c", False),
    ("<unk>", True),
    ("Don't worry, we'll be there.", True),
    ("def main(): return 0 if x else 1", True),
]

# Random strings: a fixed seed and pool, so the fixture is reproducible.
POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3
        + list("0123456789") * 2 + list(" " * 12) + list("\n\n\t\r")
        + list("'\".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`")
        + ["é", "ü", "ß", "ñ", "中", "文", "日", "本", "😀", "🦀", "👍🏽", "\u00a0", "\u2009",
           "\u3000", "\u200b", "Ω", "д", "ж", "ا", "ب", "क", "्", "\u0301", "½", "²", "Ⅻ",
           "\u2028", "\x0b", "\x0c", "\x85", "'s", "'ll", "'t", "  ", "   ", "\n\n\n", "Hello",
           "world", "the ", "data"])

def random_cases(seed, n, specials, max_len):
    rng = random.Random(seed)
    pool = POOL + specials
    cases = []
    for _ in range(n):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, max_len)))
        cases.append((text, rng.random() < 0.8))
    return cases


def run(model, cases, out):
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "prompt.txt")
        for text, parse_special in cases:
            with open(path, "wb") as f:
                f.write(text.encode("utf-8"))
            cmd = [tokenize, "-m", model, "-f", path, "--ids", "--no-escape", "--log-disable"]
            if not parse_special:
                cmd.append("--no-parse-special")
            proc = subprocess.run(cmd, capture_output=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
                raise SystemExit(f"llama-tokenize failed on {text!r}")
            lines = [l for l in proc.stdout.decode().splitlines() if l.startswith("[")]
            if not lines:
                raise SystemExit(f"no ids from llama-tokenize for {text!r}: {proc.stdout!r}")
            results.append({"text": text, "ids": json.loads(lines[-1]),
                            "parse_special": parse_special})
    with open(out, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i, r in enumerate(results):
            f.write("  " + json.dumps(r, ensure_ascii=False))
            f.write(",\n" if i + 1 < len(results) else "\n")
        f.write("]\n")
    print(f"wrote {len(results)} cases to {out}", file=sys.stderr)


def write_spm_gguf(path):
    """A vocabulary-only SentencePiece GGUF: <unk> <s> </s>, 256 byte tokens, the substrings (up
    to 7 characters, with ▁ for a leading space) of a small corpus scored by frequency, two
    control tokens and one user-defined token. llama.cpp loads it with vocab_only."""
    corpus = (
        "The quick brown fox jumps over the lazy dog. Machine learning models are trained on "
        "large datasets and their performance depends on the quality of the data. In 1492 "
        "Columbus sailed the ocean blue. Hello world! How are you today? I'm fine, thanks. "
        "Don't worry, we'll be there. Café naïve résumé. def main(): return 0 if x else 1 "
        "# code; tokens, spaces   and tabs. 日本語 テキスト")
    count = Counter()
    for word in corpus.split(" "):
        w = "\u2581" + word
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + 7) + 1):
                count[w[i:j]] += 1
    tokens, types, scores = ["<unk>", "<s>", "</s>"], [2, 3, 3], [0.0, 0.0, 0.0]
    for b in range(256):
        tokens.append("<0x%02X>" % b)
        types.append(6)
        scores.append(0.0)
    seen = set(tokens)
    for piece, c in sorted(count.items(), key=lambda kv: (-kv[1], kv[0])):
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(1)
        scores.append(round(-len(tokens) * 0.01 + math.log(c) * 0.1
                            - (0.5 if len(piece) == 1 else 0.0), 4))
    for t, ty in [("<|im_start|>", 3), ("<|im_end|>", 3), ("<user_tok>", 4)]:
        tokens.append(t)
        types.append(ty)
        scores.append(0.0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


smol_specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
run(smol, SMOL_CASES + random_cases(1, 150, smol_specials, 80),
    os.path.join(out_dir, "smollm2.json"))

spm = os.path.join(out_dir, "spm-tiny.gguf")
write_spm_gguf(spm)
spm_specials = ["<|im_start|>", "<|im_end|>", "<user_tok>", "<s>", "</s>", "<unk>"]
run(spm, SPM_CASES + random_cases(2, 200, spm_specials, 60),
    os.path.join(out_dir, "spm-tiny.json"))
PY
