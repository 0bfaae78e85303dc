//! The models a server serves: their names (known before loading, so `--model` is validated
//! before the port is bound and ListModels answers while loading) and a [`ModelLoader`] that
//! resolves and loads them after the port is bound (health says NOT_SERVING meanwhile).
//!
//! [`WhisperLoader`] loads ggml files through `transcribe-models` and `transcribe-engine`;
//! tests use [`FnLoader`] with a scripted fake engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use transcribe_core::DecoderFactory;

use crate::error::ServerError;
#[cfg(feature = "whisper")]
pub use whisper::WhisperLoader;

/// What ListModels says about a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The name clients put in `RecognitionConfig.model`.
    pub name: String,
    /// Whether it knows languages other than English (and can translate).
    pub multilingual: bool,
    /// Free-form facts: backend, size label, file.
    pub attributes: BTreeMap<String, String>,
}

/// A loaded model: its facts and how workers make decoders for it.
pub struct LoadedModel {
    /// Its facts.
    pub info: ModelInfo,
    /// Makes one decoder per worker.
    pub factory: Arc<dyn DecoderFactory>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Resolves and loads the configured models (blocking; the server runs it off the runtime).
pub trait ModelLoader: Send + 'static {
    /// The names that will be served, the default first. Known before loading.
    fn names(&self) -> Vec<String>;

    /// Loads every model, in the order of [`ModelLoader::names`].
    ///
    /// # Errors
    /// [`ServerError::ModelLoad`] naming the model that failed.
    fn load(self: Box<Self>) -> Result<Vec<LoadedModel>, ServerError>;
}

/// Load function of an [`FnLoader`].
pub type LoadFn = Box<dyn FnOnce() -> Result<Vec<LoadedModel>, ServerError> + Send>;

/// A loader from a closure: for tests and embedders with their own engines.
pub struct FnLoader {
    names: Vec<String>,
    load: LoadFn,
}

impl FnLoader {
    /// Serves `names` with the models `load` returns (same order).
    pub fn new(names: Vec<String>, load: LoadFn) -> Self {
        Self { names, load }
    }
}

impl ModelLoader for FnLoader {
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn load(self: Box<Self>) -> Result<Vec<LoadedModel>, ServerError> {
        (self.load)()
    }
}

/// The whisper.cpp loader (the `whisper` feature).
#[cfg(feature = "whisper")]
mod whisper {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use transcribe_engine::{EngineConfig, WhisperModel};
    use transcribe_models::{FetchOptions, ModelSpec};

    use super::{LoadedModel, ModelInfo, ModelLoader};
    use crate::config::{ConfigError, ServerConfig};
    use crate::error::ServerError;

    /// Loads whisper.cpp ggml models by name (cache, then the configured sources) or path.
    #[derive(Debug, Clone)]
    pub struct WhisperLoader {
        specs: Vec<(String, ModelSpec)>,
        fetch: FetchOptions,
        engine: EngineConfig,
    }

    impl WhisperLoader {
        /// Parses the configured model names (no I/O beyond checking that paths exist).
        ///
        /// # Errors
        /// [`ConfigError::Invalid`] for `--model` when a value is neither a known name nor a file.
        /// Quantized names (`base-q8_0`) are made with the engine's ggml quantizer unless `fetch`
        /// brings its own.
        pub fn from_config(
            config: &ServerConfig,
            mut fetch: FetchOptions,
        ) -> Result<Self, ConfigError> {
            fetch
                .quantizer
                .get_or_insert(transcribe_engine::quantize::quantize_rows);
            let mut specs = Vec::with_capacity(config.models.len());
            for given in &config.models {
                let spec = ModelSpec::parse(given).map_err(|e| ConfigError::Invalid {
                    flag: "--model",
                    reason: e.to_string(),
                })?;
                let name = match &spec {
                    ModelSpec::Name(_) | ModelSpec::Quantized(..) => spec.to_string(),
                    ModelSpec::Path(p) => model_name_of_path(p),
                };
                if specs.iter().any(|(n, _)| *n == name) {
                    return Err(ConfigError::Invalid {
                        flag: "--model",
                        reason: format!("two models would both be called {name}"),
                    });
                }
                specs.push((name, spec));
            }
            let engine = EngineConfig {
                threads: config.threads,
                use_gpu: config.use_gpu,
                gpu_device: i32::from(config.gpu_device),
                flash_attn: config.flash_attn,
                batch_slots: if config.batch { config.workers } else { 0 },
            };
            Ok(Self {
                specs,
                fetch,
                engine,
            })
        }
    }

