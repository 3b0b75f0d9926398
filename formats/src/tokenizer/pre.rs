//! Byte-level BPE pre-tokenizers of llama.cpp, by `tokenizer.ggml.pre` name.
//!
//! Transcribed from llama.cpp's `src/llama-vocab.cpp` (`llm_tokenizer_bpe` and
//! `llama_vocab::impl::load`). Each pre-tokenizer is a list of regexes applied one after the
//! other, every regex splitting each piece left by the previous ones into matches and the text
//! between matches (Hugging Face's `Split` with `Isolated` behaviour); the pieces are then
//! byte-level encoded and BPE-merged one by one.
//!
//! Where llama.cpp rewrites a Hugging Face regex for C++ `std::regex` (no `(?i:...)`, no
//! `\p{Lu}`), the rewritten form is used if fancy-regex reads it the same way, else the original
//! Hugging Face regex.

/// How llama.cpp tokenizes for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreInfo {
    /// The split regexes, in order.
    pub regexes: &'static [&'static str],
    /// A whole pre-token that is in the vocabulary is taken as is, without merges.
    pub ignore_merges: bool,
    /// `clean_up_tokenization_spaces` when detokenizing.
    pub clean_spaces: bool,
    /// The pre type turns BOS on (before `tokenizer.ggml.add_bos_token` is applied).
    pub add_bos: bool,
}

/// GPT-2's regex as llama.cpp writes it (no trailing `|\s+`: a lone whitespace before a
/// non-space is left between matches, which splitting keeps as its own piece anyway).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

const LLAMA3: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const JAIS2: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+",
    r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)",
    r"|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}"
);

const QWEN2: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const QWEN35: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const MINICPM5: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const SEED_CODER: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const BAILINGMOE: &str = concat!(
    r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"
);

const UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const EXAONE_MOE: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?",
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
);

/// Tekken (Mistral Nemo and later), the Hugging Face form.
const TEKKEN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// o200k (GPT-4o, Llama 4), the Hugging Face form with llama.cpp's explicit contractions.
const GPT4O: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const TINY_AYA_DIGITS: &str = r"\d{1,3}(?=(?:\d{3})*\b)";

const YOUTU: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const DEEPSEEK3_MAIN: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"##,
    r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const SPARK25_MAIN: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"##,
    r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"
);

const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];

