//! Word sequences for LocalAgreement: extraction from transcripts, normalised comparison,
//! alignment of a hypothesis after the committed words, and time clean-up.

use crate::text::normalize;
use crate::transcript::{Segment, Transcript, Word, join_texts};

/// How far before the last committed word's end a word of a new hypothesis may start and
/// still count as new: 0.1 s (ufal/whisper_streaming `HypothesisBuffer.insert`).
pub const ALIGN_TOLERANCE_SECONDS: f64 = 0.1;

/// Longest run of committed words searched for at the head of a new hypothesis when it
/// repeats them: 5 words (ufal/whisper_streaming `HypothesisBuffer.insert`).
pub const MAX_OVERLAP_WORDS: usize = 5;

/// The words of `segments`, with times shifted by `offset_seconds` (so absolute when the
/// offset is the buffer's start). Segments without word timings get words split from their
/// text, with the segment's span shared out in proportion to each word's length.
pub fn words_of_segments<'a>(
    segments: impl IntoIterator<Item = &'a Segment>,
    offset_seconds: f64,
) -> Vec<Word> {
    let mut out = Vec::new();
    for segment in segments {
        if segment.words.is_empty() {
            let pieces: Vec<&str> = segment.text.split_whitespace().collect();
            let weight = |p: &str| p.chars().count() as f64 + 1.0;
            let total: f64 = pieces.iter().map(|p| weight(p)).sum();
            let span = (segment.end - segment.start).max(0.0);
            let mut t = segment.start;
            for piece in pieces {
                let d = span * weight(piece) / total;
                out.push(Word {
                    text: piece.to_string(),
                    start: t + offset_seconds,
                    end: t + d + offset_seconds,
                    probability: segment.avg_logprob.exp().clamp(0.0, 1.0),
                });
                t += d;
            }
        } else {
            for word in &segment.words {
                let text = word.text.trim();
                if text.is_empty() {
                    continue;
                }
                out.push(Word {
                    text: text.to_string(),
                    start: word.start + offset_seconds,
                    end: word.end + offset_seconds,
                    probability: word.probability,
                });
            }
        }
    }
    out
}

/// All words of `transcript`, see [`words_of_segments`].
pub fn words_of(transcript: &Transcript, offset_seconds: f64) -> Vec<Word> {
    words_of_segments(&transcript.segments, offset_seconds)
}

/// A word's comparison key: [`normalize`]d (case and punctuation do not matter).
pub fn key(word: &Word) -> String {
    normalize(&word.text)
}

/// Whether two word runs are equal after normalisation.
fn same(a: &[Word], b: &[Word]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// The part of `hypothesis` that comes after `committed`.
///
/// When the hypothesis starts with the committed words (normalised), the rest of it.
/// Otherwise (the model revised or dropped an earlier word) the committed words are aligned
/// to the head of the hypothesis by text (`aligned_end`), and what follows the alignment
/// is new. Only when the texts are too far apart for that (more than a third of the
/// committed words edited) do times decide: the words starting no earlier than
/// [`ALIGN_TOLERANCE_SECONDS`] before the last committed word's end, minus a leading run of
/// up to [`MAX_OVERLAP_WORDS`] words that repeats the end of `committed`
/// (ufal/whisper_streaming's rule, whose hypotheses are of new audio only; ours are of the
/// whole utterance, where partial decodes' word times can be seconds off).
pub fn tail_after<'a>(hypothesis: &'a [Word], committed: &[Word]) -> &'a [Word] {
    let k = committed.len();
    let Some(last) = committed.last() else {
        return hypothesis;
    };
    if hypothesis.len() >= k && same(&hypothesis[..k], committed) {
        return &hypothesis[k..];
    }
    if let Some(end) = aligned_end(hypothesis, committed) {
        return &hypothesis[end..];
    }
    let from = hypothesis
        .iter()
        .position(|w| w.start >= last.end - ALIGN_TOLERANCE_SECONDS)
        .unwrap_or(hypothesis.len());
    let rest = &hypothesis[from..];
    for n in (1..=MAX_OVERLAP_WORDS.min(k).min(rest.len())).rev() {
        if same(&committed[k - n..], &rest[..n]) {
            return &rest[n..];
        }
    }
    rest
}

/// Where `committed` ends in `hypothesis`: the length of the hypothesis prefix that the
/// committed words align to with the fewest word edits (insertions, deletions,
/// substitutions of normalised words), the longer prefix on a tie (a revised word is
/// likelier than a dropped one). `None` when that takes more edits than a third of the
/// committed words.
pub fn aligned_end(hypothesis: &[Word], committed: &[Word]) -> Option<usize> {
    let c: Vec<String> = committed.iter().map(key).collect();
    let h: Vec<String> = hypothesis.iter().map(key).collect();
    // row[j]: edits between the committed words so far and hypothesis[..j].
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, cw) in c.iter().enumerate() {
        let mut next = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            next[j + 1] = (row[j] + usize::from(cw != hw))
                .min(row[j + 1] + 1)
                .min(next[j] + 1);
        }
        row = next;
    }
    let (end, edits) = row
        .iter()
        .enumerate()
        .min_by_key(|&(j, &e)| (e, std::cmp::Reverse(j)))?;
    (*edits * 3 <= c.len()).then_some(end)
}