    /// A served name for a model file: its file name without `ggml-` and `.bin`
    /// (`/m/ggml-tiny.en.bin` is `tiny.en`).
    pub fn model_name_of_path(path: &std::path::Path) -> String {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = file.strip_suffix(".bin").unwrap_or(&file);
        let name = stem.strip_prefix("ggml-").unwrap_or(stem);
        if name.is_empty() {
            path.display().to_string()
        } else {
            name.to_owned()
        }
    }

    impl ModelLoader for WhisperLoader {
        fn names(&self) -> Vec<String> {
            self.specs.iter().map(|(n, _)| n.clone()).collect()
        }

        fn load(self: Box<Self>) -> Result<Vec<LoadedModel>, ServerError> {
            let mut loaded = Vec::with_capacity(self.specs.len());
            for (name, spec) in &self.specs {
                let fail = |reason: String| ServerError::ModelLoad {
                    name: name.clone(),
                    reason,
                };
                let path = transcribe_models::resolve(spec, &self.fetch)
                    .map_err(|e| fail(e.to_string()))?;
                let started = std::time::Instant::now();
                let model =
                    WhisperModel::load(&path, &self.engine).map_err(|e| fail(e.to_string()))?;
                tracing::info!(
                    message = "Model ready.",
                    model = %name,
                    path = %path.display(),
                    load_seconds = started.elapsed().as_secs_f64(),
                );
                let attributes = BTreeMap::from([
                    ("backend".to_owned(), crate::backend::name().to_owned()),
                    ("type".to_owned(), model.model_type()),
                    ("file".to_owned(), path.display().to_string()),
                    (
                        "threads_per_decode".to_owned(),
                        self.engine.threads.to_string(),
                    ),
                ]);
                loaded.push(LoadedModel {
                    info: ModelInfo {
                        name: name.clone(),
                        multilingual: model.is_multilingual(),
                        attributes,
                    },
                    factory: Arc::new(model),
                });
            }
            Ok(loaded)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::config::{ConfigError, ServerConfig};

        #[test]
        fn path_names_drop_ggml_and_bin() {
            assert_eq!(
                model_name_of_path("/m/ggml-tiny.en.bin".as_ref()),
                "tiny.en"
            );
            assert_eq!(model_name_of_path("mine.bin".as_ref()), "mine");
            assert_eq!(model_name_of_path("weights".as_ref()), "weights");
        }

        #[test]
        fn batch_gives_each_worker_a_pool_slot() -> Result<(), ConfigError> {
            let parse = |extra: &[&str]| {
                use clap::Parser;
                crate::config::ServerArgs::parse_from(
                    [
                        "transcribe-server",
                        "--model",
                        "tiny.en",
                        "--cpu",
                        "--workers",
                        "3",
                    ]
                    .iter()
                    .chain(extra)
                    .copied(),
                )
                .validate()
            };
            let batched = parse(&["--batch", "--flash-attn", "on"])?;
            let loader = WhisperLoader::from_config(&batched, FetchOptions::default())?;
            assert_eq!(loader.engine.batch_slots, 3);
            let plain = parse(&[])?;
            let loader = WhisperLoader::from_config(&plain, FetchOptions::default())?;
            assert_eq!(loader.engine.batch_slots, 0);
            Ok(())
        }

        #[test]
        fn unknown_names_fail_validation() -> Result<(), ConfigError> {
            let config = ServerConfig::with_models(&["tiny.en"])?;
            let loader = WhisperLoader::from_config(&config, FetchOptions::default())?;
            assert_eq!(loader.names(), ["tiny.en"]);
            let config = ServerConfig::with_models(&["no-such-model"])?;
            assert!(WhisperLoader::from_config(&config, FetchOptions::default()).is_err());
            Ok(())
        }
    }
}
