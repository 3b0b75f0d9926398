//! Command-line arguments (clap). Every flag says what it does in `--help`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "autoround-cpu",
    version,
    about = "Quantize Hugging Face LLMs with AutoRound, write GGUF, and run quantized models on CPUs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a prompt, streaming tokens as they come.
    Run(RunArgs),
    /// Show a GGUF or safetensors file's metadata and tensor table (like gguf-dump).
    Inspect(InspectArgs),
    /// Perplexity of a model on a text file, with llama-perplexity's method and output.
    Perplexity(PerplexityArgs),
    /// Show CPU features, threads and which kernel tier each weight type would use.
    Doctor(DoctorArgs),
    /// Quantize a Hugging Face folder or a GGUF file (GGUF output: llama-quantize's types and bytes).
    Quantize(QuantizeArgs),
    /// Convert a Hugging Face folder to GGUF, or a GGUF file to a Hugging Face folder.
    Convert(ConvertArgs),
    /// Compute an importance matrix from calibration text (llama-imatrix's method and file format).
    Imatrix(ImatrixArgs),
    /// Prompt-processing and generation speed (llama-bench's tests and table).
    Bench(BenchArgs),
    /// Chat in the terminal with the model's own chat template (streaming; /help for commands).
    Chat(ChatArgs),
    /// OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health.
    Serve(ServeArgs),
}

/// How the engine computes: options of every command that runs the model.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Arithmetic of the matrix products: fast (SIMD kernels, AMX/f32 GEMM for prompts) or
    /// llama-cpp (llama.cpp's x86 arithmetic bit for bit, for comparisons with it).
    #[arg(long, value_parser = ["fast", "llama-cpp"], default_value = "fast")]
    pub numerics: String,
    /// Also unpack the weights at load into AMX int8 tiles (CPUs with AMX-INT8 only), about one
    /// more byte of memory per weight: batches of 8 or more tokens (many sequences decoded
    /// together, prompts) then skip unpacking them on every product.
    #[arg(long)]
    pub repack: bool,
}

