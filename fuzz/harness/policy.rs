//! Fuzz harness for the streaming policy: arbitrary settings, a script of words, faults of
//! the scripted fake engine, audio (the script's rendering overwritten in places by arbitrary
//! samples, NaN and infinities included), chunk sizes and decode costs, all driven through
//! `transcribe_core::stream::run_stream_timed` as the server's session loop drives it.
//! Shared by `fuzz_targets/policy.rs` and the replay test `core/tests/fuzz_corpus.rs`.

use std::collections::{HashMap, HashSet};

use transcribe_core::fake::{Fault, Script, ScriptWord, ScriptedTranscriber, When};
use transcribe_core::policy::FailureKind;
use transcribe_core::stream::run_stream_timed;
use transcribe_core::{PolicyConfig, PolicyEvent, SAMPLE_RATE};

use crate::input::Input;

/// Longest stream a case renders: 40 s (two maximum-length utterances).
const MAX_SECONDS: f64 = 40.0;

/// Words the script picks from (a repeated word, a number, punctuation, non-ASCII).
const WORDS: [&str; 8] = ["the", "dog", "slept", "the", "42", "well,", "naïve", "end."];

/// Runs one case; panics if an invariant breaks.
///
/// Invariants: no panic, no hang; at most one final per utterance index, its span inside
/// the stream and its words' times monotonic and inside the span; an interim's committed
/// text only grows within an utterance (or is cleared).
///
/// Returns the outcome in words, for the replay test's table.
pub fn run(data: &[u8]) -> String {
    let mut input = Input::new(data);
    let mut config = PolicyConfig::default();
    let flags = input.u8();
    config.interim_results = flags & 1 == 0;
    config.partial_word_timestamps = flags & 2 == 0;
    if flags & 4 != 0 {
        config.step_samples = usize::from(input.u16()) * 4;
        config.max_step_samples = usize::from(input.u16()) * 16;
        config.min_partial_samples = usize::from(input.u16()) * 8;
        config.max_utterance_samples = usize::from(input.u16()) * 16;
        config.prompt_max_chars = usize::from(input.u16() % 1100);
        config.vad.end_silence_samples = usize::from(input.u16()) * 2;
        config.vad.pre_roll_samples = usize::from(input.u16());
    }
    if flags & 8 != 0 {
        config.initial_prompt = Some("Kenobi, naïve".into());
        config.language = Some("en".into());
    }

    // The script: up to 12 words with gaps and lengths in 10 ms units.
    let mut words = Vec::new();
    let mut t = 0.0f64;
    for _ in 0..input.u8() % 13 {
        let gap = f64::from(input.u8()) * 0.01;
        let len = f64::from(input.u8() % 100 + 1) * 0.01;
        t += gap;
        words.push(ScriptWord {
            text: WORDS[usize::from(input.u8()) % WORDS.len()].into(),
            start: t,
            end: t + len,
        });
        t += len;
    }
    let Ok(script) = Script::new(words) else {
        return "invalid script".into();
    };
    let seconds = (t + f64::from(input.u8()) * 0.05).min(MAX_SECONDS);
    let mut audio = script.render(seconds);
    audio.truncate((MAX_SECONDS * f64::from(SAMPLE_RATE)) as usize);

    // Overwrite stretches with arbitrary samples: i16 PCM, or raw f32 bits.
    for _ in 0..input.u8() % 4 {
        let at = usize::from(input.u16()) * 16;
        let raw_f32 = input.u8() & 1 == 1;
        let len = usize::from(input.u8()) * 4;
        for i in 0..len {
            let v = if raw_f32 {
                f32::from_bits(input.u32())
            } else {
                f32::from(input.u16() as i16) / 32_768.0
            };
            if let Some(s) = audio.get_mut(at + i) {
                *s = v;
            }
        }
    }

    let mut fake =
        ScriptedTranscriber::new(script, &audio).with_unstable_tail(usize::from(input.u8() % 4));
    for _ in 0..input.u8() % 3 {
        let when = match input.u8() % 6 {
            0 => When::Call(usize::from(input.u8() % 8)),
            1 => When::FinalCall(usize::from(input.u8() % 4)),
            2 => When::EveryFinal,
            3 => When::EveryPartial,
            4 => When::EveryCall,
            _ => When::NoWords,
        };
        let fault = match input.u8() % 6 {
            0 => Fault::Fail(FailureKind::Inference),
            1 => Fault::Fail(FailureKind::Cancelled),
            2 => Fault::Text {
                text: "Thanks for watching!".into(),
                no_speech_prob: f32::from(input.u8()) / 255.0,
                avg_logprob: -f32::from(input.u8()) / 64.0,
            },
            3 => Fault::Loop {
                phrase: "so so".into(),
                repeats: usize::from(input.u8() % 40),
            },
            4 => Fault::Fail(FailureKind::InvalidOptions),
            _ => Fault::Empty,
        };
        fake = fake.with_fault(when, fault);
    }
    let chunk = usize::from(input.u16() % 16_000) + 1;
    let cost_unit = u64::from(input.u8()) * 160;
    let mut cost = |job: &transcribe_core::DecodeJob| cost_unit * (job.id % 4);
    let run = match run_stream_timed(&mut fake, &audio, chunk, config, &mut cost) {
        Ok(run) => run,
        Err(e) => return format!("config rejected: {e}"),
    };

    let total = audio.len() as u64;
    let rate = f64::from(SAMPLE_RATE);
    let mut finals = HashSet::new();
    let mut committed: HashMap<u64, String> = HashMap::new();
    for e in run.plain_events() {
        match e {
            PolicyEvent::Final {
                utterance_index,
                words,
                start_samples,
                end_samples,
                ..
            } => {
                assert!(
                    finals.insert(utterance_index),
                    "two finals for {utterance_index}"
                );
                assert!(start_samples <= end_samples && end_samples <= total);
                let (lo, hi) = (start_samples as f64 / rate, end_samples as f64 / rate);
                let mut prev = lo;
                for w in &words {
                    assert!(w.start.is_finite() && w.end.is_finite(), "{w:?}");
                    assert!(
                        w.start >= prev - 0.02 && w.end >= w.start,
                        "{w:?} after {prev}"
                    );
                    assert!(w.end <= hi + 0.02, "{w:?} after the utterance end {hi}");
                    prev = w.end;
                }
            }
            PolicyEvent::Interim {
                utterance_index,
                committed: text,
                tail,
                audio_end_samples,
                ..
            } => {
                assert!(audio_end_samples <= total);
                let prev = committed.entry(utterance_index).or_default();
                let cleared = text.is_empty() && tail.is_empty();
                assert!(
                    cleared || text.starts_with(prev.as_str()),
                    "committed text shrank: {prev:?} -> {text:?}"
                );
                *prev = text;
            }
            PolicyEvent::SpeechStarted { sample } | PolicyEvent::SpeechEnded { sample } => {
                assert!(sample <= total);
            }
            PolicyEvent::DecodeFailed { .. } => {}
        }
    }
    format!(
        "ok: {:.1} s, {} jobs, {} finals, {} events",
        total as f64 / rate,
        run.jobs.len(),
        finals.len(),
        run.events.len()
    )
}
