//! Output formats: plain text, SubRip (SRT), WebVTT and JSON.

use serde::Serialize;
use transcribe_core::{Segment, Transcript, subtitles};

/// An output format for transcripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text, one segment per line.
    Txt,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// JSON: segments with times, words with times and probabilities, language, model,
    /// audio duration and processing time.
    Json,
}

impl Format {
    /// The file extension for `--output-dir`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Txt => "txt",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Json => "json",
        }
    }
}

/// Everything a JSON document reports about one transcription.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The input file.
    pub file: &'a str,
    /// The model file or name used.
    pub model: &'a str,
    /// Detected or requested language.
    pub language: Option<&'a str>,
    /// Audio duration in seconds.
    pub audio_duration: f64,
    /// Wall-clock processing time in seconds (decode + inference).
    pub processing_time: f64,
    /// The full text.
    pub text: String,
    /// Segments with words.
    pub segments: &'a [Segment],
}

/// Renders `transcript` in `format`. `report` supplies the JSON-only fields.
pub fn render(format: Format, transcript: &Transcript, report: &Report<'_>) -> String {
    match format {
        Format::Txt => subtitles::text(&transcript.segments),
        Format::Srt => subtitles::srt(&transcript.segments),
        Format::Vtt => subtitles::vtt(&transcript.segments),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
                // Serialising plain data cannot fail; keep the output valid JSON regardless.
                format!("{{\"error\": {:?}}}", e.to_string())
            });
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_core::Word;

    fn sample() -> Transcript {
        Transcript {
            segments: vec![
                Segment {
                    start: 0.0,
                    end: 1.5,
                    text: "Hello there.".into(),
                    words: vec![Word {
                        text: "Hello".into(),
                        start: 0.0,
                        end: 0.6,
                        probability: 0.9,
                    }],
                    no_speech_prob: 0.01,
                    avg_logprob: -0.2,
                },
                Segment {
                    start: 3661.25,
                    end: 3662.0,
                    text: "Bye.".into(),
                    words: vec![],
                    no_speech_prob: 0.0,
                    avg_logprob: -0.1,
                },
            ],
            language: Some("en".into()),
        }
    }

    fn report(t: &Transcript) -> Report<'_> {
        Report {
            file: "a.wav",
            model: "tiny.en",
            language: t.language.as_deref(),
            audio_duration: 3662.0,
            processing_time: 1.0,
            text: t.text(),
            segments: &t.segments,
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(subtitles::timestamp(3661.25, ','), "01:01:01,250");
        assert_eq!(subtitles::timestamp(0.0005, '.'), "00:00:00.001");
    }

    #[test]
    fn srt_and_vtt_layout() {
        let t = sample();
        let srt = render(Format::Srt, &t, &report(&t));
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n"
        );
        let vtt = render(Format::Vtt, &t, &report(&t));
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"));
        assert_eq!(render(Format::Txt, &t, &report(&t)), "Hello there.\nBye.\n");
    }

    #[test]
    fn json_has_the_promised_fields() -> Result<(), serde_json::Error> {
        let t = sample();
        let v: serde_json::Value = serde_json::from_str(&render(Format::Json, &t, &report(&t)))?;
        assert_eq!(v["language"], "en");
        assert_eq!(v["model"], "tiny.en");
        assert_eq!(v["audio_duration"], 3662.0);
        assert_eq!(v["segments"][0]["words"][0]["text"], "Hello");
        assert!(v["segments"][0]["words"][0]["probability"].is_number());
        assert!(v["processing_time"].is_number());
        Ok(())
    }
}
