//! Guards against Whisper's known failure modes: text hallucinated on silence or noise, and
//! repetition loops.

use std::collections::HashMap;

use super::words::key;
use crate::text::normalize;
use crate::transcript::{Segment, Word};

/// Default no-speech threshold: a segment is silence when its `no_speech_prob` is above it
/// *and* its `avg_logprob` is below [`DEFAULT_LOGPROB_THRESHOLD`] (openai/whisper
/// `transcribe.py`: `no_speech_threshold=0.6`).
pub const DEFAULT_NO_SPEECH_THRESHOLD: f32 = 0.6;

/// Default log-probability threshold of the no-speech test (openai/whisper `transcribe.py`:
/// `logprob_threshold=-1.0`).
pub const DEFAULT_LOGPROB_THRESHOLD: f32 = -1.0;

/// Compression ratio above which a decode is a repetition loop (openai/whisper
/// `transcribe.py`: `compression_ratio_threshold=2.4`, with zlib; ours is
/// [`compression_ratio`]'s estimate, fitted to zlib).
pub const COMPRESSION_RATIO_THRESHOLD: f32 = 2.4;

/// A word n-gram repeated back to back more than this many times is a loop (docs/DESIGN.md "Streaming policy",
/// "repetition loops": "a word n-gram repeated > 3 times").
pub const MAX_REPEATS: usize = 3;

/// Longest n-gram checked for loops, in words (Whisper loops on phrases of a few words).
pub const MAX_LOOP_NGRAM: usize = 8;

/// Speech (VAD speech frames) below which a known silence hallucination is dropped:
/// 0.5 s. A real "Thank you." has about that much voiced speech; a breath or click that
/// opened an utterance has far less.
pub const HALLUCINATION_MAX_SPEECH_SAMPLES: u64 = 8_000;

/// Phrases Whisper emits on silence and noise (artefacts of its subtitle training data),
/// normalised. A text made only of these (once or repeated) is suspect.
pub const KNOWN_HALLUCINATIONS: &[&str] = &[
    "you",
    "thank you",
    "thank you very much",
    "thanks for watching",
    "thank you for watching",
    "thank you so much for watching",
    "please subscribe",
    "subscribe to my channel",
    "bye",
    "bye bye",
    "subtitles by the amara org community",
];

/// Shortest back-reference of the compression estimate (deflate's minimum match is 3; 4
/// fits zlib's ratios on short texts better).
const MIN_MATCH: usize = 4;
/// Cost of a literal byte in the estimate (deflate's Huffman stage makes text literals
/// cheaper than 8 bits).
const LITERAL_COST: f32 = 0.9;
/// Cost of a back-reference in bytes (length + distance codes).
const MATCH_COST: f32 = 2.0;
/// Fixed cost in bytes (zlib header, checksum, block header).
const OVERHEAD_COST: f32 = 10.0;
/// Earlier positions tried per match search.
const MATCH_CANDIDATES: usize = 32;

/// Whether a segment is silence by Whisper's rule: no-speech probability above
/// `no_speech_threshold` and average log-probability below `logprob_threshold`.
pub fn is_silent_segment(
    segment: &Segment,
    no_speech_threshold: f32,
    logprob_threshold: f32,
) -> bool {
    segment.no_speech_prob > no_speech_threshold && segment.avg_logprob < logprob_threshold
}

/// Whether `text` should be dropped as a hallucination: it has no words (only punctuation
/// or nothing), or it consists only of [`KNOWN_HALLUCINATIONS`] while the VAD saw less than
/// [`HALLUCINATION_MAX_SPEECH_SAMPLES`] of speech.
pub fn is_hallucination(text: &str, speech_samples: u64) -> bool {
    let norm = normalize(text);
    if norm.is_empty() {
        return true;
    }
    speech_samples < HALLUCINATION_MAX_SPEECH_SAMPLES && only_known_phrases(&norm)
}

