//! The decoder prefix of `whisper_full` (`DecodeOptions::prefix`, vendored whisper.cpp's
//! `whisper_set_next_prefix`) and its no-speech probability, with the real tiny.en on the
//! speech fixtures (skips, with a note, when tiny.en cannot be resolved here):
//! - without timestamps, `whisper_full` after a prefix generates exactly what the
//!   independent greedy loop ([`transcribe_engine::greedy`]) generates after the same tokens;
//! - as streaming partials decode (timestamps, word times, a fitted context), a prefix of
//!   the first half of a decode's words gives a text that starts with them, words with
//!   times in order inside the audio, the same no-speech probability, and fewer decoder
//!   steps;
//! - the no-speech probability of a decode with a prompt does not depend on what the
//!   session decoded before (upstream read it from a logits row the prompt's decode did
//!   not write).

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{speech_fixtures, tiny_en};
use transcribe_core::audio::WINDOW_SAMPLES;
use transcribe_core::policy::{DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN, audio_ctx_for};
use transcribe_core::{DecodeOptions, Transcriber, Transcript};
use transcribe_engine::greedy::GreedyDecoder;
use transcribe_engine::{EngineConfig, WhisperModel, WhisperSession, decode_stats};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fixture's name and samples.
type Clip = (String, Vec<f32>);

