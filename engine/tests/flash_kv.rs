//! The decoder path that our vendored whisper.cpp changes (vendor/whisper-rs-sys/VENDORED.md:
//! with flash attention, keys and values are written to the KV cache with `ggml_set_rows` at
//! an index input) gives the transcripts of the unchanged path (without flash attention), on
//! the CPU with the real tiny.en over every speech fixture, multi-window ones included.
//! Skips, with a note, when tiny.en cannot be resolved here.
//!
//! Flash attention rounds differently, so the texts may differ by a word; a cache row written
//! to the wrong place would instead garble them, far beyond that.

mod common;

use common::{speech_fixtures, tiny_en};
use transcribe_core::text::wer;
use transcribe_core::{DecodeOptions, Transcriber};
use transcribe_engine::{EngineConfig, WhisperModel};

#[test]
fn flash_attention_with_the_indexed_kv_write_transcribes_like_the_plain_decoder()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = tiny_en() else {
        return Ok(());
    };
    let load = |flash_attn| {
        WhisperModel::load(
            &path,
            &EngineConfig {
                use_gpu: false,
                flash_attn,
                ..EngineConfig::default()
            },
        )
    };
    let (plain_model, flash_model) = (load(false)?, load(true)?);
    let (mut plain, mut flash) = (plain_model.session()?, flash_model.session()?);
    let options = DecodeOptions {
        language: Some("en".into()),
        ..DecodeOptions::default()
    };

    let wavs = speech_fixtures();
    assert!(wavs.len() >= 5, "speech fixtures: {wavs:?}");

    let (mut differing, mut words) = (0, 0);
    for wav in &wavs {
        let reference = std::fs::read_to_string(wav.with_extension("txt"))?;
        let samples = transcribe_audio::decode_file(wav)?.samples;
        let plain_text = plain.transcribe(&samples, &options)?.text();
        let flash_text = flash.transcribe(&samples, &options)?.text();
        let between = wer(&plain_text, &flash_text);
        differing += between.errors;
        words += between.reference_words;
        let (plain_wer, flash_wer) = (
            wer(&reference, &plain_text).rate(),
            wer(&reference, &flash_text).rate(),
        );
        eprintln!(
            "{}: {} of {} words differ; WER {plain_wer:.3} plain, {flash_wer:.3} flash",
            wav.display(),
            between.errors,
            between.reference_words
        );
        assert!(
            flash_wer <= plain_wer + 0.05,
            "{}: flash attention WER {flash_wer:.3} against {plain_wer:.3}\n plain: {plain_text}\n flash: {flash_text}",
            wav.display()
        );
    }
    assert!(words > 200, "only {words} words transcribed");
    assert!(
        differing * 50 <= words,
        "{differing} of {words} words differ between flash attention and the plain decoder"
    );
    Ok(())
}