/// Length of the longest common prefix of `a` and `b`, comparing normalised words.
pub fn common_prefix(a: &[Word], b: &[Word]) -> usize {
    a.iter()
        .zip(b)
        .take_while(|(x, y)| key(x) == key(y))
        .count()
}

/// The words' texts joined by single spaces.
pub fn join_words(words: &[Word]) -> String {
    join_texts(words.iter().map(|w| w.text.as_str()))
}

/// Makes word times monotonic and keeps them inside `[start, end]` (seconds): each word
/// starts no earlier than the previous one ended (and no earlier than `after`), and ends no
/// earlier than it starts.
pub fn clamp_times(words: &mut [Word], after: f64, start: f64, end: f64) {
    let mut prev = after.max(start);
    for w in words {
        let s = if w.start.is_finite() { w.start } else { prev };
        let e = if w.end.is_finite() { w.end } else { s };
        w.start = s.clamp(prev.min(end), end);
        w.end = e.clamp(w.start, end);
        prev = w.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn w(text: &str, start: f64, end: f64) -> Word {
        Word {
            text: text.into(),
            start,
            end,
            probability: 0.9,
        }
    }

    fn texts(words: &[Word]) -> Vec<&str> {
        words.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn words_are_split_from_text_when_timings_are_missing() {
        let seg = Segment {
            start: 1.0,
            end: 2.0,
            text: " ab  cde ".into(),
            words: vec![],
            no_speech_prob: 0.0,
            avg_logprob: 0.0,
        };
        let words = words_of_segments([&seg], 10.0);
        assert_eq!(texts(&words), ["ab", "cde"]);
        assert!((words[0].start - 11.0).abs() < 1e-9);
        assert!((words[0].end - (11.0 + 3.0 / 7.0)).abs() < 1e-9);
        assert!((words[1].end - 12.0).abs() < 1e-9);
    }

    #[test]
    fn tail_follows_committed_prefix_or_time() {
        let committed = [w("Ask", 0.0, 0.3), w("not", 0.3, 0.6)];
        // Same prefix, different spelling.
        let h = [w("ask", 0.0, 0.3), w("NOT,", 0.3, 0.6), w("what", 0.7, 0.9)];
        assert_eq!(texts(tail_after(&h, &committed)), ["what"]);
        // Revised first word: aligned by time.
        let h = [w("As", 0.0, 0.3), w("not", 0.3, 0.6), w("what", 0.7, 0.9)];
        assert_eq!(texts(tail_after(&h, &committed)), ["what"]);
        // Time-aligned words that repeat the committed end are skipped.
        let h = [w("As", 0.0, 0.2), w("not", 0.55, 0.6), w("what", 0.7, 0.9)];
        assert_eq!(texts(tail_after(&h, &committed)), ["what"]);
        assert_eq!(texts(tail_after(&h, &[])), ["As", "not", "what"]);
    }

    #[test]
    fn tail_after_a_revision_follows_the_text_not_the_times() {
        // Ten committed words, then a hypothesis that revised the first one and whose word
        // times (a partial decode's) are early: by time the whole run would look new again
        // and, longer than MAX_OVERLAP_WORDS, be committed twice (long_60s, tiny.en).
        let said = "in the evenings we cooked dinner outside and watched the";
        let committed: Vec<Word> = said
            .split(' ')
            .enumerate()
            .map(|(i, t)| w(t, i as f64 * 0.4, i as f64 * 0.4 + 0.3))
            .collect();
        let mut h: Vec<Word> =
            "and the evenings we cooked dinner outside and watched the sun go down"
                .split(' ')
                .enumerate()
                .map(|(i, t)| w(t, i as f64 * 0.2, i as f64 * 0.2 + 0.1))
                .collect();
        assert_eq!(texts(tail_after(&h, &committed)), ["sun", "go", "down"]);
        // A dropped committed word: the rest still follows it.
        h.remove(3);
        assert_eq!(texts(tail_after(&h, &committed)), ["sun", "go", "down"]);
        // Nothing new yet.
        assert!(tail_after(&h[..9], &committed).is_empty());
        // Unrelated text: no alignment, times decide.
        let other = [w("zebra", 5.0, 5.2), w("yak", 5.2, 5.4)];
        assert_eq!(aligned_end(&other, &committed), None);
        assert_eq!(texts(tail_after(&other, &committed)), ["zebra", "yak"]);
    }

    #[test]
    fn prefix_compares_normalised_words() {
        let a = [
            w("Hello,", 0.0, 1.0),
            w("world", 1.0, 2.0),
            w("x", 2.0, 3.0),
        ];
        let b = [
            w("hello", 0.0, 1.0),
            w("World!", 1.0, 2.0),
            w("y", 2.0, 3.0),
        ];
        assert_eq!(common_prefix(&a, &b), 2);
        assert_eq!(common_prefix(&a, &[]), 0);
    }

    #[test]
    fn times_are_clamped_and_monotonic() {
        let mut words = [
            w("a", -1.0, 0.5),
            w("b", 0.4, 0.3),
            w("c", 0.9, 9.0),
            w("d", f64::NAN, 1.0),
        ];
        clamp_times(&mut words, 0.0, 0.0, 2.0);
        let spans: Vec<(f64, f64)> = words.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(spans, [(0.0, 0.5), (0.5, 0.5), (0.9, 2.0), (2.0, 2.0)]);
    }
}