/// The decoder counters are the process's: the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// This file's lock, held, and the model.
type Locked = (MutexGuard<'static, ()>, WhisperModel);

/// tiny.en on the CPU, with this file's lock held; `None`, with a note, without tiny.en.
fn locked_model() -> Result<Option<Locked>, Box<dyn std::error::Error>> {
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(path) = tiny_en() else {
        return Ok(None);
    };
    let config = EngineConfig {
        use_gpu: false,
        ..EngineConfig::default()
    };
    Ok(Some((serial, WhisperModel::load(&path, &config)?)))
}

/// Every speech fixture, cut to one window.
fn fixtures() -> Result<Vec<Clip>, Box<dyn std::error::Error>> {
    let wavs = speech_fixtures();
    assert!(wavs.len() >= 5, "speech fixtures: {wavs:?}");
    let mut out = Vec::new();
    for wav in wavs {
        let mut samples = transcribe_audio::decode_file(&wav)?.samples;
        samples.truncate(WINDOW_SAMPLES);
        out.push((wav.display().to_string(), samples));
    }
    Ok(out)
}

/// The first half of the words of `text`.
fn first_half(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    words[..words.len() / 2].join(" ")
}

/// Decodes and counts the decoder's single-token steps.
fn decode_counted(
    session: &mut WhisperSession,
    samples: &[f32],
    options: &DecodeOptions,
) -> Result<(Transcript, i64), Box<dyn std::error::Error>> {
    let before = decode_stats().0;
    let transcript = session.transcribe(samples, options)?;
    Ok((transcript, decode_stats().0 - before))
}

#[test]
fn whisper_full_after_a_prefix_generates_what_the_greedy_loop_does() -> TestResult {
    let Some((_serial, model)) = locked_model()? else {
        return Ok(());
    };
    let mut session = model.session()?;
    let mut greedy = GreedyDecoder::new(&model)?;
    let whole_options = DecodeOptions {
        language: Some("en".into()),
        single_segment: true,
        no_timestamps: true,
        temperature_fallback: false,
        word_timestamps: false,
        ..DecodeOptions::default()
    };
    let mut compared = 0;
    for (name, samples) in fixtures()? {
        let whole = session.transcribe(&samples, &whole_options)?.text();
        let prefix = first_half(&whole);
        if prefix.split_whitespace().count() < 2 {
            continue;
        }
        let tokens = model.tokenize(&format!(" {prefix}"), 256)?;
        let expected = greedy.decode(&samples, Some("en"), &tokens, 0)?;
        let options = DecodeOptions {
            prefix: Some(prefix.clone()),
            ..whole_options.clone()
        };
        let (got, steps) = decode_counted(&mut session, &samples, &options)?;
        assert_eq!(got.text(), expected.text, "{name}: prefix {prefix:?}");
        // One step per generated token: whisper_full feeds each back but the end token.
        assert_eq!(steps as usize, expected.generated.len(), "{name}");
        compared += 1;
    }
    assert!(compared >= 5, "only {compared} fixtures had a prefix");
    Ok(())
}

#[test]
fn partials_after_their_first_words_keep_them_and_step_less() -> TestResult {
    let Some((_serial, model)) = locked_model()? else {
        return Ok(());
    };
    let mut session = model.session()?;
    let (mut prefixed, mut same_text, mut steps_whole, mut steps_prefixed) = (0, 0, 0, 0);
    for (name, samples) in fixtures()? {
        // As the policy's partials: one segment, word times, a fitted context, no fallback.
        let options = DecodeOptions {
            language: Some("en".into()),
            single_segment: true,
            temperature_fallback: false,
            audio_ctx: Some(audio_ctx_for(
                samples.len(),
                DEFAULT_AUDIO_CTX_MARGIN,
                DEFAULT_AUDIO_CTX_FLOOR,
            )),
            ..DecodeOptions::default()
        };
        let (whole, whole_steps) = decode_counted(&mut session, &samples, &options)?;
        let prefix = first_half(&whole.text());
        if prefix.split_whitespace().count() < 2 {
            continue;
        }
        let with_prefix = DecodeOptions {
            prefix: Some(prefix.clone()),
            ..options.clone()
        };
        let (got, got_steps) = decode_counted(&mut session, &samples, &with_prefix)?;
        let text = got.text();
        assert!(
            text.starts_with(&prefix),
            "{name}: {text:?} does not start with {prefix:?}"
        );
        let words: Vec<_> = got.segments.iter().flat_map(|s| &s.words).collect();
        assert!(
            words.len() >= prefix.split_whitespace().count(),
            "{name}: {words:?}"
        );
        let duration = samples.len() as f64 / 16_000.0;
        for pair in words.windows(2) {
            assert!(pair[0].start <= pair[1].start, "{name}: {words:?}");
        }
        for w in &words {
            assert!(
                0.0 <= w.start && w.start <= w.end && w.end <= duration,
                "{name}: {w:?}"
            );
        }
        // The no-speech probability is read before the prefix, at the same row.
        assert_eq!(
            got.segments[0].no_speech_prob, whole.segments[0].no_speech_prob,
            "{name}"
        );
        assert!(
            got_steps < whole_steps,
            "{name}: {got_steps} steps after the prefix, {whole_steps} without"
        );
        prefixed += 1;
        same_text += usize::from(text == whole.text());
        steps_whole += whole_steps;
        steps_prefixed += got_steps;
    }
    eprintln!(
        "{prefixed} fixtures: {same_text} with the whole decode's text; decoder steps \
         {steps_whole} whole, {steps_prefixed} after the prefix"
    );
    assert!(prefixed >= 5, "only {prefixed} fixtures had a prefix");
    Ok(())
}

#[test]
fn no_speech_probability_does_not_depend_on_the_previous_decode() -> TestResult {
    let Some((_serial, model)) = locked_model()? else {
        return Ok(());
    };
    let fixtures = fixtures()?;
    let options = DecodeOptions {
        language: Some("en".into()),
        prompt: Some("Earlier text of the same stream.".into()),
        single_segment: true,
        temperature_fallback: false,
        ..DecodeOptions::default()
    };
    let (_, target) = &fixtures[0];
    let mut fresh = model.session()?;
    let alone = fresh.transcribe(target, &options)?.segments[0].no_speech_prob;
    for (name, other) in &fixtures[1..] {
        let mut session = model.session()?;
        session.transcribe(other, &DecodeOptions::default())?;
        let after = session.transcribe(target, &options)?.segments[0].no_speech_prob;
        assert_eq!(after, alone, "after decoding {name}");
    }
    Ok(())
}
