//! Server configuration: command-line flags with `TRANSCRIBE_*` environment equivalents
//! ([`ServerArgs`]), validated into a [`ServerConfig`] before any port is bound or model loaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use transcribe_core::audio::{samples_to_seconds, seconds_to_samples};
use transcribe_core::policy::{
    DEFAULT_MAX_UTTERANCE_SAMPLES, FinalContext, PartialContext, PolicyConfig,
};
use transcribe_flags::{DecodeArgs, EngineArgs};
use transcribe_proto::v1::SourceKind;

/// Default listen address: loopback only, gRPC's customary port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Default concurrent streams (StreamingRecognize and Recognize calls together) per worker.
/// On 2 CPU cores one worker keeps about 4 real-time tiny.en streams under 2 s of lag
/// (BENCHMARKS.md); more streams are refused rather than slowing everyone down.
pub const DEFAULT_STREAMS_PER_WORKER: usize = 4;

/// Default largest `audio_content` chunk: 512 KiB, about 2.7 s of 48 kHz stereo FLOAT32
/// (the API recommends 20-200 ms chunks; tonic's own message limit is 4 MiB).
pub const DEFAULT_MAX_CHUNK_BYTES: usize = 512 * 1024;

/// Largest chunk limit accepted: tonic's default decoding message size (4 MiB).
pub const MAX_CHUNK_BYTES_LIMIT: usize = 4 * 1024 * 1024;

/// Default longest stream, in seconds of audio (one hour).
pub const DEFAULT_MAX_STREAM_SECONDS: u64 = 3_600;

/// Default largest gRPC message the server decodes: tonic's own default (4 MiB,
/// `DEFAULT_MAX_RECV_MESSAGE_SIZE` in tonic's codec). It bounds unary Recognize content.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest message limit accepted (64 MiB): a unary call's audio is held in memory whole.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Default longest audio of one unary Recognize call: 10 minutes (one decode holds a worker
/// for all of it; longer audio belongs on StreamingRecognize).
pub const DEFAULT_MAX_UNARY_AUDIO_SECONDS: u64 = 600;

/// Default StreamCaptions subscribers per caption source (each holds a queue of up to
/// [`SUBSCRIBER_QUEUE_CAPACITY`] messages).
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 100;

/// Default undelivered must-deliver messages (finals, source states, speech events) one
/// caption subscriber may have waiting: about 10 minutes of ordinary speech (a final every
/// 2-3 s). Full-policy: the subscriber is ended with RESOURCE_EXHAUSTED and its queue dropped.
pub const SUBSCRIBER_QUEUE_CAPACITY: usize = 256;

/// Default recent finals kept per caption source for `history_size` replays. Full-policy:
/// the oldest is dropped.
pub const HISTORY_CAPACITY: usize = 100;

/// Default time without any client message before a stream ends with OUT_OF_RANGE.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 30;

/// Default bound on the graceful drain at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: u64 = 10;

/// Default prompt history: none. Measured with tiny.en on `audio-fixtures/speech/pauses.wav`:
/// with the previous final as prompt, the final decode of "Please hold the line for a
/// moment." (a reduced `audio_ctx`) repeated the sentence two or three times (streaming WER
/// 0.667); without it WER was 0.048, and 0.060 vs 0.095 over all speech fixtures.
pub const DEFAULT_PROMPT_HISTORY: usize = 0;

/// Largest prompt history accepted (the policy's own limit).
const MAX_PROMPT_HISTORY: usize = 1_000;

/// `--admission-wait` on a GPU: 0.5 s, two of its streaming steps. On an H200, partials came
/// back within it where the card kept the schedule and past it where it did not
/// (BENCHMARKS.md "GPU capacity").
const DEFAULT_GPU_ADMISSION_WAIT: Duration = Duration::from_millis(500);
/// `--admission-wait` on the CPU: a final decode there takes a second or more.
const DEFAULT_CPU_ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Workers on a GPU build: a GPU overlaps several decodes. Measured on an H200 with
/// large-v3-turbo shapes: one worker keeps 4 real-time streams, 8 workers 24, 16 workers
/// 24 to 32 (BENCHMARKS.md "GPU capacity"); with CUDA graphs 8 workers 32 at the edge and
/// 16 workers 32, given 16 CPU cores (BENCHMARKS.md "CUDA graphs"). 8 stays the default:
/// more workers pay only with the cores to feed them.
const DEFAULT_GPU_WORKERS: usize = 8;

/// Most threads per decode by default (ggml scales poorly beyond this for small models).
const MAX_DEFAULT_THREADS: usize = 4;

