//! Client-side latency measures over a traced stream, shared by the streaming benchmark
//! (`examples/stream_bench.rs`) and the soak tool (`transcribe-soak` in the tests crate).
//!
//! A [`Trace`] is what a client saw: the instant it started sending (audio paced in real
//! time, so the audio at offset `t` was sent at `start + t`) and every [`StreamEvent`] with
//! its arrival instant. From it:
//! - [`word_latencies`]: per reference word, the wall time from the moment its end was sent
//!   to the first interim or final whose text holds it
//!   ([`transcribe_core::latency::first_appearances`]: words matched in order by a
//!   minimum-edit-distance alignment of the text so far with the reference words heard so
//!   far).
//! - [`final_latencies`]: per non-empty final, the wall time from its audio end (and from
//!   its last word's end) to its arrival.
//! - [`interim_latencies`]: per interim, the wall time from its audio end to its arrival.
//! - [`percentile`]: nearest-rank percentiles.
//!
//! Pure functions over values (no I/O, no clock reads), tested in milliseconds.

use std::time::Instant;

pub use transcribe_core::latency::RefWord;
use transcribe_core::latency::{ShownText, first_appearances};
use transcribe_core::text::normalize;

use crate::StreamEvent;

/// What one client saw of a stream.
#[derive(Debug, Clone)]
pub struct Trace {
    /// When the first audio was sent.
    pub start: Instant,
    /// Every event with its arrival instant, in order.
    pub events: Vec<(Instant, StreamEvent)>,
}

impl Trace {
    /// Seconds from the start to `at`.
    pub fn offset(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The reference words of the stream's own finals (their word offsets): lets a client
    /// without an offline transcript time when each final word first showed.
    pub fn final_words(&self) -> Vec<RefWord> {
        let mut words = Vec::new();
        for (_, event) in &self.events {
            if let StreamEvent::Final(f) = event {
                for w in &f.words {
                    for token in normalize(&w.text).split_whitespace() {
                        words.push(RefWord {
                            token: token.to_owned(),
                            start: w.start,
                            end: w.end,
                        });
                    }
                }
            }
        }
        words
    }
}

/// Per reference word, the latency (seconds) of its first appearance in the trace's
/// interims or finals (`None`: never matched).
pub fn word_latencies(reference: &[RefWord], trace: &Trace) -> Vec<Option<f64>> {
    let mut shown = ShownText::default();
    let mut moments = Vec::new();
    for (at, event) in &trace.events {
        match event {
            StreamEvent::Interim {
                utterance_index,
                stable,
                unstable,
            } => shown.interim(*utterance_index, stable, unstable),
            StreamEvent::Final(f) => shown.final_result(f.utterance_index, &f.text),
            StreamEvent::Progress { .. }
            | StreamEvent::Resuming { .. }
            | StreamEvent::Resumed { .. } => continue,
        }
        moments.push((trace.offset(*at), shown.tokens()));
    }
    first_appearances(reference, moments)
}

/// Per non-empty final: (latency from its end offset, latency from its last word's end).
pub fn final_latencies(trace: &Trace) -> Vec<(f64, Option<f64>)> {
    trace
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            StreamEvent::Final(f) if !f.text.is_empty() => {
                let now = trace.offset(*at);
                Some((now - f.end, f.words.last().map(|w| now - w.end)))
            }
            _ => None,
        })
        .collect()
}

/// Per interim with an audio end, the latency from that end to its arrival.
///
/// `ends` gives each interim's audio end in seconds, in the order of the trace's interims
/// (the [`StreamEvent::Interim`] event does not carry it; the soak tool reads it from the
/// response's `result_end_offset`).
pub fn interim_latencies(trace: &Trace, ends: &[f64]) -> Vec<f64> {
    trace
        .events
        .iter()
        .filter(|(_, e)| matches!(e, StreamEvent::Interim { .. }))
        .zip(ends)
        .map(|((at, _), end)| trace.offset(*at) - end)
        .collect()
}

/// Nearest-rank percentile of `values` (`p` in 0..=100); `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use transcribe_core::Word;

    use super::*;
    use crate::FinalResult;

    fn interim(index: u64, text: &str) -> StreamEvent {
        StreamEvent::Interim {
            utterance_index: index,
            stable: String::new(),
            unstable: text.to_owned(),
        }
    }

    fn final_of(index: u64, text: &str, end: f64, words: &[(&str, f64, f64)]) -> StreamEvent {
        StreamEvent::Final(FinalResult {
            utterance_index: index,
            text: text.to_owned(),
            start: 0.0,
            end,
            words: words
                .iter()
                .map(|(t, s, e)| Word {
                    text: (*t).to_owned(),
                    start: *s,
                    end: *e,
                    probability: 1.0,
                })
                .collect(),
            language: None,
        })
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 95.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn words_are_timed_at_their_first_appearance() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let trace = Trace {
            start,
            events: vec![
                (at(1.5), interim(0, "hello")),
                (at(2.5), interim(0, "hello world")),
                (
                    at(3.0),
                    final_of(
                        0,
                        "Hello world.",
                        2.2,
                        &[("Hello", 0.5, 1.0), ("world.", 1.2, 2.0)],
                    ),
                ),
            ],
        };
        let reference = trace.final_words();
        assert_eq!(reference.len(), 2);
        let l = word_latencies(&reference, &trace);
        assert!((l[0].unwrap_or(f64::NAN) - 0.5).abs() < 1e-6, "{l:?}");
        assert!((l[1].unwrap_or(f64::NAN) - 0.5).abs() < 1e-6, "{l:?}");
        let f = final_latencies(&trace);
        assert_eq!(f.len(), 1);
        assert!((f[0].0 - 0.8).abs() < 1e-6);
        assert!((f[0].1.unwrap_or(f64::NAN) - 1.0).abs() < 1e-6);
        let i = interim_latencies(&trace, &[1.0, 2.0]);
        assert_eq!(i.len(), 2);
        assert!((i[0] - 0.5).abs() < 1e-6 && (i[1] - 0.5).abs() < 1e-6);
    }
}
