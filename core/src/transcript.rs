//! What an engine returns: segments with times, words with times and probabilities.

use serde::{Deserialize, Serialize};

/// One word with its time span (seconds from the start of the decoded audio) and the
/// model's probability for it (the mean of its tokens' probabilities).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word as the model spelled it, without surrounding whitespace.
    pub text: String,
    /// Start time in seconds.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
    /// Probability in `[0, 1]`.
    pub probability: f32,
}

/// One decoded segment: a span of audio and its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start time in seconds.
    pub start: f64,
    /// End time in seconds.
    pub end: f64,
    /// The segment's text, trimmed.
    pub text: String,
    /// Its words (empty when the engine gives no word timings).
    pub words: Vec<Word>,
    /// Probability that the segment holds no speech (Whisper's `no_speech_prob`).
    pub no_speech_prob: f32,
    /// Mean log-probability of its tokens (a confidence signal for hallucination guards).
    pub avg_logprob: f32,
}

/// The result of decoding one buffer of audio.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// Segments in time order.
    pub segments: Vec<Segment>,
    /// Language the model detected or was told (ISO 639-1, e.g. `en`), if known.
    pub language: Option<String>,
}

impl Transcript {
    /// The text of all segments joined by single spaces.
    pub fn text(&self) -> String {
        join_texts(self.segments.iter().map(|s| s.text.as_str()))
    }

    /// Every word of every segment, in order.
    pub fn words(&self) -> impl Iterator<Item = &Word> {
        self.segments.iter().flat_map(|s| s.words.iter())
    }
}

/// Joins non-empty, trimmed pieces of text with single spaces.
pub fn join_texts<'a>(pieces: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for piece in pieces {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_joins_trimmed_segments() {
        let seg = |t: &str| Segment {
            start: 0.0,
            end: 1.0,
            text: t.into(),
            words: vec![],
            no_speech_prob: 0.0,
            avg_logprob: 0.0,
        };
        let t = Transcript {
            segments: vec![seg(" Hello"), seg(""), seg("world. ")],
            language: None,
        };
        assert_eq!(t.text(), "Hello world.");
    }
}