/// Command-line flags of `transcribe-server`. Each has a `TRANSCRIBE_*` environment variable;
/// the flag wins when both are given.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "transcribe-server",
    version,
    about = "Real-time speech transcription over gRPC, with an OpenAI-compatible REST API, Prometheus metrics and HTTP health on the same port",
    after_help = crate::backend::summary()
)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "TRANSCRIBE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Model(s) to serve: a name (tiny.en, base, large-v3, ...), a quantized name (base-q8_0:
    /// made once into the cache by ggml's quantizer) or a path to a ggml file.
    /// Repeat the flag or separate with commas; the first is the default model.
    /// [default: the build's default model]
    #[arg(long = "model", env = "TRANSCRIBE_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Inference worker threads (concurrent decodes). [default: 1 on CPU, 8 on GPU]
    #[arg(long, env = "TRANSCRIBE_WORKERS")]
    pub workers: Option<usize>,

    /// Decode jobs allowed to wait for a worker before new streams are refused with
    /// RESOURCE_EXHAUSTED. [default: the stream limit]
    #[arg(long, env = "TRANSCRIBE_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,

    /// Concurrent streams (and unary calls) admitted; more get RESOURCE_EXHAUSTED.
    /// [default: 4 per worker]
    #[arg(long, env = "TRANSCRIBE_MAX_STREAMS")]
    pub max_streams: Option<usize>,

    /// Largest audio chunk accepted in one StreamingRecognize message, in bytes.
    #[arg(long, env = "TRANSCRIBE_MAX_CHUNK_BYTES", default_value_t = DEFAULT_MAX_CHUNK_BYTES)]
    pub max_chunk_bytes: usize,

    /// Largest gRPC message decoded, in bytes (bounds unary Recognize content); larger
    /// messages get OUT_OF_RANGE.
    #[arg(long, env = "TRANSCRIBE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Longest audio one Recognize call may send (e.g. 10m); longer gets OUT_OF_RANGE.
    #[arg(long, env = "TRANSCRIBE_MAX_UNARY_AUDIO", default_value = "10m", value_parser = parse_duration)]
    pub max_unary_audio: Duration,

    /// StreamCaptions subscribers per caption source; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRANSCRIBE_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Longest audio one stream may send (e.g. 3600s, 90m, 1h); then OUT_OF_RANGE.
    #[arg(long, env = "TRANSCRIBE_MAX_STREAM_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub max_stream_duration: Duration,

    /// A stream without audio for this long (no config yet, or no non-empty audio chunk)
    /// ends with OUT_OF_RANGE.
    #[arg(long, env = "TRANSCRIBE_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long shutdown waits for open streams to flush their finals.
    #[arg(long, env = "TRANSCRIBE_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// New audio between decodes of the open utterance (e.g. 500ms). Widens automatically
    /// when inference falls behind. [default: 250ms on a GPU, 500ms on the CPU]
    #[arg(long, env = "TRANSCRIBE_STEP", value_parser = parse_duration)]
    pub step: Option<Duration>,

    /// Utterance audio before its first partial (e.g. 1s). Shorter shows an utterance's
    /// first words sooner, with more decodes of little audio. [default: 500ms on a GPU, 1s
    /// on the CPU]
    #[arg(long, env = "TRANSCRIBE_MIN_PARTIAL", value_parser = parse_duration)]
    pub min_partial: Option<Duration>,

    /// Utterance audio a partial must cover before its words are committed (0s: from the
    /// first partial; at most 10s). Committed words are never retracted: on a GPU the first
    /// half-second partials often agree on misheard words, which a later commit lets later
    /// partials correct. [default: 3s on a GPU, 0s on the CPU]
    #[arg(long, env = "TRANSCRIBE_MIN_COMMIT", value_parser = parse_duration)]
    pub min_commit: Option<Duration>,

    /// Encoder context of final decodes: `full` (the 30 s window Whisper was trained on) or
    /// `fit` (fitted to the utterance with a 5 s margin: finals about 1 s sooner for base on
    /// two cores, about 1 WER point worse; BENCHMARKS.md "Streaming efficiency").
    #[arg(long, env = "TRANSCRIBE_FINAL_CONTEXT", value_enum, ignore_case = true, default_value_t = FinalContextFlag::Full)]
    pub final_context: FinalContextFlag,

    /// Encoder context of partial decodes: `fit` (the audio so far plus 1.3 s, at least
    /// 2.6 s: cheap), `wide` (plus 5.1 s, at least 10.2 s: steadier partials of short audio
    /// on some clips, worse on others; BENCHMARKS.md) or `full` (the 30 s window finals use:
    /// a full encoder pass each). [default: fit]
    #[arg(
        long,
        env = "TRANSCRIBE_PARTIAL_CONTEXT",
        value_enum,
        ignore_case = true
    )]
    pub partial_context: Option<PartialContextFlag>,

    /// Partial decodes start from the words the stream already committed in the utterance
    /// (fed to the decoder in one batched call as the transcript's start, openai/whisper's
    /// `prefix`), so only the words after them are generated token by token. Finals decode
    /// the whole utterance as before. Measured on the CPU only (BENCHMARKS.md "Prefix
    /// decoding").
    #[arg(long, env = "TRANSCRIBE_PARTIAL_PREFIX")]
    pub partial_prefix: bool,

    /// The workers' decoder steps run as one batched step when several decode at once
    /// (their KV caches in one pool, one flash-attention call per layer for all of them).
    /// Needs flash attention; on a GPU it turns CUDA graphs off for the process. On an H200
    /// 16 workers with it kept 24 large-v3 streams against 12 for 8 workers without it
    /// (BENCHMARKS.md "The batch pool on the card again"); not yet measured with
    /// large-v3-turbo, the GPU default for streams. A worker whose final falls back to
    /// sampling at a temperature leaves the pool for good (its several decoders need a cache
    /// of their own).
    #[arg(long, env = "TRANSCRIBE_BATCH")]
    pub batch: bool,

    /// Trailing silence that ends an utterance (e.g. 500ms). [default: the policy's]
    #[arg(long, env = "TRANSCRIBE_ENDPOINT_SILENCE", value_parser = parse_duration)]
    pub endpoint_silence: Option<Duration>,

    /// Longest utterance before a final is forced (at most 30s, Whisper's window).
    /// [default: the policy's]
    #[arg(long, env = "TRANSCRIBE_MAX_UTTERANCE", value_parser = parse_duration)]
    pub max_utterance: Option<Duration>,

    /// Characters of previous finals given to the decoder as context for the next
    /// utterance (0: none; off by default, see DEFAULT_PROMPT_HISTORY).
    #[arg(long, env = "TRANSCRIBE_PROMPT_HISTORY", default_value_t = DEFAULT_PROMPT_HISTORY)]
    pub prompt_history: usize,

    /// Where and how Whisper runs (shared with `transcribe`).
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Bounds on each decode, for every door (shared with `transcribe`).
    #[command(flatten)]
    pub decode: DecodeArgs,

    /// Refuse new calls (RESOURCE_EXHAUSTED, reason DECODES_BEHIND) while decodes come back
    /// later than this: a decode's wait for a worker, or a partial's wait plus decode time,
    /// at the 95th percentile over the last 10 s, or the job queued longest. The open streams
    /// keep real time instead of all falling behind. 0 turns it off. [default: 0.5s on a
    /// GPU (two streaming steps), 2s on the CPU (a final decode there takes a second or more)]
    #[arg(long, env = "TRANSCRIBE_ADMISSION_WAIT", value_parser = parse_duration)]
    pub admission_wait: Option<Duration>,

    /// A server-side caption source for StreamCaptions: `file:PATH[:loop]` (paced in real
    /// time) or `mic[:DEVICE]`, optionally named with a `NAME=` prefix (`room=mic:hw:0,0`;
    /// default names: `mic`, or the file's stem). Repeat for several; the first is the
    /// default. In TRANSCRIBE_SOURCE separate several with `;`.
    #[arg(
        long = "source",
        env = "TRANSCRIBE_SOURCE",
        value_name = "SOURCE",
        value_delimiter = ';'
    )]
    pub sources: Vec<String>,

    /// Require a bearer token on every call except health: a file of accepted tokens, one
    /// per line (blank lines and `#` comments ignored). Clients send
    /// `authorization: Bearer <token>`; calls without one get UNAUTHENTICATED.
    #[arg(long, env = "TRANSCRIBE_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// Serve TLS with this PEM certificate chain (the server's certificate first); needs
    /// --tls-key. Clients then connect with https://.
    #[arg(long, env = "TRANSCRIBE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TRANSCRIBE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Let web pages from this origin (e.g. https://captions.example.org) call the server
    /// from a browser: gRPC-Web, REST and /v1/info answer CORS requests from it. Repeat the
    /// flag or separate with commas; `*` allows any origin. None by default (the server's
    /// own page at / needs none).
    #[arg(
        long = "cors-allow-origin",
        env = "TRANSCRIBE_CORS_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
}

