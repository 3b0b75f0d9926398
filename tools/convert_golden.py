#!/usr/bin/env python3
"""Golden data for `autoround-cpu convert --to gguf`, made by llama.cpp's own converter.

1. Tiny synthetic Hugging Face checkpoints, one per architecture (Llama with Llama 3 RoPE
   scaling and sharded BF16 safetensors, Mistral in F16 with added tokens, Qwen2 in F32 with
   biases and an untied lm_head, Qwen3 in BF16 with q/k norms, an explicit head_dim, a model card
   and sampling settings), made with transformers (random weights, fixed seed) and a small
   SentencePiece tokenizer trained here. Written to tests/fixtures/convert/<name>/ (committed).
   Plus tiny-llama-hf: tiny-llama with only the tokenizer.json transformers makes of its
   SentencePiece model (the converter's LlamaHfVocab path).
2. convert_hf_to_gguf.py on each, for several --outtype values, into
   tests/fixtures/convert/<name>.<outtype>.gguf (committed): the goldens tests/convert_fixtures.rs
   compares our converter with, byte for byte.
3. With --smollm2 HF_FOLDER: convert_hf_to_gguf.py --outtype f16 on a Hugging Face folder of
   SmolLM2 (byte-level BPE, `smollm` pre-tokenizer), into the golden cache
   (~/.cache/autoround-cpu/convert-golden/, not committed: 270 MB), for tests/convert_roundtrip.rs.

Run through tools/convert-golden.sh, which sets up the Python environment (torch, transformers,
sentencepiece) and builds the HF folder of step 3 with our GGUF -> HF converter.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import sentencepiece as spm
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_spm(text_file: Path, out_dir: Path) -> Path:
    prefix = out_dir / "spm"
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(prefix), vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        user_defined_symbols=["<|im_start|>"], num_threads=1, input_sentence_size=20000,
        shuffle_input_sentence=False, seed_sentencepiece_size=100000, minloglevel=2,
        normalization_rule_name="identity")
    return prefix.with_suffix(".model")


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.5)


def tokenizer_files(out: Path, spm_model: Path, n_spm: int, extra: dict | None = None):
    shutil.copy(spm_model, out / "tokenizer.model")
    tc = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "chat_template": CHAT, "tokenizer_class": "LlamaTokenizer",
        "legacy": True, "model_max_length": 256,
        "added_tokens_decoder": {
            "0": {"content": "<unk>", "special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False},
            "1": {"content": "<s>", "special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False},
            "2": {"content": "</s>", "special": True, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False},
            "3": {"content": "<|im_start|>", "special": False, "normalized": False, "lstrip": False, "rstrip": False, "single_word": False},
        },
    }
    if extra:
        tc["added_tokens_decoder"].update(extra)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2), encoding="utf-8")


def make_models(fixtures: Path, text_file: Path):
    work = fixtures / ".spm-train"
    work.mkdir(parents=True, exist_ok=True)
    spm_model = train_spm(text_file, work)
    n_spm = spm.SentencePieceProcessor(model_file=str(spm_model)).vocab_size()
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2)
    specs = []

    # Llama: Llama 3 RoPE scaling (rope_freqs), BF16, shards with an index.
    cfg = LlamaConfig(vocab_size=n_spm, rope_theta=500000.0, tie_word_embeddings=True,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      **common)
    specs.append(("tiny-llama", LlamaForCausalLM, cfg, torch.bfloat16, "20KB", None, ["auto", "f16"]))

    # Mistral: F16, two added tokens past the SentencePiece vocabulary and one unused id.
    cfg = MistralConfig(vocab_size=n_spm + 3, rope_theta=10000.0, tie_word_embeddings=False,
                        sliding_window=None, **common)
    extra = {str(n_spm + 1): {"content": "<|im_end|>", "special": True, "normalized": False,
                              "lstrip": False, "rstrip": False, "single_word": False}}
    specs.append(("tiny-mistral", MistralForCausalLM, cfg, torch.float16, None,
                  ({"<tool>": n_spm}, extra), ["auto"]))

    # Qwen2: F32, q/k/v biases, untied lm_head.
    cfg = Qwen2Config(vocab_size=n_spm, rope_theta=1000000.0, tie_word_embeddings=False, **common)
    specs.append(("tiny-qwen2", Qwen2ForCausalLM, cfg, torch.float32, None, None, ["auto", "bf16", "f32"]))

    # Qwen3: BF16, q/k norms, head_dim 16 (4 x 16 != 32), tied embeddings.
    cfg = Qwen3Config(vocab_size=n_spm, rope_theta=1000000.0, tie_word_embeddings=True, head_dim=16,
                      **common)
    specs.append(("tiny-qwen3", Qwen3ForCausalLM, cfg, torch.bfloat16, None, None, ["auto"]))

    made = []
    for i, (name, cls, cfg, dtype, shard, added, outtypes) in enumerate(specs):
        out = fixtures / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        torch.manual_seed(i)
        model = cls(cfg)
        randomize(model, 1234 + i)
        model = model.to(dtype)
        if name == "tiny-qwen3":
            model.generation_config.do_sample = True
            model.generation_config.temperature = 0.7
            model.generation_config.top_k = 20
            model.generation_config.top_p = 0.8
        kwargs = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        if added:
            tokenizer_files(out, spm_model, n_spm, added[1])
            (out / "added_tokens.json").write_text(json.dumps(added[0]), encoding="utf-8")
        else:
            tokenizer_files(out, spm_model, n_spm)
        if name == "tiny-qwen3":
            (out / "README.md").write_text(
                "---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\nbase_model: Qwen/Qwen3-0.6B\n"
                "tags:\n- text-generation\npipeline_tag: text-generation\n---\n\n# Tiny Qwen3\n",
                encoding="utf-8")
        made.append((name, outtypes))
    # Llama with only a tokenizer.json of the SentencePiece kind (BPE with byte fallback, as
    # transformers converts tokenizer.model): the converter's LlamaHfVocab path.
    from transformers import AutoTokenizer
    out = fixtures / "tiny-llama-hf"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    for f in (fixtures / "tiny-llama").iterdir():
        if f.suffix in (".safetensors", ".json") and not f.name.startswith("tokenizer"):
            shutil.copy(f, out / f.name)
    AutoTokenizer.from_pretrained(fixtures / "tiny-llama").save_pretrained(out)
    made.append(("tiny-llama-hf", ["auto"]))
    shutil.rmtree(work)
    return made


def convert(converter: Path, model: Path, outfile: Path, outtype: str):
    r = subprocess.run([sys.executable, str(converter), str(model), "--outfile", str(outfile),
                        "--outtype", outtype], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"convert_hf_to_gguf.py failed on {model}")
    print(f"[convert-golden] {outfile}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, type=Path, help="llama.cpp source tree")
    ap.add_argument("--fixtures", required=True, type=Path)
    ap.add_argument("--text", required=True, type=Path, help="SentencePiece training text")
    ap.add_argument("--smollm2", type=Path, help="HF folder of SmolLM2 to convert into --cache")
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args()
    converter = args.llama_cpp / "convert_hf_to_gguf.py"
    args.fixtures.mkdir(parents=True, exist_ok=True)
    made = make_models(args.fixtures, args.text)
    for name, outtypes in made:
        for t in outtypes:
            convert(converter, args.fixtures / name, args.fixtures / f"{name}.{t}.gguf", t)
    info = {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentencepiece": spm.__version__, "converter": str(converter),
            "models": {n: o for n, o in made}}
    (args.fixtures / "versions.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if args.smollm2:
        args.cache.mkdir(parents=True, exist_ok=True)
        convert(converter, args.smollm2, args.cache / "smollm2.f16.gguf", "f16")


if __name__ == "__main__":
    main()
