//! Assembling words from Whisper's sub-word tokens.
//!
//! Whisper's byte-level BPE tokens carry a leading space when they start a word; tokens
//! that are only punctuation belong to the word before them. A word's time span runs from
//! its first token's start to its last token's end; its probability is the mean of its
//! tokens' probabilities.

use transcribe_core::Word;

/// One text token as whisper.cpp reports it (times in seconds).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TokenPiece {
    pub bytes: Vec<u8>,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// Groups tokens into words, clamping times into `[seg_start, seg_end]` and keeping them
/// monotonic.
pub(crate) fn assemble(tokens: &[TokenPiece], seg_start: f64, seg_end: f64) -> Vec<Word> {
    struct Acc {
        bytes: Vec<u8>,
        start: f64,
        end: f64,
        p_sum: f32,
        n: usize,
    }
    let mut words = Vec::new();
    let mut cur: Option<Acc> = None;
    let flush = |acc: Acc, words: &mut Vec<Word>| {
        let text = String::from_utf8_lossy(&acc.bytes).trim().to_string();
        if !text.is_empty() {
            words.push(Word {
                text,
                start: acc.start,
                end: acc.end,
                probability: acc.p_sum / acc.n as f32,
            });
        }
    };
    for t in tokens {
        let starts_word = t.bytes.first() == Some(&b' ');
        let is_punct = !t
            .bytes
            .iter()
            .any(|b| b.is_ascii_alphanumeric() || *b >= 0x80);
        match cur.as_mut() {
            Some(acc) if !starts_word || (is_punct && !acc.bytes.is_empty()) => {
                acc.bytes.extend_from_slice(&t.bytes);
                acc.end = acc.end.max(t.end);
                acc.p_sum += t.probability;
                acc.n += 1;
            }
            _ => {
                if let Some(acc) = cur.take() {
                    flush(acc, &mut words);
                }
                cur = Some(Acc {
                    bytes: t.bytes.clone(),
                    start: t.start,
                    end: t.end,
                    p_sum: t.probability,
                    n: 1,
                });
            }
        }
    }
    if let Some(acc) = cur.take() {
        flush(acc, &mut words);
    }
    let mut last = seg_start;
    for w in &mut words {
        w.start = w.start.clamp(last, seg_end.max(last));
        w.end = w.end.clamp(w.start, seg_end.max(w.start));
        last = w.start;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str, start: f64, end: f64, p: f32) -> TokenPiece {
        TokenPiece {
            bytes: s.as_bytes().to_vec(),
            start,
            end,
            probability: p,
        }
    }

    #[test]
    fn joins_subwords_and_punctuation() {
        let words = assemble(
            &[
                tok(" And", 0.0, 0.2, 0.9),
                tok(" so", 0.2, 0.4, 0.8),
                tok(" Amer", 0.4, 0.6, 0.6),
                tok("icans", 0.6, 0.9, 1.0),
                tok(",", 0.9, 0.9, 0.5),
                tok(" ask", 1.0, 1.2, 0.7),
                tok(".", 1.2, 1.3, 0.9),
            ],
            0.0,
            2.0,
        );
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["And", "so", "Americans,", "ask."]);
        assert_eq!(words[2].start, 0.4);
        assert_eq!(words[2].end, 0.9);
        assert!((words[2].probability - 0.7).abs() < 1e-6);
    }

    #[test]
    fn times_are_clamped_and_monotonic() {
        let words = assemble(
            &[
                tok(" a", 1.5, 1.2, 1.0),
                tok(" b", 1.0, 9.0, 1.0),
                tok(" c", 0.5, 0.6, 1.0),
            ],
            1.0,
            3.0,
        );
        let mut last = 1.0;
        for w in &words {
            assert!(
                w.start >= last && w.end >= w.start && w.end <= 3.0,
                "{words:?}"
            );
            last = w.start;
        }
    }

    #[test]
    fn multibyte_characters_split_across_tokens_survive() {
        let e = "é".as_bytes();
        let words = assemble(
            &[
                TokenPiece {
                    bytes: vec![b' ', b'c', b'a', b'f', e[0]],
                    start: 0.0,
                    end: 0.1,
                    probability: 1.0,
                },
                TokenPiece {
                    bytes: vec![e[1]],
                    start: 0.1,
                    end: 0.2,
                    probability: 1.0,
                },
            ],
            0.0,
            1.0,
        );
        assert_eq!(words.len(), 1);
        assert_eq!(words[0].text, "café");
    }
}
