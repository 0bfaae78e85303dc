//! Subtitle and text renderings of a transcript's segments: plain text (one segment a
//! line), SubRip and WebVTT. Pure functions, shared by the CLI's output formats and the
//! server's REST `response_format`s.

use crate::transcript::Segment;

/// One segment's text per line (segments without text skipped).
pub fn text(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in spoken(segments) {
        out.push_str(&s.text);
        out.push('\n');
    }
    out
}

/// SubRip: numbered cues, `HH:MM:SS,mmm` times.
pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in spoken(segments).enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(s.start, ','),
            timestamp(s.end, ','),
            s.text
        ));
    }
    out
}

/// WebVTT: a `WEBVTT` header, then cues with `HH:MM:SS.mmm` times.
pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in spoken(segments) {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(s.start, '.'),
            timestamp(s.end, '.'),
            s.text
        ));
    }
    out
}

/// `HH:MM:SS,mmm` (SRT, `sep` = `,`) or `HH:MM:SS.mmm` (VTT, `sep` = `.`).
pub fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn spoken(segments: &[Segment]) -> impl Iterator<Item = &Segment> {
    segments.iter().filter(|s| !s.text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            words: Vec::new(),
            no_speech_prob: 0.0,
            avg_logprob: 0.0,
        }
    }

    #[test]
    fn cues_and_times() {
        let segments = [
            segment(0.0, 1.5, "Hello."),
            segment(1.5, 1.5, ""),
            segment(3661.25, 3662.0, "Bye."),
        ];
        assert_eq!(text(&segments), "Hello.\nBye.\n");
        assert_eq!(
            srt(&segments),
            "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        assert!(vtt(&segments).starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n\n"));
        assert_eq!(timestamp(-1.0, '.'), "00:00:00.000");
    }
}