/// Options shared by `chat` and `serve`.
#[derive(Args, Debug)]
pub struct ChatModelArgs {
    /// Model: a .gguf file, a Hugging Face folder, or a Hugging Face repo id (owner/name, resolved
    /// through the local hub cache; owner/name:FILE picks one .gguf of several).
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context size of each conversation in tokens; default: min(model's training context, 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub m: ChatModelArgs,
    /// Address to listen on (only this machine by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* requests.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Sequences generated together in one batched pass (continuous batching).
    #[arg(long = "parallel", default_value_t = 16)]
    pub parallel: usize,
    /// Requests that may wait beyond --parallel; more get 429.
    #[arg(long = "max-queue", default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// The model id /v1/models lists (default: the model file or folder name).
    #[arg(long = "alias")]
    pub alias: Option<String>,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub m: ChatModelArgs,
    /// A system message to start every conversation with (also /system in the chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Most new tokens per answer (the context may end it sooner).
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    pub n_predict: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model: a .gguf file or a Hugging Face folder.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Prompt lengths to test (pp<N>: N random tokens in one batch, fresh cache); 0 skips.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (tg<N>: N tokens one at a time, fresh cache); 0 skips.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Worker threads, one or more (comma-separated): each is a separate test.
    #[arg(short = 't', long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Sequences generated together in each tg test, one or more (comma-separated): with P > 1,
    /// tg<N>xP decodes P sequences of N tokens, one token of each per forward pass, as a server
    /// with P clients does; its t/s counts every sequence's tokens.
    #[arg(long = "parallel", value_delimiter = ',', default_value = "1")]
    pub parallel: Vec<usize>,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Output: md (llama-bench's table) or jsonl (one object per test, llama-bench's keys).
    #[arg(short = 'o', long, default_value = "md")]
    pub output: String,
    /// Skip the warm-up run before each test.
    #[arg(long = "no-warmup")]
    pub no_warmup: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model: a .gguf file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json).
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// The prompt text (special tokens like <|im_start|> are parsed).
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Number of tokens to generate (stops early at an end-of-generation token).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context size in tokens (prompt + generation); default: min(model's training context, 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Never stop at end-of-generation tokens: they are masked out (as llama.cpp's --ignore-eos).
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Take the prompt literally: do not turn \n, \t, \\ and \" into newline, tab, backslash, quote.
    #[arg(long = "no-escape")]
    pub no_escape: bool,
    /// Print the generated token ids to stderr at the end.
    #[arg(long = "print-ids")]
    pub print_ids: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A .gguf or .safetensors file.
    pub file: PathBuf,
    /// Print arrays in full instead of their first few items.
    #[arg(long)]
    pub full: bool,
}

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// Model: a .gguf file or a Hugging Face folder.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Text file to evaluate.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Window size in tokens; the second half of each window is scored.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Evaluate at most this many windows (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Worker threads to report (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model: a Hugging Face folder (config.json, *.safetensors, tokenizer files) or a .gguf file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Output format: gguf:<type> (e.g. gguf:q4_k_m, gguf:q4_0, gguf:q2_k_s, gguf:f16; tuned
    /// for each layer's llama.cpp type, K-quants through their double-quantized scales), or
    /// auto_round (auto_round:auto_gptq, auto_round:auto_awq), auto_gptq, auto_awq, or fake
    /// (dequantized float); several comma separated (auto_round,fake,gguf:q4_0) are written from
    /// one tuning run when their schemes agree.
    #[arg(long, default_value = "gguf:q4_k_m")]
    pub format: String,
    /// AutoRound tuning iterations per block [200]; 0 is round-to-nearest (for gguf: formats,
    /// llama.cpp's quantizers).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Importance matrix (llama.cpp's .gguf or legacy .dat imatrix file) for the GGUF quantizers.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Folder to write into; the file is named <model>-<TYPE>.gguf.
    #[arg(long = "output_dir", alias = "output-dir")]
    pub output_dir: Option<PathBuf>,
    /// Output file (instead of --output_dir).
    #[arg(short = 'o', long, conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Every quantized tensor gets the format's base type (llama-quantize --pure).
    #[arg(long)]
    pub pure: bool,
    /// Keep output.weight in its current type (llama-quantize --leave-output-tensor).
    #[arg(long = "leave-output-tensor")]
    pub leave_output_tensor: bool,
    /// Type for output.weight, e.g. q8_0 (llama-quantize --output-tensor-type).
    #[arg(long = "output-tensor-type")]
    pub output_tensor_type: Option<String>,
    /// Type for token_embd.weight, e.g. q8_0 (llama-quantize --token-embedding-type).
    #[arg(long = "token-embedding-type")]
    pub token_embedding_type: Option<String>,
    /// Name stored as quantize.imatrix.file (default: the --imatrix path as given, as llama-quantize does).
    #[arg(long = "imatrix-name", hide = true)]
    pub imatrix_name: Option<String>,
    /// Weight scheme of the auto_round formats: W4A16 (default), W2A16, W3A16, W8A16,
    /// W2A16G64, W2A16G32; --bits/--group_size/--asym adjust it. A gguf: format sets its own
    /// (gguf:q4_0 is 4-bit symmetric, group 32).
    #[arg(long)]
    pub scheme: Option<String>,
    /// Bits per weight (overrides the scheme's).
    #[arg(long)]
    pub bits: Option<u32>,
    /// Weights per scale along the input dimension; -1 is one group per row.
    #[arg(
        long = "group_size",
        alias = "group-size",
        allow_negative_numbers = true
    )]
    pub group_size: Option<i64>,
    /// Asymmetric quantization (zero points); the schemes are symmetric (full range) by default.
    #[arg(long, conflicts_with = "sym")]
    pub asym: bool,
    /// Symmetric quantization (the default).
    #[arg(long)]
    pub sym: bool,
    /// Calibration text, comma separated: .txt (one sample per paragraph), .jsonl/.json or
    /// .parquet ("text" field) files, or Hugging Face datasets `owner/name[:split]` already in the
    /// local hub cache (never downloaded).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Calibration samples [128].
    #[arg(long)]
    pub nsamples: Option<usize>,
    /// Tokens per calibration sample [2048].
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Samples per tuning step [8].
    #[arg(long = "batch_size", alias = "batch-size")]
    pub batch_size: Option<usize>,
    /// Join all calibration texts and cut them into seqlen-token chunks.
    #[arg(long)]
    pub concat: bool,
    /// Learning rate of the rounding offsets [1/iters].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning rate of the clipping scales [lr].
    #[arg(long = "minmax_lr", alias = "minmax-lr")]
    pub minmax_lr: Option<f32>,
    /// Do not tune the clipping scales.
    #[arg(long = "disable_minmax_tuning", alias = "disable-minmax-tuning")]
    pub disable_minmax_tuning: bool,
    /// Tune each block on the float chain's inputs instead of the quantized blocks' outputs.
    #[arg(long = "disable_quanted_input", alias = "disable-quanted-input")]
    pub disable_quanted_input: bool,
    /// Compute the block's matrix products in f32. By default they take bf16 inputs with f32
    /// sums, as the reference's autocast does on bf16 CPUs, where this CPU has AMX tiles for
    /// them; elsewhere f32 is used anyway.
    #[arg(long = "disable_amp", alias = "disable-amp")]
    pub disable_amp: bool,
    /// Gradients of the quantize-dequantize: `torch` (default) gives weights on the lowest and
    /// highest level none and rounds the scales' gradients to f16, as the reference's autograd
    /// does; `ste` passes the straight-through gradient to every weight inside the levels, the
    /// edges included, with f32 scale gradients. On SmolLM2-135M, iters 200: W4A16 PPL 40.21
    /// (torch) vs 40.81 (ste); W2A16G64 73.01 vs 70.22.
    #[arg(long, value_enum, default_value_t = GradMode::Torch)]
    pub grads: GradMode,
    /// Seed of calibration sampling and batch order [42].
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --iters 0: plain round-to-nearest even when --dataset is given (the reference's
    /// default for --iters 0 with data is its optimized RTN, a calibrated scale search).
    #[arg(long = "disable_opt_rtn", alias = "disable-opt-rtn")]
    pub disable_opt_rtn: bool,
    /// Per-layer schemes, as the reference's layer_config: a JSON object (or a .json file) from
    /// a module name or regex (searched in the name) to {"bits", "group_size", "sym"}; bits 16
    /// keeps the layer in float. E.g. '{"mlp.down_proj": {"bits": 8}, "model.layers.0.": {"bits": 16}}'.
    #[arg(long = "layer_config", alias = "layer-config")]
    pub layer_config: Option<String>,
    /// Quantize the LM head too (`lm_head`, or `output.weight`), tuned alone after the blocks on
    /// the final norm's outputs, as the reference's --quant_lm_head. A model whose head is its
    /// token embeddings (tie_word_embeddings) keeps it in float, as the reference does; GGUF
    /// mixtures always quantize output.weight with llama.cpp's type for it. A --layer_config
    /// entry "lm_head" sets its scheme (and quantizes it without this flag).
    #[arg(long = "quant_lm_head", alias = "quant-lm-head")]
    pub quant_lm_head: bool,
    /// The light recipe: 50 iterations, lr 5e-3.
    #[arg(long, conflicts_with = "best")]
    pub light: bool,
    /// The best recipe: 1000 iterations, 512 samples.
    #[arg(long)]
    pub best: bool,
    /// Log each block's loss at iteration 0 and at the best iteration.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Input: a Hugging Face folder (with --to gguf) or a .gguf file (with --to hf).
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Target: gguf or hf.
    #[arg(long)]
    pub to: String,
    /// Output file (gguf) or folder (hf).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Replace the output if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// --to gguf: type of the 2-D weights (f32, f16, bf16, or auto: the checkpoint's 16-bit
    /// type, F16 if it has none), as convert_hf_to_gguf.py's --outtype. 1-D tensors and norms
    /// are always F32.
    #[arg(long, default_value = "auto")]
    pub outtype: String,
    /// --to hf: dtype of the safetensors (auto: F32/F16/BF16 tensors keep their type, quantized
    /// ones become f32; or f32, f16, bf16).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// --to hf: largest safetensors file in MiB before splitting into shards with an index.
    #[arg(long = "max-shard-mib", default_value_t = 2048)]
    pub max_shard_mib: u64,
}

