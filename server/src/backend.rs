//! What this build runs decodes on: whisper.cpp's backend through `transcribe-engine` (the
//! `whisper` feature, on by default), or nothing (a server built without it serves only the
//! engines an embedder or test loads through [`crate::FnLoader`]).

/// Whether the build has a GPU backend (CUDA, Metal, Vulkan).
pub fn has_gpu() -> bool {
    #[cfg(feature = "whisper")]
    return transcribe_engine::has_gpu_backend();
    #[cfg(not(feature = "whisper"))]
    false
}

/// The model served when `--model` is not given.
pub fn default_model() -> &'static str {
    #[cfg(feature = "whisper")]
    return transcribe_engine::default_streaming_model();
    #[cfg(not(feature = "whisper"))]
    "tiny.en"
}

/// The backend's name, for logs and ListModels.
pub fn name() -> &'static str {
    #[cfg(feature = "whisper")]
    return transcribe_engine::backend();
    #[cfg(not(feature = "whisper"))]
    "none"
}

/// One line for `--help`: the backend and the default model.
pub fn summary() -> String {
    #[cfg(feature = "whisper")]
    return transcribe_engine::build_summary();
    #[cfg(not(feature = "whisper"))]
    "This build has no Whisper engine (built without the `whisper` feature).".to_owned()
}