/// Whether normalised `text` is a sequence of known hallucination phrases.
fn only_known_phrases(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let phrases: Vec<Vec<&str>> = KNOWN_HALLUCINATIONS
        .iter()
        .map(|p| p.split_whitespace().collect())
        .collect();
    let mut i = 0;
    while i < words.len() {
        let matched = phrases
            .iter()
            .filter(|p| words[i..].starts_with(p))
            .map(Vec::len)
            .max();
        match matched {
            Some(n) => i += n,
            None => return false,
        }
    }
    true
}

/// A repetition loop: `ngram` words starting at `start`, occurring `repeats` times back to
/// back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loop {
    /// Index of the first word of the first occurrence.
    pub start: usize,
    /// Words per occurrence.
    pub ngram: usize,
    /// Back-to-back occurrences (more than [`MAX_REPEATS`]).
    pub repeats: usize,
}

/// The first word n-gram (up to [`MAX_LOOP_NGRAM`] words) that repeats back to back more
/// than [`MAX_REPEATS`] times in `keys` (normalised words).
pub fn find_loop(keys: &[String]) -> Option<Loop> {
    for start in 0..keys.len() {
        for ngram in 1..=MAX_LOOP_NGRAM {
            if start + ngram * (MAX_REPEATS + 1) > keys.len() {
                break;
            }
            let unit = &keys[start..start + ngram];
            let mut repeats = 1;
            while keys
                .get(start + repeats * ngram..start + (repeats + 1) * ngram)
                .is_some_and(|next| next == unit)
            {
                repeats += 1;
            }
            if repeats > MAX_REPEATS {
                return Some(Loop {
                    start,
                    ngram,
                    repeats,
                });
            }
        }
    }
    None
}

/// The comparison keys of `words` ([`key`]).
fn keys(words: &[Word]) -> Vec<String> {
    words.iter().map(key).collect()
}

/// Keeps one occurrence of every looping n-gram in `words` (see [`find_loop`]); the words
/// after a loop are kept.
pub fn truncate_loops(mut words: Vec<Word>) -> Vec<Word> {
    loop {
        let keys = keys(&words);
        let Some(found) = find_loop(&keys) else {
            return words;
        };
        let keep_to = found.start + found.ngram;
        let resume = found.start + found.repeats * found.ngram;
        words.drain(keep_to..resume);
    }
}

/// Repeated words at the end of a hypothesis that mark a restatement: at least this many.
pub const MIN_RESTATED_WORDS: usize = 3;

/// Cuts a restated tail: where `words` end by repeating, back to back, the phrase just
/// before (once or more, the last time possibly cut short), at least
/// [`MIN_RESTATED_WORDS`] words of repetition, only the first occurrence is kept. This is
/// what a partial decode of an utterance's first seconds often does: with the encoder
/// context fitted to the audio, Whisper reaches the end of the speech and starts it over
/// ("and so my fellow Americans and so my fellow Americans"), too few times for
/// [`find_loop`] and for the compression ratio. Real speech that repeats itself is cut
/// too; the final decode, which gets the whole window, keeps it.
pub fn cut_restated_tail(mut words: Vec<Word>) -> Vec<Word> {
    let keys = keys(&words);
    let n = keys.len();
    for start in 0..n {
        for ngram in 1..=(n - start).saturating_sub(MIN_RESTATED_WORDS) {
            let tail = n - start - ngram;
            let periodic = (0..tail).all(|t| keys[start + ngram + t] == keys[start + t % ngram]);
            if periodic {
                words.truncate(start + ngram);
                return words;
            }
        }
    }
    words
}

/// Text tokens a decode must have restated before [`restates_itself`] holds: 6 (a short
/// phrase then repeats 2 to 6 times, enough for [`find_loop`] or [`cut_restated_tail`] to
/// cut it back to one telling).
pub const MIN_RESTATED_TOKENS: usize = 6;

