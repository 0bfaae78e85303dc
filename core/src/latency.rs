//! When each word first showed: a minimum-edit-distance alignment of what a listener saw
//! (finals so far, then the current interim) with reference words, at every moment the
//! text changed. Used by the client's traces (`transcribe_client::latency`, real clocks)
//! and by `stream_sim` (the policy's sample clock), so both report the same measure.

use crate::text::normalize;

/// Reference words whose start is at most this far past the audio sent so far may already
/// be aligned (Whisper's word times are approximate, a word may show a little early).
pub const ALIGN_SLACK_SECONDS: f64 = 1.0;

/// One reference word: a normalised token and the audio span of its word (seconds from
/// the stream start).
#[derive(Debug, Clone, PartialEq)]
pub struct RefWord {
    /// The normalised token ([`normalize`]).
    pub token: String,
    /// Start of its word.
    pub start: f64,
    /// End of its word.
    pub end: f64,
}

/// The normalised tokens of `text`.
pub fn tokens(text: &str) -> Vec<String> {
    normalize(text)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Minimum-edit-distance alignment of `reference` with `hypothesis`: the indices of the
/// reference words aligned to equal tokens (last first).
pub fn align(reference: &[RefWord], hypothesis: &[String]) -> Vec<usize> {
    let (n, m) = (reference.len(), hypothesis.len());
    let width = m + 1;
    let mut d = vec![0u32; (n + 1) * width];
    for i in 0..=n {
        d[i * width] = i as u32;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j as u32;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = u32::from(reference[i - 1].token != hypothesis[j - 1]);
            let diag = d[(i - 1) * width + j - 1] + sub;
            let up = d[(i - 1) * width + j] + 1;
            let left = d[i * width + j - 1] + 1;
            d[i * width + j] = diag.min(up).min(left);
        }
    }
    let mut matched = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        let here = d[i * width + j];
        let equal = reference[i - 1].token == hypothesis[j - 1];
        if equal && here == d[(i - 1) * width + j - 1] {
            matched.push(i - 1);
            i -= 1;
            j -= 1;
        } else if here == d[(i - 1) * width + j - 1] + 1 {
            i -= 1;
            j -= 1;
        } else if here == d[(i - 1) * width + j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    matched
}

/// What a listener sees of a stream: the finals so far, then the current interim (the
/// latest of an utterance not yet final; a final of its utterance or a later one clears
/// it). Feed it the events in arrival order; [`ShownText::tokens`] is one moment of
/// [`first_appearances`]' `shown`.
#[derive(Debug, Clone, Default)]
pub struct ShownText {
    finals: Vec<String>,
    interim: Option<(u64, Vec<String>)>,
}

impl ShownText {
    /// An interim of `utterance_index`: its committed text, then its unstable tail.
    pub fn interim(&mut self, utterance_index: u64, committed: &str, tail: &str) {
        let mut t = tokens(committed);
        t.extend(tokens(tail));
        self.interim = (!t.is_empty()).then_some((utterance_index, t));
    }

    /// The final of `utterance_index`.
    pub fn final_result(&mut self, utterance_index: u64, text: &str) {
        self.finals.extend(tokens(text));
        if self
            .interim
            .as_ref()
            .is_some_and(|(i, _)| *i <= utterance_index)
        {
            self.interim = None;
        }
    }

    /// The tokens shown now.
    pub fn tokens(&self) -> Vec<String> {
        let mut shown = self.finals.clone();
        if let Some((_, t)) = &self.interim {
            shown.extend(t.iter().cloned());
        }
        shown
    }
}

/// Per reference word, the latency (seconds from its end) of its first appearance in
/// `shown`: each item is a moment (seconds from the stream start, in order) and the tokens
/// a listener saw then (finals so far, then the current interim). `None`: never matched.
/// At each moment only the reference words starting by then (plus
/// [`ALIGN_SLACK_SECONDS`]) are aligned.
pub fn first_appearances<I>(reference: &[RefWord], shown: I) -> Vec<Option<f64>>
where
    I: IntoIterator<Item = (f64, Vec<String>)>,
{
    let mut first: Vec<Option<f64>> = vec![None; reference.len()];
    for (now, hypothesis) in shown {
        let heard = reference
            .iter()
            .take_while(|w| w.start <= now + ALIGN_SLACK_SECONDS)
            .count();
        for k in align(&reference[..heard], &hypothesis) {
            if first[k].is_none() {
                first[k] = Some(now - reference[k].end);
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(token: &str, start: f64, end: f64) -> RefWord {
        RefWord {
            token: token.to_owned(),
            start,
            end,
        }
    }

    fn toks(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn align_matches_equal_tokens_in_order() {
        let reference = [
            word("a", 0.0, 0.1),
            word("b", 0.2, 0.3),
            word("c", 0.4, 0.5),
        ];
        let mut m = align(&reference, &toks(&["a", "x", "c"]));
        m.sort_unstable();
        assert_eq!(m, vec![0, 2]);
        assert!(align(&reference, &[]).is_empty());
    }

    #[test]
    fn a_final_clears_its_utterances_interim() {
        let mut shown = ShownText::default();
        shown.interim(0, "ask", "what");
        assert_eq!(shown.tokens(), toks(&["ask", "what"]));
        shown.interim(1, "", "you");
        shown.final_result(0, "Ask what you.");
        // The interim of a later utterance stays after an earlier final.
        assert_eq!(shown.tokens(), toks(&["ask", "what", "you", "you"]));
        shown.final_result(1, "Can do.");
        assert_eq!(shown.tokens(), toks(&["ask", "what", "you", "can", "do"]));
        shown.interim(2, "", "");
        assert_eq!(shown.tokens(), toks(&["ask", "what", "you", "can", "do"]));
    }

    #[test]
    fn a_word_counts_when_it_first_shows_in_place() {
        let reference = [word("ask", 0.0, 0.5), word("what", 0.6, 1.0)];
        let shown = vec![
            // A misheard first word does not count; "what" does.
            (1.2, toks(&["as", "what"])),
            (2.0, toks(&["ask", "what"])),
        ];
        let l = first_appearances(&reference, shown);
        assert!((l[0].unwrap_or(f64::NAN) - 1.5).abs() < 1e-9, "{l:?}");
        assert!((l[1].unwrap_or(f64::NAN) - 0.2).abs() < 1e-9, "{l:?}");
        // Words not yet heard (start past now + slack) are not aligned early.
        let early = first_appearances(&[word("later", 5.0, 5.5)], vec![(1.0, toks(&["later"]))]);
        assert_eq!(early, vec![None]);
    }
}