/// Capacities of the caption broadcast ([`crate::captions`]); the defaults are
/// [`SUBSCRIBER_QUEUE_CAPACITY`] and [`HISTORY_CAPACITY`]. Tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionLimits {
    /// Undelivered must-deliver messages per subscriber before it is ended with
    /// RESOURCE_EXHAUSTED ([`SUBSCRIBER_QUEUE_CAPACITY`]).
    pub subscriber_queue: usize,
    /// Recent finals kept for late joiners ([`HISTORY_CAPACITY`]).
    pub history: usize,
    /// Pace of file sources relative to real time (1.0 = real time; tests go faster).
    pub source_speed: f64,
}

impl Default for CaptionLimits {
    fn default() -> Self {
        Self {
            subscriber_queue: SUBSCRIBER_QUEUE_CAPACITY,
            history: HISTORY_CAPACITY,
            source_speed: 1.0,
        }
    }
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Model names as given (the first is the default). Never empty.
    pub models: Vec<String>,
    /// Inference workers (at least 1).
    pub workers: usize,
    /// Threads per decode (at least 1).
    pub threads: usize,
    /// Waiting decode jobs above which new streams are refused (at least 1).
    pub queue_depth: usize,
    /// Concurrent streams admitted (at least 1).
    pub max_streams: usize,
    /// Largest audio chunk in bytes.
    pub max_chunk_bytes: usize,
    /// Largest gRPC message decoded, in bytes (at least `max_chunk_bytes`).
    pub max_message_bytes: usize,
    /// Longest audio of one unary Recognize call.
    pub max_unary_audio: Duration,
    /// Longest audio per stream.
    pub max_stream_duration: Duration,
    /// Longest time without audio from the client (empty chunks do not count).
    pub idle_timeout: Duration,
    /// Bound on the graceful drain.
    pub drain_timeout: Duration,
    /// Decode step override.
    pub step: Option<Duration>,
    /// Override of the utterance audio before the first partial.
    pub min_partial: Option<Duration>,
    /// Override of the utterance audio before words are committed.
    pub min_commit: Option<Duration>,
    /// Encoder context of finals.
    pub final_context: FinalContext,
    /// Encoder context of partials, when set.
    pub partial_context: Option<PartialContextFlag>,
    /// Partials decode after their committed words (`--partial-prefix`).
    pub partial_prefix: bool,
    /// Workers' decoder steps batched (`--batch`).
    pub batch: bool,
    /// Endpoint silence override.
    pub endpoint_silence: Option<Duration>,
    /// Maximum utterance override.
    pub max_utterance: Option<Duration>,
    /// Characters of previous finals used as the decoder prompt.
    pub prompt_history: usize,
    /// Upper bound on text tokens per segment, every decode.
    pub max_tokens: Option<u32>,
    /// Whisper's temperature fallback on finals and files.
    pub temperature_fallback: bool,
    /// Decode without timestamp tokens, every decode.
    pub no_timestamps: bool,
    /// How late decodes may come back before new calls are refused (zero: never).
    pub admission_wait: Duration,
    /// Use the GPU backend when the binary has one.
    pub use_gpu: bool,
    /// GPU device index (with `use_gpu`).
    pub gpu_device: u16,
    /// Flash attention.
    pub flash_attn: bool,
    /// Caption sources (`--source`), the default first; names are unique.
    pub sources: Vec<SourceSpec>,
    /// Caption broadcast capacities.
    pub captions: CaptionLimits,
    /// Accepted bearer tokens (`--auth-token-file`); `None`: no authentication.
    pub auth: Option<crate::auth::TokenSet>,
    /// TLS certificate and key (`--tls-cert`, `--tls-key`); `None`: plaintext.
    pub tls: Option<crate::tls::TlsIdentity>,
    /// StreamCaptions subscribers per source (at least 1).
    pub max_subscribers: usize,
    /// Origins allowed to call from a browser (`--cors-allow-origin`); empty: none.
    pub cors: Vec<axum::http::HeaderValue>,
}

