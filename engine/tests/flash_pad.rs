//! With flash attention, whisper.cpp pads the encoder's keys and values and the decoder's
//! cross-attention keys and values to a multiple of 256 audio frames, and only writes the
//! frames of the window. Our vendored copy masks the padding (vendor/whisper-rs-sys/
//! VENDORED.md, change 8); without the mask those rows are attended at full weight, and hold
//! whatever an earlier decode of the same state left there, so a decode with a fitted
//! encoder context (every streaming partial) depended on the decodes before it. Real tiny.en
//! on the CPU, flash attention on; skips, with a note, when tiny.en cannot be resolved here.

mod common;

use common::{speech_dir, tiny_en_on_cpu};
use transcribe_core::policy::{DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN, audio_ctx_for};
use transcribe_core::{DecodeOptions, Transcriber, Transcript};

/// Every word with its probability: equal only for the same decode, bit for bit.
fn words(t: &Transcript) -> Vec<(String, u32)> {
    t.segments
        .iter()
        .flat_map(|s| &s.words)
        .map(|w| (w.text.clone(), w.probability.to_bits()))
        .collect()
}

#[test]
fn a_fitted_flash_attention_decode_does_not_depend_on_earlier_decodes()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(model) = tiny_en_on_cpu(true)? else {
        return Ok(());
    };
    let dir = speech_dir();
    let pauses = transcribe_audio::decode_file(dir.join("pauses.wav"))?.samples;
    let long = transcribe_audio::decode_file(dir.join("long_60s.wav"))?.samples;
    let fitted = |samples: &[f32]| DecodeOptions {
        language: Some("en".into()),
        audio_ctx: Some(audio_ctx_for(
            samples.len(),
            DEFAULT_AUDIO_CTX_MARGIN,
            DEFAULT_AUDIO_CTX_FLOOR,
        )),
        temperature_fallback: false,
        ..DecodeOptions::default()
    };
    // Partials of one utterance as a stream decodes them: 1.2 s, then 2.8 s (a context of
    // 204 frames: 52 rows of padding), on a fresh state.
    let short = &pauses[..19_200];
    let partial = &pauses[..44_800];
    let mut fresh = model.session()?;
    let _ = fresh.transcribe(short, &fitted(short))?;
    let first = fresh.transcribe(partial, &fitted(partial))?;
    assert!(
        first.text().to_lowercase().contains("good morning"),
        "{}",
        first.text()
    );
    // The same partial after a full-window decode and a longer fitted one (25 s, 1314
    // frames: their rows are where the shorter context's padding reads).
    let mut used = model.session()?;
    let _ = used.transcribe(&long[..480_000], &DecodeOptions::default())?;
    let longer = &long[..400_000];
    let _ = used.transcribe(longer, &fitted(longer))?;
    let _ = used.transcribe(short, &fitted(short))?;
    let again = used.transcribe(partial, &fitted(partial))?;
    assert_eq!(
        words(&first),
        words(&again),
        "\n fresh: {}\n after: {}",
        first.text(),
        again.text()
    );
    Ok(())
}
