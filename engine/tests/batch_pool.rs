//! The batch pool (`EngineConfig::batch_slots`, our vendored whisper.cpp's
//! `whisper_set_batch_slots`): sessions whose KV caches share one pool and whose decoder
//! steps run together give the transcripts that the same sessions give decoding alone, with
//! the real tiny.en on the CPU over every speech fixture (skips, with a note, when tiny.en
//! cannot be resolved). Several sessions decode at once on their own threads, with more
//! sessions than slots (the extra one decodes alone), and the pool's counters show that
//! steps did run together. The same holds with a decoder prefix (`DecodeOptions::prefix`:
//! the first half of each text), whose batched call leaves the pool's stepping.
//!
//! On the CPU a pooled step computes each session's column with the same kernels as a lone
//! step (masked keys add exact zeros), so the texts are expected to be equal, not close: a
//! key read from the wrong slot, layer or row would change them.

mod common;

use std::path::PathBuf;

use common::{speech_fixtures, tiny_en};
use transcribe_core::{DecodeOptions, Transcriber};
use transcribe_engine::{EngineConfig, WhisperModel, WhisperSession, batch_stats};

fn config(batch_slots: usize) -> EngineConfig {
    EngineConfig {
        use_gpu: false,
        flash_attn: true,
        threads: 1,
        batch_slots,
        ..EngineConfig::default()
    }
}

/// Each session takes every `n`-th fixture from its index, all sessions at once, each
/// decoded with `options_for` its path.
fn transcribe_all(
    sessions: &mut [WhisperSession],
    wavs: &[PathBuf],
    options_for: &(dyn Fn(&PathBuf) -> DecodeOptions + Sync),
) -> Vec<(PathBuf, String)> {
    let n = sessions.len();
    let mut out: Vec<(PathBuf, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .enumerate()
            .map(|(i, session)| {
                scope.spawn(move || {
                    let mut texts = Vec::new();
                    for wav in wavs.iter().skip(i).step_by(n) {
                        let samples = transcribe_audio::decode_file(wav)
                            .expect("fixture decodes")
                            .samples;
                        let text = session
                            .transcribe(&samples, &options_for(wav))
                            .expect("transcribes")
                            .text();
                        texts.push((wav.clone(), text));
                    }
                    texts
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    out.sort();
    out
}

#[test]
fn pooled_sessions_stepping_together_transcribe_like_sessions_alone()
-> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = tiny_en() else {
        return Ok(());
    };
    let wavs = speech_fixtures();
    assert!(wavs.len() >= 5, "speech fixtures: {wavs:?}");
    let options = DecodeOptions {
        language: Some("en".into()),
        temperature_fallback: false,
        ..DecodeOptions::default()
    };

    let alone_model = WhisperModel::load(&path, &config(0))?;
    let mut alone = vec![alone_model.session()?];
    let expected = transcribe_all(&mut alone, &wavs, &|_| options.clone());

    // Three slots, four sessions: the fourth has no slot and decodes on its own cache.
    let pooled_model = WhisperModel::load(&path, &config(3))?;
    let mut pooled = (0..4)
        .map(|_| pooled_model.session())
        .collect::<Result<Vec<_>, _>>()?;
    let before = batch_stats();
    let got = transcribe_all(&mut pooled, &wavs, &|_| options.clone());
    let after = batch_stats();

    // With the first half of each text as the decoder prefix (its batched call leaves the
    // pool's stepping, its steps after it step with the others).
    let prefixes: std::collections::HashMap<PathBuf, String> = expected
        .iter()
        .map(|(wav, text)| {
            let words: Vec<&str> = text.split_whitespace().collect();
            (wav.clone(), words[..words.len() / 2].join(" "))
        })
        .collect();
    let with_prefix = |wav: &PathBuf| DecodeOptions {
        prefix: prefixes.get(wav).cloned(),
        ..options.clone()
    };
    let expected_prefixed = transcribe_all(&mut alone, &wavs, &with_prefix);
    let got_prefixed = transcribe_all(&mut pooled, &wavs, &with_prefix);
    assert_eq!(
        got_prefixed, expected_prefixed,
        "pooled decodes after a prefix differ from the lone session's"
    );
    for (wav, text) in &got_prefixed {
        assert!(
            text.starts_with(&prefixes[wav]),
            "{}: {text}",
            wav.display()
        );
    }

    let mut words = 0;
    for ((wav, want), (_, text)) in expected.iter().zip(&got) {
        assert_eq!(
            text,
            want,
            "{}: pooled text differs from the lone session's",
            wav.display()
        );
        words += want.split_whitespace().count();
    }
    assert_eq!(expected.len(), got.len());
    assert!(words > 200, "only {words} words transcribed");

    let (steps, tokens) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "pooled steps {steps}, tokens {tokens}, mean batch {:.2}",
        tokens as f64 / steps.max(1) as f64
    );
    assert!(steps > 0, "no pooled decoder step ran");
    assert!(
        tokens > steps,
        "pooled steps never served two sessions at once ({tokens} tokens in {steps} steps)"
    );
    Ok(())
}