impl ServerConfig {
    /// A configuration for tests and embedding: `models` with the defaults of every other
    /// setting (as if no flag were given).
    ///
    /// # Errors
    /// [`ConfigError`] when `models` is empty or a name is blank.
    pub fn with_models(models: &[&str]) -> Result<Self, ConfigError> {
        if models.is_empty() {
            return Err(ConfigError::Invalid {
                flag: "--model",
                reason: "give at least one".into(),
            });
        }
        let mut args = ServerArgs::defaults().map_err(|e| ConfigError::Invalid {
            flag: "--model",
            reason: e.to_string(),
        })?;
        args.models = models.iter().map(|m| (*m).to_owned()).collect();
        args.validate()
    }

    /// The streaming policy every stream and caption source starts from: the device's
    /// defaults ([`PolicyConfig::for_device`]) with the server's streaming flags applied.
    /// A call's own settings (language, prompt, interim results) go on top.
    #[must_use]
    pub fn stream_policy(&self) -> PolicyConfig {
        let mut policy = PolicyConfig::for_device(self.use_gpu);
        self.apply_policy_flags(&mut policy);
        policy
    }

    /// Applies the server's streaming flags (`--step`, `--min-partial`, `--min-commit`,
    /// `--final-context`, `--partial-context`, `--endpoint-silence`, `--max-utterance`,
    /// `--max-tokens`, `--no-fallback`, `--no-timestamps`) to `policy`; the same for client
    /// streams and caption sources.
    pub fn apply_policy_flags(&self, policy: &mut PolicyConfig) {
        if let Some(step) = self.step {
            policy.step_samples = seconds_to_samples(step.as_secs_f64());
            policy.max_step_samples = policy.max_step_samples.max(policy.step_samples);
        }
        if let Some(m) = self.min_partial {
            policy.min_partial_samples = seconds_to_samples(m.as_secs_f64());
        }
        if let Some(m) = self.min_commit {
            policy.min_commit_samples = seconds_to_samples(m.as_secs_f64());
        }
        policy.final_context = self.final_context;
        if let Some(context) = self.partial_context {
            (policy.audio_ctx_floor, policy.audio_ctx_margin) =
                PartialContext::from(context).floor_and_margin();
        }
        policy.partial_prefix = self.partial_prefix;
        if let Some(silence) = self.endpoint_silence {
            policy
                .vad
                .set_end_silence(seconds_to_samples(silence.as_secs_f64()));
        }
        if let Some(max) = self.max_utterance {
            policy.max_utterance_samples = seconds_to_samples(max.as_secs_f64());
        }
        policy.max_tokens = self.max_tokens;
        policy.temperature_fallback = self.temperature_fallback;
        policy.no_timestamps = self.no_timestamps;
    }
}

/// `--final-context`: the encoder context of final decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalContextFlag {
    /// The 30 s window Whisper was trained on.
    Full,
    /// Fitted to the utterance with a 5 s margin.
    Fit,
}

impl From<FinalContextFlag> for FinalContext {
    fn from(flag: FinalContextFlag) -> Self {
        match flag {
            FinalContextFlag::Full => Self::Full,
            FinalContextFlag::Fit => Self::Fit,
        }
    }
}

/// `--partial-context`: the encoder context of partial decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartialContextFlag {
    /// The audio so far with a small margin and floor (1.3 s, 2.6 s).
    Fit,
    /// The audio so far with the wide margin and floor of fitted finals (5.1 s, 10.2 s).
    Wide,
    /// The 30 s window, as finals.
    Full,
}