/// `kind` names llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*` the name maps to (documentation only).
const fn info(_kind: &'static str, regexes: &'static [&'static str]) -> PreInfo {
    PreInfo {
        regexes,
        ignore_merges: false,
        clean_spaces: true,
        add_bos: false,
    }
}

impl PreInfo {
    const fn no_clean(mut self) -> Self {
        self.clean_spaces = false;
        self
    }
    const fn ignore_merges(mut self) -> Self {
        self.ignore_merges = true;
        self
    }
    const fn bos(mut self) -> Self {
        self.add_bos = true;
        self
    }
}

/// llama.cpp's pre-tokenizer for an empty or unknown `tokenizer.ggml.pre`.
pub(crate) fn default_pre() -> PreInfo {
    info("default", DEFAULT)
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value, or `None` if llama.cpp does not know it
/// (or it needs a hand-written splitter we do not have: kimi-k2, afmoe, superbpe, and the
/// non-byte-level gemma4, sarvam-moe and whitespace).
pub(crate) fn lookup(pre: &str) -> Option<PreInfo> {
    const STARCODER: &[&str] = &[r"\p{N}", GPT2];
    const DEEPSEEK_LLM: &[&str] = &[
        "[\r\n]",
        r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
        r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
        r"\s+$",
        r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
        r"\p{N}+",
    ];
    const DEEPSEEK_CODER: &[&str] = &[
        "[\r\n]",
        r"\s?\p{L}+",
        r"\s?\p{P}+",
        r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
        r"\p{N}",
    ];
    const DEEPSEEK3: &[&str] = &[
        r"\p{N}{1,3}",
        r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
        DEEPSEEK3_MAIN,
    ];
    const SPARK25: &[&str] = &[
        r"\p{N}{1,3}",
        r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
        SPARK25_MAIN,
        r"\p{N}",
    ];
    const YOUTU_RX: &[&str] = &[
        r"[\x{AC00}-\x{D7A3}\x{3131}-\x{318E}]+|[\x{FF01}\x{2026}\x{201C}\x{201D}\x{2018}\x{2019}\x{2014}\x{FF1A}\x{FF1B}\x{FF0C}\x{3001}-\x{303F}\x{FE30}-\x{FE4F}]+|[\x{3105}-\x{312F}]+|[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
        YOUTU,
    ];
    const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];
    const BLOOM: &[&str] =
        &[r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+"];
    const VIKING: &[&str] = &[
        r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+",
        r"\p{N}",
    ];
    const CHAMELEON: &[&str] = &[
        r"<sentinel:[0-9]+>",
        r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
        r"([\t\n]|    |  )",
        r"\p{N}",
        r"[\p{P}!-/:-@\[-`{-~]",
        GPT2,
    ];
    const LAGUNA: &[&str] = &[r"[^\n]+|[\n]+", QWEN2];
    const MINICPM5_RX: &[&str] = &[r"\p{N}{1,3}", MINICPM5];
    const TINY_AYA: &[&str] = &[TINY_AYA_DIGITS, GPT4O];

    Some(match pre {
        "default" => default_pre(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => info("llama3", &[LLAMA3]).ignore_merges().bos(),
        "dbrx" => info("dbrx", &[LLAMA3]),
        "smaug-bpe" => info("smaug", &[LLAMA3]),
        "jais-2" => info("jais2", &[JAIS2]),
        "deepseek-llm" => info("deepseek_llm", DEEPSEEK_LLM).no_clean(),
        "deepseek-coder" => info("deepseek_coder", DEEPSEEK_CODER).no_clean(),
        "deepseek-v3" => info("deepseek3_llm", DEEPSEEK3).no_clean(),
        "hunyuan-dense" => info("hunyuan_dense", DEEPSEEK3).no_clean(),
        "hy_v4" => info("hy_v4", DEEPSEEK3).no_clean(),
        "joyai-llm" => info("joyai_llm", DEEPSEEK3).no_clean(),
        "spark2_5" => info("spark2_5", SPARK25).no_clean(),
        "youtu" => info("youtu", YOUTU_RX).no_clean().ignore_merges(),
        "falcon" => info("falcon", FALCON),
        "mpt" => info("mpt", &[GPT2]),
        "starcoder" => info("starcoder", STARCODER),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "jina-v1-en" | "jina-v2-code"
        | "roberta-bpe" => info("gpt2", &[GPT2]),
        "refact" => info("refact", STARCODER),
        "command-r" => info("command_r", STARCODER).no_clean(),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" => info("qwen2", &[QWEN2]).no_clean(),
        "megrez" => info("qwen2", &[QWEN2]),
        "qwen35" => info("qwen35", &[QWEN35]).no_clean(),
        "stablelm2" => info("stablelm2", &[QWEN2]),
        "olmo" => info("olmo", &[GPT2]),
        "poro-chat" => info("poro", BLOOM).no_clean(),
        "bloom" => info("bloom", BLOOM),
        "gpt3-finnish" => info("gpt3_finnish", BLOOM),
        "chatglm-bpe" => info("chatglm4", &[LLAMA3]),
        "glm4" | "glm5" => info("chatglm4", &[LLAMA3]).ignore_merges(),
        "viking" => info("viking", VIKING).no_clean(),
        "jais" => info("jais", &[GPT2]),
        "tekken" => info("tekken", &[TEKKEN]).no_clean().ignore_merges().bos(),
        "smollm" => info("smollm", STARCODER).no_clean(),
        "codeshell" => info("codeshell", STARCODER),
        "exaone" => info("exaone", STARCODER),
        "exaone-moe" => info("exaone_moe", &[EXAONE_MOE]),
        "chameleon" => info("chameleon", CHAMELEON).no_clean().bos(),
        "minerva-7b" => info("minerva", STARCODER),
        "mellum2" => info("mellum2", STARCODER),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => info("gpt4o", &[GPT4O]).no_clean(),
        "minimax-m2" => info("minimax_m2", &[GPT4O]).no_clean(),
        "tiny_aya" | "cohere2moe" => info("tiny_aya", TINY_AYA).no_clean(),
        "trillion" => info("trillion", &[GPT2]).no_clean(),
        "granite-docling" => info("granite_docling", &[GPT2]).no_clean(),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => info("bailingmoe", &[BAILINGMOE]).no_clean(),
        "seed-coder" => info("seed_coder", &[SEED_CODER]).no_clean(),
        "hunyuan" => info("hunyuan", &[QWEN2]).no_clean(),
        "ufakzeka" => info("ufakzeka", &[UFAKZEKA]).no_clean(),
        "grok-2" => info("grok_2", &[QWEN2]).no_clean(),
        "laguna" => info("laguna", LAGUNA).no_clean(),
        "solar-open" => info("solar_open", &[QWEN2]).no_clean(),
        "minicpm5" => info("minicpm5", MINICPM5_RX).ignore_merges(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every regex of every known pre type compiles with the engine the tokenizer uses.
    #[test]
    fn all_regexes_compile() {
        let names = [
            "default",
            "llama3",
            "dbrx",
            "smaug-bpe",
            "jais-2",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "youtu",
            "falcon",
            "mpt",
            "starcoder",
            "gpt-2",
            "refact",
            "command-r",
            "qwen2",
            "qwen35",
            "stablelm2",
            "olmo",
            "poro-chat",
            "chatglm-bpe",
            "glm4",
            "viking",
            "jais",
            "tekken",
            "smollm",
            "codeshell",
            "exaone",
            "exaone-moe",
            "chameleon",
            "minerva-7b",
            "gpt-4o",
            "tiny_aya",
            "trillion",
            "bailingmoe",
            "seed-coder",
            "hunyuan",
            "ufakzeka",
            "grok-2",
            "laguna",
            "minicpm5",
        ];
        for n in names {
            let p = lookup(n).unwrap_or_else(|| panic!("{n} unknown"));
            for r in p.regexes {
                tokenizers::pre_tokenizers::split::Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex(r.to_string()),
                    tokenizers::SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{n}: {r}: {e}"));
            }
        }
        assert!(lookup("kimi-k2").is_none());
        assert!(lookup("smollm").unwrap().regexes.len() == 2);
    }
}