#[derive(Args, Debug)]
pub struct ImatrixArgs {
    /// Model: a .gguf file or a Hugging Face folder.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Calibration text file (one trailing newline is dropped, as llama.cpp's -f does).
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Output imatrix file: GGUF form, or the legacy form when the name ends in .dat.
    #[arg(short = 'o', long, default_value = "imatrix.gguf")]
    pub output: PathBuf,
    /// Output form, overriding the file name's: gguf or dat (legacy).
    #[arg(long = "output-format", value_parser = ["gguf", "dat"])]
    pub output_format: Option<String>,
    /// Replace the output file if it exists (without it an existing file is an error).
    #[arg(long)]
    pub overwrite: bool,
    /// Tokens per chunk (the file's chunk size).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Use at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Skip this many chunks at the start of the text.
    #[arg(long = "from-chunk", alias = "chunk", default_value_t = 0)]
    pub from_chunk: usize,
    /// Logical batch size, as llama-imatrix's -b: batch-size / ctx-size chunks run side by side
    /// (this decides the order in which activations are summed, hence the last bits).
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    /// Micro-batch size, as llama-imatrix's -ub (also decides the summation order).
    #[arg(long = "ubatch-size", default_value_t = 512)]
    pub ubatch_size: usize,
    /// Do not compute perplexity (faster: skips the output projection).
    #[arg(long = "no-ppl")]
    pub no_ppl: bool,
    /// Collect data for output.weight too (a tied output projection is never collected).
    #[arg(long = "process-output")]
    pub process_output: bool,
    /// Save the output file every N chunks as well as at the end (0: only at the end).
    #[arg(long = "output-frequency", alias = "ofreq", default_value_t = 10)]
    pub output_frequency: usize,
    /// Also save a copy named <output>.at_<chunks> every N chunks (0: never).
    #[arg(long = "save-frequency", default_value_t = 0)]
    pub save_frequency: usize,
    /// Parse special tokens (like <|im_start|>) in the text instead of treating them as text.
    #[arg(long = "parse-special")]
    pub parse_special: bool,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

/// How the tuner differentiates the quantize-dequantize (`--grads`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GradMode {
    /// Straight-through: every weight inside the levels gets its gradient.
    Ste,
    /// As the reference's torch autograd: none at the levels' edges, f16 scale gradients.
    Torch,
}

/// Sampling flags of `run` and `chat` (llama.cpp's defaults).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to P (1.0: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0.0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty considers.
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed for sampling (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> crate::engine::SamplingParams {
        crate::engine::SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}
