//! Greedy decoding with a forced prefix ([`transcribe_engine::greedy`]) against whisper.cpp's
//! own `whisper_full`, with the real tiny.en on the speech fixtures (skips, with a note, when
//! tiny.en cannot be resolved here):
//! - without a prefix, the text is `whisper_full`'s for the same settings (greedy,
//!   `single_segment`, `no_timestamps`, no fallback, the full encoder window);
//! - with the first half of its own tokens as the prefix, the decode continues with the same
//!   tokens to the same text, and makes as many fewer decoder calls as the prefix is long.

mod common;

use common::{speech_fixtures, tiny_en};
use transcribe_core::audio::WINDOW_SAMPLES;
use transcribe_core::{DecodeOptions, Transcriber};
use transcribe_engine::greedy::GreedyDecoder;
use transcribe_engine::{EngineConfig, WhisperModel};

#[test]
fn a_prefix_of_its_own_tokens_gives_whisper_fulls_text_with_fewer_decoder_calls()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = tiny_en() else {
        return Ok(());
    };
    let config = EngineConfig {
        use_gpu: false,
        ..EngineConfig::default()
    };
    let model = WhisperModel::load(&path, &config)?;
    let mut session = model.session()?;
    let mut greedy = GreedyDecoder::new(&model)?;
    let options = DecodeOptions {
        language: Some("en".into()),
        single_segment: true,
        no_timestamps: true,
        temperature_fallback: false,
        word_timestamps: false,
        audio_ctx: None,
        ..DecodeOptions::default()
    };
    let wavs = speech_fixtures();
    assert!(wavs.len() >= 5, "speech fixtures: {wavs:?}");
    let mut continued_fixtures = 0;
    for wav in &wavs {
        let mut samples = transcribe_audio::decode_file(wav)?.samples;
        // One window: longer fixtures are cut, for both decoders alike.
        samples.truncate(WINDOW_SAMPLES);
        let reference = session.transcribe(&samples, &options)?.text();
        let whole = greedy.decode(&samples, Some("en"), &[], 0)?;
        assert_eq!(whole.text, reference.trim(), "{}", wav.display());
        // The task tokens in one call, then one per generated token and one for the end.
        assert_eq!(whole.decoder_calls, whole.generated.len() + 2);
        if whole.generated.len() < 4 {
            continue;
        }
        let half = whole.generated.len() / 2;
        let continued = greedy.decode(&samples, Some("en"), &whole.generated[..half], 0)?;
        assert_eq!(continued.text, whole.text, "{}", wav.display());
        assert_eq!(
            continued.generated,
            whole.generated[half..],
            "{}",
            wav.display()
        );
        assert_eq!(
            continued.decoder_calls,
            whole.decoder_calls - half,
            "{}",
            wav.display()
        );
        continued_fixtures += 1;
    }
    // A few samples are padded as every decode's are: no error, no words.
    for n in [1, 100, 1_000] {
        let few = greedy.decode(&vec![0.0; n], Some("en"), &[], 0)?;
        assert!(few.generated.len() < 8, "{n} samples: {few:?}");
    }
    assert!(
        continued_fixtures >= 5,
        "only {continued_fixtures} fixtures had text to continue"
    );
    Ok(())
}
