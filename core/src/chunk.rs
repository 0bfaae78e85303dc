//! Splitting a long recording into chunks of at most one Whisper window, at pauses, for
//! decoding them independently (and in parallel) instead of letting whisper.cpp slide its
//! 30 s window over the whole file.
//!
//! Whisper always encodes a full 30 s window. Sliding it over a file re-encodes from the last
//! timestamp it decoded, so a 60 s file costs three encoder passes (0-30, ~28-58, ~58-60 s:
//! the last one for two seconds of audio). Chunks cut at the pauses the [`Vad`] finds cost
//! one pass each, skip long silences entirely (nothing to encode there, and nothing for
//! Whisper to hallucinate on), and are independent, so several decoding states can take them
//! at once (faster-whisper's batched pipeline makes the same cut).
//!
//! Pure: samples in, sample ranges out.

use std::ops::Range;

use crate::SAMPLE_RATE;
use crate::vad::{FRAME_SAMPLES, Vad, VadConfig, VadEvent, quietest_frames};

/// Longest chunk: Whisper's 30 s window less 1 s, so the decoder's last timestamp token
/// still fits inside the window.
pub const MAX_CHUNK_SAMPLES: usize = 29 * SAMPLE_RATE as usize;

/// Speech runs closer than this are kept in one chunk even when a pause separates them
/// (cutting at every breath makes many tiny chunks, each paying a whole encoder pass).
pub const MERGE_GAP_SAMPLES: usize = 3 * SAMPLE_RATE as usize;

/// When one run of speech is longer than a chunk, it is cut at its quietest 20 ms frame in
/// the last this-many samples (10 s) before the chunk limit.
pub const SPLIT_SEARCH_SAMPLES: usize = 10 * SAMPLE_RATE as usize;

/// The speech runs of `samples` as the streaming VAD finds them (pre- and post-roll included).
pub fn speech_runs(samples: &[f32], config: &VadConfig) -> Vec<Range<usize>> {
    let Ok(mut vad) = Vad::new(config.clone()) else {
        // An invalid configuration: treat everything as speech rather than lose audio.
        return std::iter::once(0..samples.len()).collect();
    };
    let mut events = vad.push(samples);
    events.extend(vad.finish());
    let mut runs = Vec::new();
    let mut start = None;
    for event in events {
        match event {
            VadEvent::SpeechStart { sample } => start = Some(sample as usize),
            VadEvent::SpeechEnd { sample } => {
                if let Some(s) = start.take() {
                    runs.push(s..(sample as usize).min(samples.len()));
                }
            }
        }
    }
    if let Some(s) = start {
        runs.push(s..samples.len());
    }
    runs.retain(|r| r.start < r.end);
    runs
}

/// Where to cut `samples[range]` so the first part is at most `max` long: the start of the
/// quietest frame within the last [`SPLIT_SEARCH_SAMPLES`] before `range.start + max` (and
/// not before half of `max`).
fn quiet_cut(samples: &[f32], range: &Range<usize>, max: usize) -> usize {
    let limit = range.start + max;
    let from = limit
        .saturating_sub(SPLIT_SEARCH_SAMPLES)
        .max(range.start + max / 2);
    quietest_frames(samples, from..limit, 1)
        .map_or(from, |r| r.start)
        .clamp(range.start + 1, limit)
}

/// Plans the chunks of `samples`: speech runs (by [`speech_runs`]) merged while the gap
/// between them is under [`MERGE_GAP_SAMPLES`] and the chunk stays within `max_chunk`
/// samples; a run longer than `max_chunk` is cut at quiet frames. Silence outside the runs is
/// left out. Chunks are in order, disjoint and non-empty; none is longer than `max_chunk`.
pub fn plan_chunks(samples: &[f32], config: &VadConfig, max_chunk: usize) -> Vec<Range<usize>> {
    let max_chunk = max_chunk.max(FRAME_SAMPLES * 2);
    // Runs no longer than a chunk.
    let mut pieces = Vec::new();
    for mut run in speech_runs(samples, config) {
        while run.end - run.start > max_chunk {
            let cut = quiet_cut(samples, &run, max_chunk);
            pieces.push(run.start..cut);
            run.start = cut;
        }
        pieces.push(run);
    }
    let mut chunks: Vec<Range<usize>> = Vec::new();
    for piece in pieces {
        match chunks.last_mut() {
            Some(last)
                if piece.start - last.end < MERGE_GAP_SAMPLES
                    && piece.end - last.start <= max_chunk =>
            {
                last.end = piece.end;
            }
            _ => chunks.push(piece),
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = SAMPLE_RATE as usize;

    /// `seconds` of the VAD tests' speech-like signal (harmonics, formants, syllables).
    fn tone(seconds: f64, seed: usize) -> Vec<f32> {
        crate::vad::tests::speech_like(seconds as f32, -20.0, 110.0 + seed as f32)
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * RATE as f64) as usize]
    }

    fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    #[test]
    fn silence_gives_no_chunks() {
        assert!(plan_chunks(&silence(40.0), &VadConfig::default(), MAX_CHUNK_SAMPLES).is_empty());
    }

    #[test]
    fn nearby_runs_merge_and_long_silence_is_skipped() {
        // 5 s speech, 1 s pause, 5 s speech, 20 s silence, 4 s speech.
        let audio = concat(&[
            silence(1.0),
            tone(5.0, 0),
            silence(1.0),
            tone(5.0, 7),
            silence(20.0),
            tone(4.0, 3),
            silence(1.0),
        ]);
        let chunks = plan_chunks(&audio, &VadConfig::default(), MAX_CHUNK_SAMPLES);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        // The first chunk covers both close runs, the second the last one; the long
        // silence between them is in neither.
        assert!(
            chunks[0].start < RATE * 2 && chunks[0].end > RATE * 11,
            "{chunks:?}"
        );
        assert!(
            chunks[1].start > RATE * 20 && chunks[1].end > RATE * 35,
            "{chunks:?}"
        );
    }

    #[test]
    fn chunks_never_exceed_the_limit_and_keep_every_speech_sample() {
        // 70 s of unbroken "speech": cut at quiet frames into pieces of at most 29 s.
        let audio = tone(70.0, 0);
        let chunks = plan_chunks(&audio, &VadConfig::default(), MAX_CHUNK_SAMPLES);
        assert!(chunks.len() >= 3, "{chunks:?}");
        for c in &chunks {
            assert!(c.end - c.start <= MAX_CHUNK_SAMPLES, "{c:?}");
            assert!(c.start < c.end);
        }
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start, "a continuous run is cut, not gapped");
        }
        let runs = speech_runs(&audio, &VadConfig::default());
        assert_eq!(
            chunks.first().map(|c| c.start),
            runs.first().map(|r| r.start)
        );
        assert_eq!(chunks.last().map(|c| c.end), runs.last().map(|r| r.end));
    }

    #[test]
    fn a_long_run_is_cut_at_its_quietest_frame() {
        // 20 s tone, 0.2 s near-silence (too short for the VAD to end speech), 20 s tone.
        let mut audio = tone(20.0, 0);
        let dip = audio.len();
        audio.extend(vec![0.0005f32; RATE / 5]);
        audio.extend(tone(20.0, 11));
        let chunks = plan_chunks(&audio, &VadConfig::default(), MAX_CHUNK_SAMPLES);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let cut = chunks[0].end;
        assert!(
            cut >= dip && cut < dip + RATE / 5,
            "cut {cut} outside the dip at {dip}"
        );
    }
}