impl From<PartialContextFlag> for PartialContext {
    fn from(flag: PartialContextFlag) -> Self {
        match flag {
            PartialContextFlag::Fit => Self::Fit,
            PartialContextFlag::Wide => Self::Wide,
            PartialContextFlag::Full => Self::Full,
        }
    }
}

/// A flag value that cannot work. Exit with usage status (64) and the message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `flag` has a value outside its range; `reason` says which values work.
    #[error("invalid {flag}: {reason}")]
    Invalid {
        /// The flag (`--workers`, ...).
        flag: &'static str,
        /// What is wrong and what would work.
        reason: String,
    },
}

impl ServerArgs {
    /// Every flag at its default, as if none were given: `TRANSCRIBE_*` variables are not
    /// read (for embedding and tests, through [`ServerConfig::with_models`]).
    ///
    /// # Errors
    /// Never in practice (no flag is required); clap's error otherwise.
    pub fn defaults() -> Result<Self, clap::Error> {
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["transcribe-server"])?;
        Self::from_arg_matches(&matches)
    }

    /// Checks every value and fills in defaults that depend on the machine.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad flag.
    pub fn validate(self) -> Result<ServerConfig, ConfigError> {
        let invalid = |flag, reason: &str| ConfigError::Invalid {
            flag,
            reason: reason.to_owned(),
        };
        let gpu = self.engine.use_gpu(crate::backend::has_gpu());
        let models = if self.models.is_empty() {
            vec![crate::backend::default_model().to_owned()]
        } else {
            self.models
        };
        if let Some(blank) = models.iter().find(|m| m.trim().is_empty()) {
            return Err(invalid(
                "--model",
                &format!("empty model name in {blank:?}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = models.iter().find(|m| !seen.insert(m.as_str())) {
            return Err(invalid("--model", &format!("{dup} is given twice")));
        }
        let workers = self
            .workers
            .unwrap_or(if gpu { DEFAULT_GPU_WORKERS } else { 1 });
        if workers == 0 {
            return Err(invalid("--workers", "must be at least 1"));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.engine.threads.unwrap_or(if cores <= 2 {
            1
        } else {
            (cores / workers).clamp(1, MAX_DEFAULT_THREADS)
        });
        if threads == 0 {
            return Err(invalid("--threads", "must be at least 1"));
        }
        let max_streams = self
            .max_streams
            .unwrap_or(DEFAULT_STREAMS_PER_WORKER * workers);
        if max_streams == 0 {
            return Err(invalid("--max-streams", "must be at least 1"));
        }
        let queue_depth = self.queue_depth.unwrap_or(max_streams);
        if queue_depth == 0 {
            return Err(invalid("--queue-depth", "must be at least 1"));
        }
        if self.max_chunk_bytes < 4 || self.max_chunk_bytes > MAX_CHUNK_BYTES_LIMIT {
            return Err(invalid(
                "--max-chunk-bytes",
                &format!("must be between 4 and {MAX_CHUNK_BYTES_LIMIT} (4 MiB)"),
            ));
        }
        if self.max_message_bytes < self.max_chunk_bytes
            || self.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT
        {
            return Err(invalid(
                "--max-message-bytes",
                &format!(
                    "must be between --max-chunk-bytes ({}) and {MAX_MESSAGE_BYTES_LIMIT} (64 MiB)",
                    self.max_chunk_bytes
                ),
            ));
        }
        if self.max_unary_audio.is_zero() {
            return Err(invalid("--max-unary-audio", "must be positive"));
        }
        if self.max_subscribers == 0 {
            return Err(invalid("--max-subscribers", "must be at least 1"));
        }
        if self.max_stream_duration.is_zero() {
            return Err(invalid("--max-stream-duration", "must be positive"));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("--idle-timeout", "must be positive"));
        }
        if let Some(step) = self.step
            && (step < Duration::from_millis(100) || step > Duration::from_secs(10))
        {
            return Err(invalid("--step", "must be between 100ms and 10s"));
        }
        if let Some(m) = self.min_partial
            && (m < Duration::from_millis(100) || m > Duration::from_secs(10))
        {
            return Err(invalid("--min-partial", "must be between 100ms and 10s"));
        }
        if self.min_commit.is_some_and(|m| m > Duration::from_secs(10)) {
            return Err(invalid("--min-commit", "must be at most 10s"));
        }
        if self.batch && !self.engine.flash_attn(gpu) {
            return Err(invalid(
                "--batch",
                "needs flash attention (--flash-attn on)",
            ));
        }
        if let Some(s) = self.endpoint_silence
            && (s < Duration::from_millis(100) || s > Duration::from_secs(10))
        {
            return Err(invalid(
                "--endpoint-silence",
                "must be between 100ms and 10s",
            ));
        }
        if let Some(m) = self.max_utterance
            && (m < Duration::from_secs(1) || m > Duration::from_secs(30))
        {
            return Err(invalid(
                "--max-utterance",
                "must be between 1s and 30s (Whisper's window)",
            ));
        }
        let max_utterance =
            self.max_utterance
                .unwrap_or(Duration::from_secs_f64(samples_to_seconds(
                    DEFAULT_MAX_UTTERANCE_SAMPLES,
                )));
        if self.min_partial.is_some_and(|m| m > max_utterance) {
            return Err(invalid(
                "--min-partial",
                "must not exceed the longest utterance (--max-utterance)",
            ));
        }
        if self.prompt_history > MAX_PROMPT_HISTORY {
            return Err(invalid(
                "--prompt-history",
                &format!("must be at most {MAX_PROMPT_HISTORY}"),
            ));
        }
        let sources = parse_sources(&self.sources)?;
        if !cfg!(feature = "capture")
            && sources
                .iter()
                .any(|s| matches!(s.input, SourceInput::Mic { .. }))
        {
            return Err(ConfigError::Invalid {
                flag: "--source",
                reason: NO_CAPTURE.into(),
            });
        }
        let auth = match &self.auth_token_file {
            Some(path) => {
                Some(
                    crate::auth::TokenSet::load(path).map_err(|e| ConfigError::Invalid {
                        flag: "--auth-token-file",
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let tls =
            crate::tls::TlsIdentity::from_flags(self.tls_cert.as_deref(), self.tls_key.as_deref())
                .map_err(|e| ConfigError::Invalid {
                    flag: e.flag(),
                    reason: e.to_string(),
                })?;
        let cors = self
            .cors_allow_origins
            .iter()
            .map(|origin| {
                // scheme://host[:port], nothing after it (a browser's Origin header).
                let origin = origin.trim_end_matches('/');
                let valid = origin == "*"
                    || ["http://", "https://"].iter().any(|scheme| {
                        origin
                            .strip_prefix(scheme)
                            .is_some_and(|host| !host.is_empty() && !host.contains('/'))
                    });
                axum::http::HeaderValue::from_str(origin)
                    .ok()
                    .filter(|_| valid)
                    .ok_or_else(|| ConfigError::Invalid {
                        flag: "--cors-allow-origin",
                        reason: format!(
                            "{origin:?} is not an origin: give scheme://host[:port] or *"
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServerConfig {
            listen: self.listen,
            models,
            workers,
            threads,
            queue_depth,
            max_streams,
            max_chunk_bytes: self.max_chunk_bytes,
            max_message_bytes: self.max_message_bytes,
            max_unary_audio: self.max_unary_audio,
            max_stream_duration: self.max_stream_duration,
            idle_timeout: self.idle_timeout,
            drain_timeout: self.drain_timeout,
            step: self.step,
            min_partial: self.min_partial,
            min_commit: self.min_commit,
            final_context: self.final_context.into(),
            partial_context: self.partial_context,
            partial_prefix: self.partial_prefix,
            batch: self.batch,
            endpoint_silence: self.endpoint_silence,
            max_utterance: self.max_utterance,
            prompt_history: self.prompt_history,
            max_tokens: self.decode.max_tokens,
            temperature_fallback: !self.decode.no_fallback,
            no_timestamps: self.decode.no_timestamps,
            admission_wait: self.admission_wait.unwrap_or(if gpu {
                DEFAULT_GPU_ADMISSION_WAIT
            } else {
                DEFAULT_CPU_ADMISSION_WAIT
            }),
            use_gpu: gpu,
            gpu_device: self.engine.gpu_device,
            flash_attn: self.engine.flash_attn(gpu),
            sources,
            max_subscribers: self.max_subscribers,
            captions: CaptionLimits::default(),
            auth,
            tls,
            cors,
        })
    }
}

/// Why a microphone cannot be opened in a build without the `capture` feature.
pub const NO_CAPTURE: &str = "this build has no microphone capture (it was built without the \
     `capture` feature, so that it needs no audio libraries); rebuild with it for microphones";

/// Where a source's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceInput {
    /// An audio file decoded once and paced in real time.
    File {
        /// The file.
        path: PathBuf,
        /// Start over (after a second of silence) at its end instead of ending.
        looped: bool,
    },
    /// A capture device.
    Mic {
        /// The device name; `None` for the default input device.
        device: Option<String>,
    },
}

/// One `--source` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The name subscribers ask for.
    pub name: String,
    /// Its audio.
    pub input: SourceInput,
}

impl SourceSpec {
    /// Parses `[NAME=]file:PATH[:loop]` or `[NAME=]mic[:DEVICE]`.
    ///
    /// # Errors
    /// A message saying which forms are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let form = "use file:PATH[:loop] or mic[:DEVICE], optionally prefixed by NAME=";
        let (name, body) = match text.split_once('=') {
            Some((name, body)) if body.starts_with("file:") || body.starts_with("mic") => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(format!(
                        "source name {name:?} must be letters, digits, '-', '_' or '.'"
                    ));
                }
                (Some(name.to_owned()), body)
            }
            _ => (None, text),
        };
        let input = if let Some(rest) = body.strip_prefix("file:") {
            let (path, looped) = match rest.strip_suffix(":loop") {
                Some(path) => (path, true),
                None => (rest, false),
            };
            if path.is_empty() {
                return Err(format!("{text:?}: the file path is empty; {form}"));
            }
            SourceInput::File {
                path: PathBuf::from(path),
                looped,
            }
        } else if body == "mic" {
            SourceInput::Mic { device: None }
        } else if let Some(device) = body.strip_prefix("mic:") {
            if device.is_empty() {
                return Err(format!("{text:?}: the device name is empty; {form}"));
            }
            SourceInput::Mic {
                device: Some(device.to_owned()),
            }
        } else {
            return Err(format!("{text:?} is not a source; {form}"));
        };
        let name = name.unwrap_or_else(|| match &input {
            SourceInput::Mic { .. } => "mic".to_owned(),
            SourceInput::File { path, .. } => path
                .file_stem()
                .map_or_else(|| "file".to_owned(), |s| s.to_string_lossy().into_owned()),
        });
        Ok(Self { name, input })
    }

    /// The kind for `CaptionSource.kind`.
    pub fn kind(&self) -> SourceKind {
        match self.input {
            SourceInput::File { .. } => SourceKind::File,
            SourceInput::Mic { .. } => SourceKind::Microphone,
        }
    }

    /// A human-readable description (`CaptionSource.display_name`).
    pub fn display_name(&self) -> String {
        match &self.input {
            SourceInput::File { path, looped } => format!(
                "file {}{}",
                path.display(),
                if *looped { " (looping)" } else { "" }
            ),
            SourceInput::Mic { device: None } => "default microphone".to_owned(),
            SourceInput::Mic { device: Some(d) } => format!("microphone {d}"),
        }
    }
}

/// Parses `--source` values: each well-formed, names unique, files present.
fn parse_sources(values: &[String]) -> Result<Vec<SourceSpec>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        flag: "--source",
        reason,
    };
    let mut specs: Vec<SourceSpec> = Vec::with_capacity(values.len());
    for value in values.iter().filter(|v| !v.trim().is_empty()) {
        let spec = SourceSpec::parse(value.trim()).map_err(invalid)?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(invalid(format!(
                "two sources are named {:?}; name them with NAME=",
                spec.name
            )));
        }
        if let SourceInput::File { path, .. } = &spec.input
            && !path.is_file()
        {
            return Err(invalid(format!(
                "{} is not a readable file",
                path.display()
            )));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (`500ms`, `1.5s`, `90m`),
/// or a bare number of seconds.
///
/// # Errors
/// A message naming the accepted forms, for clap to print.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (use e.g. 500ms, 2s, 1.5m, 1h)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3_600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_core::policy::{
        DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN, MAX_AUDIO_CTX, WIDE_AUDIO_CTX_FLOOR,
        WIDE_AUDIO_CTX_MARGIN,
    };

    fn args(extra: &[&str]) -> ServerArgs {
        ServerArgs::parse_from(std::iter::once("transcribe-server").chain(extra.iter().copied()))
    }

    #[test]
    fn specs_parse() -> Result<(), String> {
        let cases: &[(&str, &str, SourceInput)] = &[
            (
                "file:/tmp/a.wav",
                "a",
                SourceInput::File {
                    path: "/tmp/a.wav".into(),
                    looped: false,
                },
            ),
            (
                "lobby=file:/tmp/a b.flac:loop",
                "lobby",
                SourceInput::File {
                    path: "/tmp/a b.flac".into(),
                    looped: true,
                },
            ),
            ("mic", "mic", SourceInput::Mic { device: None }),
            (
                "room=mic:hw:0,0",
                "room",
                SourceInput::Mic {
                    device: Some("hw:0,0".into()),
                },
            ),
            (
                "file:c:=d.wav",
                "c:=d",
                SourceInput::File {
                    path: "c:=d.wav".into(),
                    looped: false,
                },
            ),
        ];
        for (text, name, input) in cases {
            let spec = SourceSpec::parse(text)?;
            assert_eq!(&spec.name, name, "{text}");
            assert_eq!(&spec.input, input, "{text}");
        }
        for bad in [
            "",
            "file:",
            "mic:",
            "speaker",
            "a b=mic",
            "=mic",
            "file::loop",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad:?} parsed");
        }
        Ok(())
    }

    #[test]
    fn durations_parse() -> Result<(), String> {
        assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
        assert_eq!(parse_duration("2")?, Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s")?, Duration::from_millis(1_500));
        assert_eq!(parse_duration("90m")?, Duration::from_secs(5_400));
        assert_eq!(parse_duration("1h")?, Duration::from_secs(3_600));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        Ok(())
    }

    #[test]
    fn defaults_validate() -> Result<(), ConfigError> {
        let c = args(&["--model", "tiny.en", "--cpu"]).validate()?;
        assert_eq!(c.models, ["tiny.en"]);
        assert_eq!(c.workers, 1);
        assert_eq!(c.max_streams, DEFAULT_STREAMS_PER_WORKER);
        assert_eq!(c.queue_depth, c.max_streams);
        assert!(!c.use_gpu);
        Ok(())
    }

    #[test]
    fn batch_needs_flash_attention() -> Result<(), ConfigError> {
        let err = args(&["--cpu", "--batch", "--flash-attn", "off"])
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--batch"), "{err}");
        let c = args(&["--cpu", "--batch", "--flash-attn", "on", "--workers", "3"]).validate()?;
        assert!(c.batch);
        let c = args(&["--cpu", "--workers", "3"]).validate()?;
        assert!(!c.batch);
        Ok(())
    }

    #[test]
    fn models_repeat_or_comma_separate() -> Result<(), ConfigError> {
        let c = args(&["--model", "tiny.en,base", "--model", "small"]).validate()?;
        assert_eq!(c.models, ["tiny.en", "base", "small"]);
        Ok(())
    }

    #[test]
    #[cfg(feature = "capture")]
    fn sources_repeat_and_name() -> Result<(), ConfigError> {
        let c = args(&["--source", "mic", "--source", "room=mic:hw:0,0"]).validate()?;
        let names: Vec<_> = c.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mic", "room"]);
        let c = args(&["--source", "a=mic;b=mic"]).validate()?;
        assert_eq!(c.sources.len(), 2);
        Ok(())
    }

    #[test]
    #[cfg(not(feature = "capture"))]
    fn a_build_without_capture_refuses_microphone_sources() {
        let e = args(&["--source", "room=mic"]).validate().err();
        assert!(
            matches!(&e, Some(ConfigError::Invalid { flag: "--source", reason }) if reason == NO_CAPTURE),
            "{e:?}"
        );
    }

    #[test]
    fn streams_start_from_the_device_policy_with_the_flags() -> Result<(), ConfigError> {
        let config = args(&[]).validate()?;
        assert_eq!(
            config.stream_policy(),
            PolicyConfig::for_device(config.use_gpu)
        );
        let config = args(&["--step", "300ms", "--endpoint-silence", "700ms"]).validate()?;
        let policy = config.stream_policy();
        assert_eq!(policy.step_samples, 4_800);
        assert_eq!(policy.vad.end_silence_samples, 11_200);
        // An end silence under the default post-roll (200 ms) brings the post-roll down with
        // it: every stream's policy stays valid.
        let policy = args(&["--endpoint-silence", "150ms"])
            .validate()?
            .stream_policy();
        assert_eq!(policy.vad.post_roll_samples, 2_400);
        assert!(policy.validate().is_ok(), "{:?}", policy.validate());
        for (value, samples) in [("0s", 0), ("1500ms", 24_000)] {
            let policy = args(&["--min-commit", value]).validate()?.stream_policy();
            assert_eq!(policy.min_commit_samples, samples, "--min-commit {value}");
        }
        assert!(matches!(
            args(&["--min-commit", "11s"]).validate(),
            Err(ConfigError::Invalid {
                flag: "--min-commit",
                ..
            })
        ));
        assert_eq!(
            policy.min_commit_samples,
            PolicyConfig::for_device(config.use_gpu).min_commit_samples,
            "what no flag sets is the device's"
        );
        for (value, floor, margin) in [
            ("fit", DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN),
            ("wide", WIDE_AUDIO_CTX_FLOOR, WIDE_AUDIO_CTX_MARGIN),
        ] {
            let policy = args(&["--partial-context", value])
                .validate()?
                .stream_policy();
            assert_eq!(
                (policy.audio_ctx_floor, policy.audio_ctx_margin),
                (floor, margin),
                "--partial-context {value}"
            );
        }
        Ok(())
    }

    #[test]
    fn streaming_flags_reach_the_policy() -> Result<(), ConfigError> {
        let mut policy = PolicyConfig::default();
        args(&[]).validate()?.apply_policy_flags(&mut policy);
        assert_eq!(policy, PolicyConfig::default(), "no flag, no change");
        let config = args(&[
            "--step",
            "4s",
            "--min-partial",
            "600ms",
            "--final-context",
            "FIT",
            "--partial-context",
            "full",
            "--endpoint-silence",
            "800ms",
            "--max-utterance",
            "12s",
            "--partial-prefix",
        ])
        .validate()?;
        config.apply_policy_flags(&mut policy);
        assert!(policy.partial_prefix);
        assert_eq!(policy.step_samples, 64_000);
        assert_eq!(
            policy.max_step_samples, 64_000,
            "widest step at least the step"
        );
        assert_eq!(policy.min_partial_samples, 9_600);
        assert_eq!(policy.final_context, FinalContext::Fit);
        assert_eq!(
            policy.audio_ctx_floor, MAX_AUDIO_CTX,
            "full-window partials"
        );
        assert_eq!(policy.vad.end_silence_samples, 12_800);
        assert_eq!(policy.max_utterance_samples, 192_000);
        assert!(
            ServerArgs::try_parse_from(["transcribe-server", "--final-context", "wide"]).is_err()
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--workers", "0"], "--workers"),
            (&["--threads", "0"], "--threads"),
            (&["--max-streams", "0"], "--max-streams"),
            (&["--queue-depth", "0"], "--queue-depth"),
            (&["--max-chunk-bytes", "2"], "--max-chunk-bytes"),
            (&["--max-message-bytes", "1000"], "--max-message-bytes"),
            (&["--max-unary-audio", "0s"], "--max-unary-audio"),
            (&["--max-subscribers", "0"], "--max-subscribers"),
            (&["--idle-timeout", "0s"], "--idle-timeout"),
            (&["--max-utterance", "40s"], "--max-utterance"),
            (&["--step", "10ms"], "--step"),
            (&["--min-partial", "20s"], "--min-partial"),
            (
                &["--min-partial", "3s", "--max-utterance", "2s"],
                "--min-partial",
            ),
            (&["--model", "a", "--model", "a"], "--model"),
            (&["--source", "speaker"], "--source"),
            (&["--source", "file:/nonexistent/x.wav"], "--source"),
            (&["--source", "mic", "--source", "mic:hw1"], "--source"),
        ];
        for (flags, want) in cases {
            match args(flags).validate() {
                Err(ConfigError::Invalid { flag, .. }) => assert_eq!(flag, *want, "{flags:?}"),
                Ok(_) => panic!("{flags:?} validated"),
            }
        }
    }
}
