//! Text normalisation and word error rate, as the evaluation README prescribes:
//! lowercase, strip punctuation, collapse whitespace; numbers are left as they are.

/// Normalises a transcript for scoring: lowercase, punctuation removed (apostrophes inside
/// words kept, so "don't" stays one word), whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let keep = if c.is_alphanumeric() {
            true
        } else if c == '\'' || c == '\u{2019}' {
            let prev = i > 0 && chars[i - 1].is_alphanumeric();
            let next = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
            prev && next
        } else {
            false
        };
        if keep {
            for l in c.to_lowercase() {
                out.push(if l == '\u{2019}' { '\'' } else { l });
            }
        } else {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The result of comparing a hypothesis with a reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WerScore {
    /// Substitutions + deletions + insertions.
    pub errors: usize,
    /// Words in the normalised reference.
    pub reference_words: usize,
}

impl WerScore {
    /// Errors divided by reference words (0 when both are empty, 1 per inserted word when
    /// the reference is empty).
    pub fn rate(&self) -> f64 {
        if self.reference_words == 0 {
            self.errors as f64
        } else {
            self.errors as f64 / self.reference_words as f64
        }
    }
}

/// Word error rate of `hypothesis` against `reference`, after [`normalize`].
pub fn wer(reference: &str, hypothesis: &str) -> WerScore {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    let r: Vec<&str> = r.split_whitespace().collect();
    let h: Vec<&str> = h.split_whitespace().collect();
    WerScore {
        errors: edit_distance(&r, &h),
        reference_words: r.len(),
    }
}

/// Character error rate (for languages written without spaces), after [`normalize`] and
/// with whitespace removed.
pub fn cer(reference: &str, hypothesis: &str) -> WerScore {
    let r: Vec<char> = normalize(reference)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let h: Vec<char> = normalize(hypothesis)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    WerScore {
        errors: edit_distance(&r, &h),
        reference_words: r.len(),
    }
}

/// Levenshtein distance between two sequences.
fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// A readable two-line diff for test failures: the normalised reference and hypothesis.
pub fn explain(reference: &str, hypothesis: &str) -> String {
    let score = wer(reference, hypothesis);
    format!(
        "WER {:.3} ({} errors / {} words)\n  reference:  {}\n  hypothesis: {}",
        score.rate(),
        score.errors,
        score.reference_words,
        normalize(reference),
        normalize(hypothesis)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_punctuation_and_case() {
        assert_eq!(normalize("Hello, World!  It's  me."), "hello world it's me");
        assert_eq!(
            normalize("  \"Quoted\" -- dash 'single' "),
            "quoted dash single"
        );
        assert_eq!(normalize("3.5 per-cent"), "3 5 per cent");
    }

    #[test]
    fn wer_counts_each_kind_of_error() {
        assert_eq!(wer("a b c", "a b c").errors, 0);
        assert_eq!(wer("a b c", "a x c").errors, 1);
        assert_eq!(wer("a b c", "a c").errors, 1);
        assert_eq!(wer("a b c", "a b c d").errors, 1);
        assert_eq!(wer("a b c d", "").errors, 4);
        assert!((wer("a b c d", "a b").rate() - 0.5).abs() < 1e-9);
        assert_eq!(wer("", "").rate(), 0.0);
        assert_eq!(wer("", "x y").rate(), 2.0);
    }

    #[test]
    fn cer_ignores_spaces() {
        assert_eq!(cer("你好 世界", "你好世界").errors, 0);
        assert_eq!(cer("abc", "abd").errors, 1);
    }
}
