//! `DecodeOptions::stop_restated` through whisper.cpp's logits filter, with the real tiny.en
//! on the CPU (flash attention on, as GPU builds decode): a streaming partial of
//! market.wav's first 2.3 s with the fitted context restates its sentence to the token
//! limit ("She went to the market to my bread. She went to the market to my bread. ...");
//! with the option the decode ends after the first restatement, and the policy's restated-
//! tail cut leaves the same words as from the whole loop. Skips, with a note, when tiny.en
//! cannot be resolved here.

mod common;

use common::{speech_dir, tiny_en_on_cpu};
use transcribe_core::policy::{
    DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN, audio_ctx_for, cut_restated_tail,
    partial_token_limit,
};
use transcribe_core::{DecodeOptions, Transcriber, Word};

fn words(t: &transcribe_core::Transcript) -> Vec<Word> {
    t.segments.iter().flat_map(|s| s.words.clone()).collect()
}

fn texts(words: &[Word]) -> Vec<String> {
    words.iter().map(|w| w.text.clone()).collect()
}

#[test]
fn a_partial_that_restates_itself_stops_after_the_first_restatement()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(model) = tiny_en_on_cpu(true)? else {
        return Ok(());
    };
    let mut session = model.session()?;
    let market = transcribe_audio::decode_file(speech_dir().join("market.wav"))?.samples;
    let partial = &market[..36_800];
    let options = |stop_restated| DecodeOptions {
        language: Some("en".into()),
        audio_ctx: Some(audio_ctx_for(
            partial.len(),
            DEFAULT_AUDIO_CTX_MARGIN,
            DEFAULT_AUDIO_CTX_FLOOR,
        )),
        temperature_fallback: false,
        single_segment: true,
        max_tokens: Some(partial_token_limit(partial.len())),
        stop_restated,
        ..DecodeOptions::default()
    };
    let looped = words(&session.transcribe(partial, &options(false))?);
    let stopped = words(&session.transcribe(partial, &options(true))?);
    let first_telling = cut_restated_tail(looped.clone());
    assert!(
        first_telling.len() * 2 < looped.len(),
        "the partial no longer loops here: {:?}",
        texts(&looped)
    );
    assert!(
        first_telling.len() < stopped.len() && stopped.len() < looped.len(),
        "stopped: {:?}\nlooped: {:?}",
        texts(&stopped),
        texts(&looped)
    );
    assert_eq!(texts(&cut_restated_tail(stopped)), texts(&first_telling));
    Ok(())
}