/// Whether a decode's text tokens (`tokens`: ids, special and timestamp tokens left out)
/// end by restating the phrase before them: for some period `p`, each of the last `L`
/// tokens equals the one `p` before it, with `L` at least `p` (the phrase was told once
/// more in full) and at least [`MIN_RESTATED_TOKENS`]. A partial decode that does this goes
/// on restating to its token limit; the engine can stop it here
/// (`DecodeOptions::stop_restated`), and what it stops is cut by [`cut_restated_tail`].
#[must_use]
pub fn restates_itself(tokens: &[i32]) -> bool {
    let n = tokens.len();
    // The periodic run at the end for period p: tokens equal to the one p before.
    let run = |p: usize| {
        (p..n)
            .rev()
            .take_while(|&i| tokens[i] == tokens[i - p])
            .count()
    };
    (1..=n / 2).any(|p| run(p) >= p.max(MIN_RESTATED_TOKENS))
}

/// Whether `words` (or their text) look like a repetition loop: a looping n-gram, or a
/// compression ratio above [`COMPRESSION_RATIO_THRESHOLD`].
pub fn is_repetitive(words: &[Word], text: &str) -> bool {
    let keys = keys(words);
    find_loop(&keys).is_some() || compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD
}

/// An estimate of zlib's compression ratio (bytes in / bytes out) of `text`, as Whisper
/// computes it to detect loops: a greedy LZ77 parse (matches of at least 4 bytes) costed at
/// 0.9 byte per literal, 2 bytes per match and 10 bytes of overhead. Fitted to
/// `zlib.compress` on ten sample sentences (English, German, Chinese, loops): within about
/// 20% of zlib's ratio, lower on long plain text.
pub fn compression_ratio(text: &str) -> f32 {
    let bytes = text.as_bytes();
    let n = bytes.len();
    if n == 0 {
        return 0.0;
    }
    let mut seen: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut cost = OVERHEAD_COST;
    let mut p = 0;
    while p < n {
        let mut best = 0;
        if let Some(positions) = bytes.get(p..p + MIN_MATCH).and_then(|k| seen.get(k)) {
            for &q in positions.iter().rev().take(MATCH_CANDIDATES) {
                let len = (0..n - p)
                    .take_while(|&l| bytes[q + l] == bytes[p + l])
                    .count();
                best = best.max(len);
            }
        }
        let advance = if best >= MIN_MATCH {
            cost += MATCH_COST;
            best
        } else {
            cost += LITERAL_COST;
            1
        };
        for k in p..(p + advance).min(n.saturating_sub(MIN_MATCH - 1)) {
            seen.entry(&bytes[k..k + MIN_MATCH]).or_default().push(k);
        }
        p += advance;
    }
    n as f32 / cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Word> {
        text.split_whitespace()
            .enumerate()
            .map(|(i, t)| Word {
                text: t.into(),
                start: i as f64,
                end: i as f64 + 0.5,
                probability: 0.9,
            })
            .collect()
    }

    fn join(words: &[Word]) -> String {
        words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn restated_tails_are_cut_to_one_occurrence() {
        let cases = [
            (
                "and so my fellow Americans and so my fellow Americans.",
                "and so my fellow Americans",
            ),
            // A loop already cut to one occurrence, then the start of another.
            (
                "Ask what you can do for your country. Ask what you",
                "Ask what you can do for your country.",
            ),
            (
                "Ask what you can do. Ask what you can do. Ask what you can",
                "Ask what you can do.",
            ),
            ("no no no no", "no"),
            // Too little repetition, or not at the end: kept.
            ("the old dog the old", "the old dog the old"),
            ("very very good", "very very good"),
            (
                "we will fight we will fight on the beaches",
                "we will fight we will fight on the beaches",
            ),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(join(&cut_restated_tail(words(input))), want, "{input:?}");
        }
    }

    #[test]
    fn hallucinations_need_little_speech() {
        let little = 2_000;
        let plenty = 40_000;
        let cases = [
            ("", plenty, true),
            (" ... ", plenty, true),
            ("Thank you.", little, true),
            ("Thank you. Thank you.", little, true),
            ("you", little, true),
            ("Thanks for watching!", little, true),
            ("Thank you.", plenty, false),
            ("Thank you, Mary.", little, false),
            ("Hello.", little, false),
        ];
        for (text, speech, want) in cases {
            assert_eq!(is_hallucination(text, speech), want, "{text:?} {speech}");
        }
    }

    #[test]
    fn silent_segments_follow_whisper_rule() {
        let seg = |nsp: f32, lp: f32| Segment {
            start: 0.0,
            end: 1.0,
            text: "x".into(),
            words: vec![],
            no_speech_prob: nsp,
            avg_logprob: lp,
        };
        let (t, l) = (DEFAULT_NO_SPEECH_THRESHOLD, DEFAULT_LOGPROB_THRESHOLD);
        assert!(is_silent_segment(&seg(0.9, -1.5), t, l));
        assert!(!is_silent_segment(&seg(0.9, -0.3), t, l));
        assert!(!is_silent_segment(&seg(0.2, -1.5), t, l));
    }

    #[test]
    fn restatements_are_seen_in_tokens_once_told_again() {
        // "and so my fellow americans" as 5 tokens, then told again.
        let phrase = [290, 523, 616, 5891, 3399];
        let mut tokens = phrase.to_vec();
        assert!(!restates_itself(&tokens));
        tokens.extend_from_slice(&phrase[..4]);
        assert!(!restates_itself(&tokens), "not yet told in full");
        tokens.push(phrase[4]);
        assert!(
            !restates_itself(&tokens),
            "5 repeated tokens are under the minimum"
        );
        tokens.push(phrase[0]);
        assert!(restates_itself(&tokens));
        // A long sentence restated once in full.
        let sentence: Vec<i32> = (100..112).collect();
        let mut tokens = sentence.clone();
        tokens.extend_from_slice(&sentence[..11]);
        assert!(!restates_itself(&tokens));
        tokens.push(111);
        assert!(restates_itself(&tokens));
        // One token repeated: from the seventh copy.
        assert!(!restates_itself(&[7; 6]));
        assert!(restates_itself(&[7; 7]));
        // Speech that repeats a word or two and goes on is not a restatement.
        assert!(!restates_itself(&[1, 2, 2, 3, 4, 3, 4, 5, 6, 7, 8, 9]));
        assert!(!restates_itself(&[]));
    }

    #[test]
    fn loops_are_found_and_truncated() {
        let cases = [
            ("a b c", None, "a b c"),
            ("no no no", None, "no no no"),
            ("so the the the the end", Some((1, 1, 4)), "so the end"),
            (
                "I said go home, go home, go home, go home, go home.",
                Some((2, 2, 5)),
                "I said go home,",
            ),
            ("x y z y z y z y z q", Some((1, 2, 4)), "x y z q"),
        ];
        for (text, want, truncated) in cases {
            let ws = words(text);
            let keys = keys(&ws);
            let found = find_loop(&keys).map(|l| (l.start, l.ngram, l.repeats));
            assert_eq!(found, want, "{text}");
            assert_eq!(join(&truncate_loops(ws)), truncated, "{text}");
        }
    }

    #[test]
    fn compression_ratio_flags_loops_only() {
        let plain = [
            "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
            "Every summer, my family drove to a small house by the lake. The road was long, and we always stopped for ice cream on the way.",
            "我们今天去公园散步，天气非常好，我们很开心。",
            "Thank you.",
        ];
        for text in plain {
            let r = compression_ratio(text);
            assert!(r < COMPRESSION_RATIO_THRESHOLD, "{r} {text}");
            assert!(!is_repetitive(&words(text), text), "{text}");
        }
        let looping = [
            "I'm going to go to the store. I'm going to go to the store. I'm going to go to the store. I'm going to go to the store.",
            "Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay. Okay.",
        ];
        for text in looping {
            let r = compression_ratio(text);
            assert!(r > COMPRESSION_RATIO_THRESHOLD, "{r} {text}");
            assert!(is_repetitive(&words(text), text), "{text}");
        }
        assert_eq!(compression_ratio(""), 0.0);
    }
}
