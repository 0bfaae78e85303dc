//! Conversions between the engine's values (samples, seconds, [`Word`]s) and the API's
//! messages (`google.protobuf.Duration`, `WordInfo`, results). Pure functions.

use std::time::{Duration, SystemTime};

use transcribe_core::audio::samples_to_seconds;
use transcribe_core::{Segment, Word};
use transcribe_proto::v1::{SpeechRecognitionAlternative, SpeechRecognitionResult, WordInfo};

/// A `google.protobuf.Duration` of `seconds` (negative clamps to zero).
pub fn duration_of_seconds(seconds: f64) -> prost_types::Duration {
    let d = Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::ZERO);
    duration_of(d)
}

/// A `google.protobuf.Duration` from a std one.
pub fn duration_of(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A `google.protobuf.Duration` of `samples` at 16 kHz, plus `base`.
pub fn duration_of_samples(samples: u64, base: Duration) -> prost_types::Duration {
    duration_of(base + Duration::from_secs_f64(samples_to_seconds(samples as usize)))
}

/// A std duration from a `google.protobuf.Duration`; `None` when negative or malformed.
pub fn std_duration(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A `google.protobuf.Timestamp` of now.
pub fn timestamp_now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// What to put in word lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordOptions {
    /// Fill start and end offsets.
    pub offsets: bool,
    /// Fill confidences.
    pub confidence: bool,
    /// Added to every offset (the stream's start offset).
    pub base: Duration,
}

impl WordOptions {
    /// Whether words are wanted at all.
    pub fn any(&self) -> bool {
        self.offsets || self.confidence
    }
}

/// `WordInfo`s for words whose times are absolute seconds in the stream.
pub fn word_infos(words: &[Word], options: WordOptions) -> Vec<WordInfo> {
    if !options.any() {
        return Vec::new();
    }
    let base = options.base.as_secs_f64();
    words
        .iter()
        .map(|w| WordInfo {
            start_offset: options.offsets.then(|| duration_of_seconds(base + w.start)),
            end_offset: options.offsets.then(|| duration_of_seconds(base + w.end)),
            word: w.text.clone(),
            confidence: if options.confidence {
                w.probability.clamp(0.0, 1.0)
            } else {
                0.0
            },
        })
        .collect()
}

/// Mean word probability as a result confidence (0 = unknown, as the API's "not set").
pub fn mean_confidence(words: &[Word]) -> f32 {
    if words.is_empty() {
        return 0.0;
    }
    let sum: f32 = words.iter().map(|w| w.probability.clamp(0.0, 1.0)).sum();
    sum / words.len() as f32
}

/// A unary result for one decoded segment (times relative to the audio start).
pub fn segment_result(
    segment: &Segment,
    language: Option<&str>,
    words: WordOptions,
) -> SpeechRecognitionResult {
    SpeechRecognitionResult {
        alternatives: vec![SpeechRecognitionAlternative {
            transcript: segment.text.clone(),
            confidence: mean_confidence(&segment.words),
            words: word_infos(&segment.words, words),
        }],
        channel_tag: 0,
        result_end_offset: Some(duration_of_seconds(segment.end)),
        language_code: language.unwrap_or_default().to_owned(),
        result_start_offset: Some(duration_of_seconds(segment.start)),
        language_confidence: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert() {
        let d = duration_of_samples(24_000, Duration::from_secs(10));
        assert_eq!((d.seconds, d.nanos), (11, 500_000_000));
        assert_eq!(
            duration_of_seconds(-1.0),
            prost_types::Duration {
                seconds: 0,
                nanos: 0
            }
        );
        let back = std_duration(&prost_types::Duration {
            seconds: 2,
            nanos: 5,
        });
        assert_eq!(back, Some(Duration::new(2, 5)));
        assert_eq!(
            std_duration(&prost_types::Duration {
                seconds: -2,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn words_respect_options() {
        let words = [Word {
            text: "hi".into(),
            start: 0.5,
            end: 0.75,
            probability: 0.8,
        }];
        assert!(word_infos(&words, WordOptions::default()).is_empty());
        let infos = word_infos(
            &words,
            WordOptions {
                offsets: true,
                confidence: false,
                base: Duration::from_secs(1),
            },
        );
        assert_eq!(infos[0].start_offset, Some(duration_of_seconds(1.5)));
        assert_eq!(infos[0].confidence, 0.0);
        assert_eq!(mean_confidence(&words), 0.8);
    }
}
