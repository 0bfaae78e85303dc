//! The Whisper inference engine: whisper.cpp through `whisper-rs`, behind
//! [`transcribe_core::Transcriber`].
//!
//! One [`WhisperModel`] holds the loaded weights (a `WhisperContext`) and is shared; each
//! [`WhisperSession`] owns one `WhisperState` (its own KV cache and buffers) and decodes one
//! buffer at a time. A worker pool keeps one session per worker thread.
//!
//! # Layout
//! - [`WhisperModel`], [`EngineConfig`], [`LoadError`]: loading a ggml file.
//! - [`WhisperSession`]: a decoding context implementing `Transcriber`, with a
//!   [`CancelHandle`] wired to whisper.cpp's abort callback.
//! - [`backend`]: which compute backend this binary was built with.
//! - [`devices`]: the GPU devices ggml sees, [`devices::describe`] for logs.
//! - [`chunked`]: [`chunked::transcribe_chunks`], a file's VAD chunks on several sessions at
//!   once.
//! - [`bench`]: [`bench::time_kernels`], encoder and per-token decoder timings.
//! - [`greedy`]: [`greedy::GreedyDecoder`], greedy decoding after a forced prefix (measured,
//!   not yet used by streaming).
//! - [`quantize`]: ggml's block quantizer, for `transcribe_models::quantize_ggml`.
//! - `words` (private): assembling words with times and probabilities from tokens.
//!
//! # Example
//! ```no_run
//! use transcribe_core::{DecodeOptions, Transcriber};
//! use transcribe_engine::{EngineConfig, WhisperModel};
//! let model = WhisperModel::load("ggml-tiny.en.bin".as_ref(), &EngineConfig::default())?;
//! let mut session = model.session()?;
//! let transcript = session.transcribe(&vec![0.0; 16_000], &DecodeOptions::default())?;
//! println!("{}", transcript.text());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod chunked;
pub mod devices;
pub mod greedy;
pub mod multi;
pub mod quantize;
mod session;
mod words;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

pub use session::{MIN_DECODE_SAMPLES, ProgressFn, WhisperSession};
pub use transcribe_core::CancelHandle;
use transcribe_core::EngineError;
use whisper_rs::{WhisperContext, WhisperContextParameters};

/// The compute backend compiled into this binary: `cuda`, `metal`, `vulkan` or `cpu`
/// (`coreml` adds the Neural Engine encoder to `metal`/`cpu`).
pub fn backend() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(all(target_os = "macos", target_arch = "aarch64"))
        || cfg!(all(feature = "metal", target_vendor = "apple"))
    {
        "metal"
    } else if cfg!(feature = "vulkan") {
        "vulkan"
    } else {
        "cpu"
    }
}

/// The model files are transcribed with when none is given: large-v3 on GPU builds; on CPU
/// builds the model that keeps streaming real-time on a 2-core machine (README "Choosing the
/// default model").
pub fn default_model() -> &'static str {
    default_model_for(has_gpu_backend(), false)
}

/// The model live streams (the server, `transcribe --mic`) use when none is given: on GPU
/// builds large-v3-turbo, which keeps about 4 times as many real-time streams on one card
/// as large-v3 (BENCHMARKS.md "GPU capacity"); on CPU builds the same as [`default_model`].
pub fn default_streaming_model() -> &'static str {
    default_model_for(has_gpu_backend(), true)
}

/// [`default_model`] (`streaming` false) and [`default_streaming_model`] for a build with
/// or without a GPU backend.
pub fn default_model_for(gpu: bool, streaming: bool) -> &'static str {
    match (gpu, streaming) {
        (true, false) => "large-v3",
        (true, true) => "large-v3-turbo",
        (false, _) => DEFAULT_CPU_MODEL,
    }
}

/// The CPU builds' default model (see [`default_model`]): measured on 2 cores, tiny.en
/// keeps one real-time stream going (compute load 0.73-0.92) where base falls behind
/// (1.02-1.29); BENCHMARKS.md "Choosing the CPU default model".
pub const DEFAULT_CPU_MODEL: &str = "tiny.en";

/// One line for `--help`: the backend compiled in and the default model (no GPU is
/// touched; `--version` lists the devices).
pub fn build_summary() -> String {
    if has_gpu_backend() {
        format!(
            "This build: backend {}; default model {} for files, {} for live streams. `--version` lists the GPUs; --cpu runs on the CPU.",
            backend(),
            default_model(),
            default_streaming_model()
        )
    } else {
        format!(
            "This build: backend cpu; default model {}.",
            default_model()
        )
    }
}

/// Whether this binary was built with a GPU backend.
pub fn has_gpu_backend() -> bool {
    backend() != "cpu"
}

/// whisper.cpp's version and the CPU features ggml was built with, for `--version` and logs.
pub fn system_info() -> String {
    format!(
        "whisper.cpp {}; {}",
        whisper_rs::get_whisper_version(),
        whisper_rs::print_system_info().trim()
    )
}

