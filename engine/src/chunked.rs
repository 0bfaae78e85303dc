//! Files as independent chunks: the chunks of [`transcribe_core::chunk::plan_chunks`] decoded
//! by several [`WhisperSession`]s at once, one per thread, and put back together in order with
//! their times shifted to the file's clock.
//!
//! On a CPU, `P` sessions of `T / P` threads each keep the cores busier than one session of
//! `T` threads: ggml's per-token decoder steps are too small to spread over threads (its
//! workers spin and wait at every operation), while separate chunks need no synchronisation
//! at all (BENCHMARKS.md "Closing the CPU gap").

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use transcribe_core::policy::{WIDE_AUDIO_CTX_FLOOR, WIDE_AUDIO_CTX_MARGIN, audio_ctx_for};
use transcribe_core::{DecodeOptions, EngineError, SAMPLE_RATE, Segment, Transcriber, Transcript};

use crate::WhisperSession;

/// Called after each chunk with (chunks done, chunks in all).
pub type ChunkProgress<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// Decodes `chunks` of `samples` (16 kHz mono) with `sessions` working in parallel, each
/// taking the next undecoded chunk, and returns one transcript in time order. Segment and
/// word times are in seconds from the start of `samples`. The language is the first chunk's
/// (each chunk detects its own when `options.language` is `None`).
///
/// # Errors
/// The first chunk's error, in chunk order; the other sessions stop taking chunks.
pub fn transcribe_chunks(
    sessions: &mut [WhisperSession],
    samples: &[f32],
    chunks: &[Range<usize>],
    options: &DecodeOptions,
    fit_audio_ctx: bool,
    progress: Option<&ChunkProgress<'_>>,
) -> Result<Transcript, EngineError> {
    let results: Vec<Mutex<Option<Result<Transcript, EngineError>>>> =
        chunks.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for session in sessions.iter_mut() {
            let (results, next, done, failed) = (&results, &next, &done, &failed);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let range = chunks[i].clone();
                    // The wide margin and floor (5.1 s, 10.2 s): measured over 18 English clips
                    // (1 thread, tiny.en), 34 s against 52 s for whole-file decoding, with 2
                    // more word errors in about 610 outside one unintelligible radio clip
                    // (BENCHMARKS.md "Closing the CPU gap").
                    let chunk_options = match fit_audio_ctx {
                        true => DecodeOptions {
                            audio_ctx: Some(audio_ctx_for(
                                range.end - range.start,
                                WIDE_AUDIO_CTX_MARGIN,
                                WIDE_AUDIO_CTX_FLOOR,
                            )),
                            ..options.clone()
                        },
                        false => options.clone(),
                    };
                    let result = session.transcribe(&samples[range.clone()], &chunk_options);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    let rate = f64::from(SAMPLE_RATE);
                    let (from, to) = (range.start as f64 / rate, range.end as f64 / rate);
                    let shifted = result.map(|t| shift(t, from, to));
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(shifted);
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = progress {
                        p(n, chunks.len());
                    }
                }
            });
        }
    });
    let mut out = Transcript::default();
    for slot in results {
        let taken = slot
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match taken {
            Some(Ok(t)) => {
                if out.language.is_none() {
                    out.language = t.language;
                }
                out.segments.extend(t.segments);
            }
            Some(Err(e)) => return Err(e),
            // Not decoded because another chunk failed: that error comes first or later.
            None => {}
        }
    }
    Ok(out)
}

/// Moves every time of `t` later by `offset` seconds and keeps it at or before `end` (a
/// fitted encoder context reaches past the chunk's audio, and Whisper's timestamps can land
/// in that padding).
fn shift(mut t: Transcript, offset: f64, end: f64) -> Transcript {
    let at = |x: f64| (x + offset).min(end);
    for s in &mut t.segments {
        shift_segment(s, &at);
    }
    t
}

fn shift_segment(s: &mut Segment, at: &impl Fn(f64) -> f64) {
    s.start = at(s.start);
    s.end = at(s.end);
    for w in &mut s.words {
        w.start = at(w.start);
        w.end = at(w.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_core::Word;

    #[test]
    fn shifting_moves_segments_and_words_and_clamps_to_the_chunk() {
        let t = Transcript {
            segments: vec![Segment {
                start: 0.5,
                end: 2.0,
                text: "hi there".into(),
                words: vec![Word {
                    text: "hi".into(),
                    start: 0.5,
                    end: 0.9,
                    probability: 0.9,
                }],
                no_speech_prob: 0.0,
                avg_logprob: 0.0,
            }],
            language: Some("en".into()),
        };
        let s = shift(t.clone(), 10.0, 100.0);
        assert_eq!((s.segments[0].start, s.segments[0].end), (10.5, 12.0));
        assert_eq!(
            (s.segments[0].words[0].start, s.segments[0].words[0].end),
            (10.5, 10.9)
        );
        // Times past the chunk's audio are kept at its end.
        let s = shift(t, 10.0, 11.5);
        assert_eq!((s.segments[0].start, s.segments[0].end), (10.5, 11.5));
    }
}
