//! What the engine's real-model tests share: tiny.en (or a note and a skip) and the speech
//! fixtures.
// Each test file uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real tiny.en, fetched as the CLI would; `None`, with a note, where it cannot be had.
pub fn tiny_en() -> Option<PathBuf> {
    let spec = transcribe_models::ModelSpec::parse("tiny.en").ok()?;
    match transcribe_models::resolve(&spec, &transcribe_models::FetchOptions::default()) {
        Ok(path) => Some(path),
        Err(error) => {
            eprintln!("note: skipping: tiny.en is not available here: {error}");
            None
        }
    }
}

/// The folder of the speech fixtures.
pub fn speech_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../audio-fixtures/speech")
}

/// Every speech fixture's WAV, sorted.
pub fn speech_fixtures() -> Vec<PathBuf> {
    let mut wavs: Vec<PathBuf> = std::fs::read_dir(speech_dir())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    wavs.retain(|p| p.extension().is_some_and(|e| e == "wav"));
    wavs.sort();
    wavs
}

/// The real tiny.en loaded on the CPU, with flash attention on or off (GPU builds decode
/// with it on); `None`, with a note, where tiny.en cannot be had.
pub fn tiny_en_on_cpu(
    flash_attn: bool,
) -> Result<Option<transcribe_engine::WhisperModel>, transcribe_engine::LoadError> {
    let Some(path) = tiny_en() else {
        return Ok(None);
    };
    let config = transcribe_engine::EngineConfig {
        use_gpu: false,
        flash_attn,
        ..transcribe_engine::EngineConfig::default()
    };
    transcribe_engine::WhisperModel::load(&path, &config).map(Some)
}