/// How to load a model and run decodes.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Threads per decode. On a small shared CPU, 1 per concurrent decode is best (ggml's
    /// spinning workers collapse under contention: docs/DESIGN.md "whisper-rs facts").
    pub threads: usize,
    /// Use the GPU backend when the binary has one.
    pub use_gpu: bool,
    /// GPU device index.
    pub gpu_device: i32,
    /// Flash attention (faster on GPUs; whisper-rs defaults it off).
    pub flash_attn: bool,
    /// Slots of the model's batch pool (0: none). With flash attention, the first
    /// `batch_slots` sessions keep their KV caches in one pool, and their single-token
    /// decoder steps run together as one step (our vendored whisper.cpp's
    /// `whisper_set_batch_slots`, vendor/whisper-rs-sys/VENDORED.md; BENCHMARKS.md
    /// "Batched decoding"). Sessions beyond it decode alone, as without a pool. On a GPU a
    /// pool turns ggml's CUDA graphs off for the whole process (runs with graphs on and 8
    /// or 16 slots ended in a CUDA error): load pooled models before any GPU decode.
    pub batch_slots: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
            use_gpu: has_gpu_backend(),
            gpu_device: 0,
            flash_attn: has_gpu_backend(),
            batch_slots: 0,
        }
    }
}

/// How long a pooled session's decoder step waits for the other stepping sessions of its
/// pool before running without them, in microseconds: a few times a step's sampling time
/// on the CPU, far below a large model's decoder step on a GPU.
pub const BATCH_WAIT_US: i64 = 2_000;

/// Decoder steps run by batch pools in this process, and tokens decoded in them
/// (tokens / steps is the mean batch size). (0, 0) without pools.
pub fn batch_stats() -> (i64, i64) {
    read_counters(whisper_rs_sys::whisper_batch_stats)
}

/// Time the batch pools of this process spent running pooled steps, and the sum over pooled
/// requests of the time from a session's request to its result (waiting included), both in
/// microseconds. (0, 0) without pools.
pub fn batch_time_us() -> (i64, i64) {
    read_counters(whisper_rs_sys::whisper_batch_time)
}

/// Decoder calls made in this process (every model, every session): single-token steps
/// (pooled or not) and the tokens of batched calls (prompts and decoder prefixes).
/// Differences between two readings measure a run's decoder work.
pub fn decode_stats() -> (i64, i64) {
    read_counters(whisper_rs_sys::whisper_decode_stats)
}

/// A pair of the vendored whisper.cpp's process-wide counters, read by `read`.
fn read_counters(read: unsafe extern "C" fn(*mut i64, *mut i64)) -> (i64, i64) {
    let (mut first, mut second) = (0_i64, 0_i64);
    // SAFETY: the counter getters only write the two integers they are given.
    #[allow(unsafe_code)]
    unsafe {
        read(&raw mut first, &raw mut second);
    }
    (first, second)
}

/// Loads `path` with `params`, giving the context `slots` batch-pool slots. whisper.cpp
/// reads the slot count when a context is created, from a process-wide setting: it is set
/// and put back to 0 under one lock, so that no other load sees it.
fn load_context(
    path: &str,
    params: WhisperContextParameters<'_>,
    slots: usize,
) -> Result<WhisperContext, whisper_rs::WhisperError> {
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOADING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = i32::try_from(slots).unwrap_or(i32::MAX);
    // SAFETY: plain C calls setting two integers.
    #[allow(unsafe_code)]
    unsafe {
        whisper_rs_sys::whisper_set_batch_slots(n, BATCH_WAIT_US);
    }
    let ctx = WhisperContext::new_with_params(path, params);
    #[allow(unsafe_code)]
    unsafe {
        whisper_rs_sys::whisper_set_batch_slots(0, BATCH_WAIT_US);
    }
    ctx
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist or cannot be read. Check the path, or fetch the model with
    /// `transcribe models pull NAME`.
    #[error("cannot read model file {path}: {source}")]
    Unreadable {
        /// The model path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// whisper.cpp rejected the file (not a ggml Whisper model, or truncated). Re-download
    /// or re-import it.
    #[error("{path} is not a loadable Whisper ggml model ({reason})")]
    Invalid {
        /// The model path.
        path: PathBuf,
        /// What whisper.cpp said.
        reason: String,
    },
    /// A decoding state could not be allocated (out of memory).
    #[error("cannot create a decoding state for {path}: {reason}")]
    State {
        /// The model path.
        path: PathBuf,
        /// What whisper.cpp said.
        reason: String,
    },
}

/// A loaded Whisper model, cheap to clone and shared by every session.
#[derive(Clone)]
pub struct WhisperModel {
    inner: Arc<ModelInner>,
}

struct ModelInner {
    ctx: WhisperContext,
    path: PathBuf,
    config: EngineConfig,
}

static LOGGING: Once = Once::new();

/// Routes whisper.cpp/ggml logs away from stderr (whisper-rs prints them until told), once.
pub(crate) fn quiet_whisper_logs() {
    LOGGING.call_once(whisper_rs::install_logging_hooks);
}

impl WhisperModel {
    /// Loads a ggml model file.
    ///
    /// # Errors
    /// [`LoadError::Unreadable`] when the file cannot be opened, [`LoadError::Invalid`] when
    /// whisper.cpp cannot parse it.
    pub fn load(path: &Path, config: &EngineConfig) -> Result<Self, LoadError> {
        quiet_whisper_logs();
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(LoadError::Invalid {
                path: path.to_owned(),
                reason: "not a file".into(),
            });
        }
        // whisper.cpp trusts the file's counts (1.8.3 overflows a stack array on a tensor
        // with more than 4 dimensions, upstream #3957): check its structure first.
        transcribe_models::ggml::inspect_ggml(path).map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut params = WhisperContextParameters::default();
        params
            .use_gpu(config.use_gpu)
            .flash_attn(config.flash_attn)
            .gpu_device(config.gpu_device);
        let path_str = path.to_str().ok_or_else(|| LoadError::Invalid {
            path: path.to_owned(),
            reason: "path is not valid UTF-8".into(),
        })?;
        let ctx =
            load_context(path_str, params, config.batch_slots).map_err(|e| LoadError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        tracing::info!(
            message = "Model loaded.",
            path = %path.display(),
            model_type = %ctx.model_type_readable_str_lossy().unwrap_or_default(),
            multilingual = ctx.is_multilingual(),
            backend = backend(),
            device = %devices::describe(config.use_gpu, config.gpu_device),
            use_gpu = config.use_gpu,
            flash_attn = config.flash_attn,
            batch_slots = config.batch_slots,
        );
        Ok(Self {
            inner: Arc::new(ModelInner {
                ctx,
                path: path.to_owned(),
                config: config.clone(),
            }),
        })
    }

    /// Creates a decoding session with its own `WhisperState`.
    ///
    /// # Errors
    /// [`LoadError::State`] when whisper.cpp cannot allocate the state.
    pub fn session(&self) -> Result<WhisperSession, LoadError> {
        WhisperSession::new(self.clone())
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        self.inner.ctx.is_multilingual()
    }

    /// whisper.cpp's size label ("tiny", "base", ...).
    pub fn model_type(&self) -> String {
        self.inner
            .ctx
            .model_type_readable_str_lossy()
            .map(|s| s.into_owned())
            .unwrap_or_default()
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Whisper's tokens for `text`, at most `max_tokens` of them.
    ///
    /// # Errors
    /// [`EngineError::Inference`] when whisper.cpp cannot tokenize it.
    pub fn tokenize(&self, text: &str, max_tokens: usize) -> Result<Vec<i32>, EngineError> {
        self.inner
            .ctx
            .tokenize(text, max_tokens)
            .map_err(|e| EngineError::Inference(format!("tokenizing {text:?}: {e}")))
    }

    pub(crate) fn context(&self) -> &WhisperContext {
        &self.inner.ctx
    }
}

impl transcribe_core::DecoderFactory for WhisperModel {
    fn create(&self) -> Result<Box<dyn transcribe_core::Decoder>, String> {
        Ok(Box::new(self.session().map_err(|e| e.to_string())?))
    }
}

#[cfg(test)]
mod tests {
    /// The pure language table request validation uses is whisper.cpp's own.
    #[test]
    fn core_languages_are_whisper_cpp_s() {
        let max = whisper_rs::get_lang_max_id();
        assert_eq!(
            usize::try_from(max + 1).ok(),
            Some(transcribe_core::language::LANGUAGES.len())
        );
        for (id, (code, name)) in transcribe_core::language::LANGUAGES.iter().enumerate() {
            let id = i32::try_from(id).unwrap_or(i32::MAX);
            assert_eq!(whisper_rs::get_lang_id(code), Some(id), "{code}");
            assert_eq!(whisper_rs::get_lang_id(name), Some(id), "{name}");
            assert_eq!(whisper_rs::get_lang_str(id), Some(*code));
        }
        assert_eq!(whisper_rs::get_lang_id("xx"), None);
    }

    #[test]
    fn gpu_builds_stream_with_turbo_and_transcribe_files_with_large_v3() {
        use super::{DEFAULT_CPU_MODEL, default_model_for};
        assert_eq!(default_model_for(true, false), "large-v3");
        assert_eq!(default_model_for(true, true), "large-v3-turbo");
        assert_eq!(default_model_for(false, false), DEFAULT_CPU_MODEL);
        assert_eq!(default_model_for(false, true), DEFAULT_CPU_MODEL);
        for name in ["large-v3", "large-v3-turbo"] {
            assert!(
                name.parse::<transcribe_models::ModelName>().is_ok(),
                "{name}"
            );
        }
    }
}
