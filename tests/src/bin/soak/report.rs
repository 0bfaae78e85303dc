//! The soak's figures: aggregation of stream and bad-request records, memory samples and
//! the server's fate into a [`Report`], printed as a markdown table and written as JSON.
//! Pure: values in, values and text out.

use std::collections::BTreeMap;

use serde::Serialize;
use tonic::Code;
use transcribe_client::latency::percentile;
use transcribe_core::SAMPLE_RATE;

use crate::plan::{BadKind, Fate};
use crate::stream::{Outcome, StreamRecord};

/// Seconds of `samples` at 16 kHz.
fn secs(samples: u64) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

/// p50 and p95 of a set of latencies, and how many there were.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    /// Count.
    pub n: usize,
    /// Median (seconds).
    pub p50_s: Option<f64>,
    /// 95th percentile (seconds).
    pub p95_s: Option<f64>,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        Self {
            n: values.len(),
            p50_s: percentile(values, 50.0),
            p95_s: percentile(values, 95.0),
        }
    }
}

/// Audio accounting over completed (admitted, half-closed, OK) streams.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Audio {
    /// Streams completed / dropped mid-audio / dropped mid-response / failed with a status /
    /// never connected.
    pub completed: usize,
    /// See `completed`.
    pub dropped_mid_audio: usize,
    /// See `completed`.
    pub dropped_mid_response: usize,
    /// See `completed`.
    pub failed: usize,
    /// See `completed`.
    pub connect_failed: usize,
    /// Audio sent on completed streams (seconds).
    pub sent_s: f64,
    /// The server's largest `audio_received`, summed.
    pub received_s: f64,
    /// The server's largest `audio_processed` (end of the newest decoded audio), summed.
    pub processed_s: f64,
    /// The server's largest `final_offset`, summed.
    pub settled_s: f64,
    /// Sent after the last report but holding no speech (nothing to report).
    pub silent_tail_s: f64,
    /// Sent and not accounted for. Must be 0.
    pub lost_s: f64,
    /// Reported beyond what was sent. Must be 0.
    pub over_reported_s: f64,
    /// Completed streams with lost or over-reported audio: "slot/file: seconds".
    pub lossy_streams: Vec<String>,
}

/// Bad requests of one kind and the codes they got.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BadTally {
    /// Sent.
    pub sent: usize,
    /// Status code name -> count.
    pub codes: BTreeMap<String, usize>,
}

/// Resident memory of the server (KiB), sampled once a second.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Memory {
    /// When the streams started.
    pub start_kib: Option<u64>,
    /// When the streams were done.
    pub end_kib: Option<u64>,
    /// Largest sample.
    pub peak_kib: Option<u64>,
    /// end - start.
    pub growth_kib: Option<i64>,
    /// After the warm-up (the first minute: buffers the first decodes allocate).
    pub warm_kib: Option<u64>,
    /// end - warm: growth while serving steadily.
    pub growth_after_warm_kib: Option<i64>,
    /// Samples taken.
    pub samples: usize,
}

impl Memory {
    /// From the samples in order (the first at the start, the last at the end);
    /// `samples[warm]` is the first after the warm-up.
    pub fn from_samples(samples: &[u64], warm: usize) -> Self {
        let start = samples.first().copied();
        let end = samples.last().copied();
        // Only when the run went past the warm-up (the last sample is the end).
        let warm = (warm + 1 < samples.len()).then(|| samples[warm]);
        let diff = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b as i64 - a as i64);
        Self {
            start_kib: start,
            end_kib: end,
            peak_kib: samples.iter().copied().max(),
            growth_kib: diff(start, end),
            warm_kib: warm,
            growth_after_warm_kib: diff(warm, end),
            samples: samples.len(),
        }
    }
}

/// Everything the soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// Seed of the random choices.
    pub seed: u64,
    /// Concurrent stream slots.
    pub streams: usize,
    /// Planned minutes per slot.
    pub minutes: f64,
    /// Wall time of the streaming phase.
    pub wall_s: f64,
    /// Server URL.
    pub server: String,
    /// Whether this tool started the server.
    pub spawned: bool,
    /// Server pid, when known.
    pub server_pid: Option<u32>,
    /// 1/5/15-minute load averages at the start and at the end.
    pub load_start: Option<[f64; 3]>,
    /// See `load_start`.
    pub load_end: Option<[f64; 3]>,
    /// Server CPU seconds during the streaming phase, and per wall second.
    pub server_cpu_s: Option<f64>,
    /// See `server_cpu_s`.
    pub server_cpu_share: Option<f64>,
    /// Audio accounting.
    pub audio: Audio,
    /// Non-empty finals received (completed streams).
    pub finals: usize,
    /// Empty finals received.
    pub empty_finals: usize,
    /// Word emission latency (each word of the stream's own finals, first appearance).
    pub word_latency: Spread,
    /// Words of finals never matched in time order.
    pub unmatched_words: usize,
    /// Interim (partial) latency.
    pub partial_latency: Spread,
    /// Finalisation latency (from the final's audio end).
    pub final_latency: Spread,
    /// Finalisation latency from the final's last word's end.
    pub final_from_last_word: Spread,
    /// Server-reported processing latency.
    pub server_processing_latency: Spread,
    /// Server memory.
    pub rss: Memory,
    /// Responses received on all streams.
    pub responses: usize,
    /// Stream errors by status code (streams the soak did not mean to break).
    pub stream_errors: BTreeMap<String, usize>,
    /// The first message seen per stream error code.
    pub stream_error_messages: BTreeMap<String, String>,
    /// Bad requests by kind.
    pub bad_requests: BTreeMap<String, BadTally>,
    /// Bad requests answered with INVALID_ARGUMENT / with anything else.
    pub bad_expected: usize,
    /// See `bad_expected`.
    pub bad_unexpected: usize,
    /// Whether the server died (exited or stopped answering) before the soak stopped it.
    pub server_died: bool,
    /// Its exit status, when it exited on its own.
    pub server_exit: Option<String>,
    /// Lost audio is 0 and the server lived.
    pub pass: bool,
}

/// The code's name as in the API (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Folds the records into the report's audio, latency and error sections (the rest is
/// filled by the caller).
pub fn aggregate(base: Report, records: &[StreamRecord], bad: &[(BadKind, Code)]) -> Report {
    let mut r = base;
    let (mut words, mut partials, mut finals, mut final_words, mut server) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in records {
        match &s.outcome {
            Outcome::Completed => r.audio.completed += 1,
            Outcome::Dropped => match s.fate {
                Fate::DropMidAudio(_) => r.audio.dropped_mid_audio += 1,
                _ => r.audio.dropped_mid_response += 1,
            },
            Outcome::Failed { code, message } => {
                r.audio.failed += 1;
                *r.stream_errors.entry(code_name(*code)).or_default() += 1;
                r.stream_error_messages
                    .entry(code_name(*code))
                    .or_insert_with(|| message.clone());
            }
            Outcome::ConnectFailed(message) => {
                r.audio.connect_failed += 1;
                *r.stream_errors.entry("CONNECT".to_owned()).or_default() += 1;
                r.stream_error_messages
                    .entry("CONNECT".to_owned())
                    .or_insert_with(|| message.clone());
            }
        }
        r.responses += s.responses;
        if let Some(v) = s.verdict {
            r.audio.sent_s += s.length.as_secs_f64();
            r.audio.received_s += secs(s.reported.received);
            r.audio.processed_s += secs(s.reported.processed);
            r.audio.settled_s += secs(s.reported.final_offset);
            r.audio.silent_tail_s += secs(v.silent_tail);
            r.audio.lost_s += secs(v.lost);
            r.audio.over_reported_s += secs(v.over_reported);
            if v.lost > 0 || v.over_reported > 0 {
                r.audio.lossy_streams.push(format!(
                    "slot {} {} ({}): lost {:.3} s, over-reported {:.3} s",
                    s.slot,
                    s.file,
                    s.fate.name(),
                    secs(v.lost),
                    secs(v.over_reported)
                ));
            }
            r.finals += s.finals;
            r.empty_finals += s.empty_finals;
            r.unmatched_words += s.unmatched_words;
            words.extend_from_slice(&s.word_latencies);
            partials.extend_from_slice(&s.interim_latencies);
            finals.extend_from_slice(&s.final_latencies);
            final_words.extend_from_slice(&s.final_word_latencies);
            server.extend_from_slice(&s.server_latencies);
        }
    }
    r.word_latency = Spread::of(&words);
    r.partial_latency = Spread::of(&partials);
    r.final_latency = Spread::of(&finals);
    r.final_from_last_word = Spread::of(&final_words);
    r.server_processing_latency = Spread::of(&server);
    for (kind, code) in bad {
        let tally = r.bad_requests.entry(kind.name().to_owned()).or_default();
        tally.sent += 1;
        *tally.codes.entry(code_name(*code)).or_default() += 1;
        if *code == Code::InvalidArgument {
            r.bad_expected += 1;
        } else {
            r.bad_unexpected += 1;
        }
    }
    r.pass = r.audio.lost_s == 0.0 && r.audio.over_reported_s == 0.0 && !r.server_died;
    r
}

/// An empty report for the run's settings.
pub fn empty(command: String, seed: u64, streams: usize, minutes: f64, server: String) -> Report {
    let none = Spread::of(&[]);
    Report {
        command,
        seed,
        streams,
        minutes,
        wall_s: 0.0,
        server,
        spawned: false,
        server_pid: None,
        load_start: None,
        load_end: None,
        server_cpu_s: None,
        server_cpu_share: None,
        audio: Audio::default(),
        finals: 0,
        empty_finals: 0,
        word_latency: none.clone(),
        unmatched_words: 0,
        partial_latency: none.clone(),
        final_latency: none.clone(),
        final_from_last_word: none.clone(),
        server_processing_latency: none,
        rss: Memory::default(),
        responses: 0,
        stream_errors: BTreeMap::new(),
        stream_error_messages: BTreeMap::new(),
        bad_requests: BTreeMap::new(),
        bad_expected: 0,
        bad_unexpected: 0,
        server_died: false,
        server_exit: None,
        pass: false,
    }
}

fn s2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn spread(s: &Spread) -> String {
    format!("{} / {} (n={})", s2(s.p50_s), s2(s.p95_s), s.n)
}

fn mib(k: Option<u64>) -> String {
    k.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn signed_mib(k: Option<i64>) -> String {
    k.map_or_else(|| "-".to_owned(), |k| format!("{:+.1}", k as f64 / 1024.0))
}

fn load(l: Option<[f64; 3]>) -> String {
    l.map_or_else(
        || "-".to_owned(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

fn counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as a two-column markdown table.
pub fn table(r: &Report) -> String {
    let a = &r.audio;
    let mut rows: Vec<(String, String)> = vec![
        ("command".into(), format!("`{}`", r.command)),
        (
            "server".into(),
            format!(
                "{} ({}{})",
                r.server,
                if r.spawned {
                    "started by the soak"
                } else {
                    "external"
                },
                r.server_pid
                    .map_or_else(String::new, |p| format!(", pid {p}"))
            ),
        ),
        (
            "streams x minutes, wall".into(),
            format!("{} x {:.2} min, {:.1} s", r.streams, r.minutes, r.wall_s),
        ),
        ("load average start (1/5/15 min)".into(), load(r.load_start)),
        ("load average end".into(), load(r.load_end)),
        (
            "server CPU".into(),
            format!(
                "{} s ({} cores)",
                s2(r.server_cpu_s),
                s2(r.server_cpu_share)
            ),
        ),
        (
            "streams: completed / dropped mid-audio / mid-response / failed / no connection".into(),
            format!(
                "{} / {} / {} / {} / {}",
                a.completed,
                a.dropped_mid_audio,
                a.dropped_mid_response,
                a.failed,
                a.connect_failed
            ),
        ),
        (
            "audio sent / received / processed / settled (s, completed streams)".into(),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1}",
                a.sent_s, a.received_s, a.processed_s, a.settled_s
            ),
        ),
        (
            "silent tail unreported (s)".into(),
            format!("{:.2}", a.silent_tail_s),
        ),
        (
            "**lost audio (s)**".into(),
            format!(
                "**{:.3}** (over-reported {:.3})",
                a.lost_s, a.over_reported_s
            ),
        ),
        (
            "finals (non-empty / empty)".into(),
            format!("{} / {}", r.finals, r.empty_finals),
        ),
        (
            "word latency p50 / p95 (s)".into(),
            format!(
                "{}, unmatched {}",
                spread(&r.word_latency),
                r.unmatched_words
            ),
        ),
        (
            "partial latency p50 / p95 (s)".into(),
            spread(&r.partial_latency),
        ),
        (
            "finalisation latency p50 / p95 (s)".into(),
            spread(&r.final_latency),
        ),
        (
            "finalisation from last word p50 / p95 (s)".into(),
            spread(&r.final_from_last_word),
        ),
        (
            "server processing latency p50 / p95 (s)".into(),
            spread(&r.server_processing_latency),
        ),
        (
            "server RSS start / end / peak (MiB)".into(),
            format!(
                "{} / {} / {} (growth {} MiB; after the first minute, from {} MiB: {} MiB; {} samples)",
                mib(r.rss.start_kib),
                mib(r.rss.end_kib),
                mib(r.rss.peak_kib),
                signed_mib(r.rss.growth_kib),
                mib(r.rss.warm_kib),
                signed_mib(r.rss.growth_after_warm_kib),
                r.rss.samples
            ),
        ),
        ("responses".into(), r.responses.to_string()),
        ("stream errors by code".into(), counts(&r.stream_errors)),
    ];
    for (kind, tally) in &r.bad_requests {
        rows.push((
            format!("bad requests: {kind}"),
            format!("{} sent: {}", tally.sent, counts(&tally.codes)),
        ));
    }
    rows.push((
        "bad requests INVALID_ARGUMENT (expected) / other".into(),
        format!("{} / {}", r.bad_expected, r.bad_unexpected),
    ));
    rows.push((
        "crashes".into(),
        if r.server_died {
            format!(
                "1 (server died: {})",
                r.server_exit.as_deref().unwrap_or("stopped answering")
            )
        } else {
            "0".to_owned()
        },
    ));
    for (code, message) in &r.stream_error_messages {
        rows.push((format!("first {code} message"), message.replace('|', "/")));
    }
    for s in &a.lossy_streams {
        rows.push(("lossy stream".into(), s.clone()));
    }
    rows.push((
        "result".into(),
        if r.pass { "PASS" } else { "FAIL" }.to_owned(),
    ));
    let mut out = String::from("| soak | |\n|---|---|\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::accounting::{Reported, Verdict};

    fn record(outcome: Outcome, verdict: Option<Verdict>) -> StreamRecord {
        StreamRecord {
            slot: 0,
            file: "a.wav".into(),
            fate: Fate::Complete,
            length: Duration::from_secs(2),
            outcome,
            reported: Reported {
                received: 32_000,
                processed: 30_000,
                final_offset: 32_000,
            },
            verdict,
            responses: 3,
            finals: 1,
            empty_finals: 0,
            word_latencies: vec![0.5, 1.0],
            unmatched_words: 0,
            interim_latencies: vec![0.4],
            final_latencies: vec![0.9],
            final_word_latencies: vec![1.1],
            server_latencies: vec![0.3],
        }
    }

    fn base() -> Report {
        empty("soak".into(), 1, 1, 1.0, "http://127.0.0.1:1".into())
    }

    #[test]
    fn clean_records_pass_and_count() {
        let records = [
            record(Outcome::Completed, Some(Verdict::default())),
            record(Outcome::Dropped, None),
            record(
                Outcome::Failed {
                    code: Code::ResourceExhausted,
                    message: String::new(),
                },
                None,
            ),
        ];
        let bad = [
            (BadKind::Garbage, Code::InvalidArgument),
            (BadKind::MissingConfig, Code::Internal),
        ];
        let r = aggregate(base(), &records, &bad);
        assert!(r.pass);
        assert_eq!(
            (
                r.audio.completed,
                r.audio.dropped_mid_response,
                r.audio.failed
            ),
            (1, 1, 1)
        );
        assert_eq!(r.stream_errors.get("RESOURCE_EXHAUSTED"), Some(&1));
        assert_eq!((r.bad_expected, r.bad_unexpected), (1, 1));
        assert_eq!(r.finals, 1);
        assert_eq!(r.word_latency.n, 2);
        assert!((r.audio.sent_s - 2.0).abs() < 1e-9);
        assert!(table(&r).contains("PASS"));
    }

    #[test]
    fn lost_audio_or_a_dead_server_fails() {
        let lossy = [record(
            Outcome::Completed,
            Some(Verdict {
                lost: 160,
                ..Verdict::default()
            }),
        )];
        let r = aggregate(base(), &lossy, &[]);
        assert!(!r.pass);
        assert_eq!(r.audio.lossy_streams.len(), 1);
        let mut dead = base();
        dead.server_died = true;
        assert!(!aggregate(dead, &[], &[]).pass);
    }

    #[test]
    fn names_and_memory() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::Ok), "OK");
        let m = Memory::from_samples(&[100, 300, 150, 160], 1);
        assert_eq!(
            (m.start_kib, m.end_kib, m.peak_kib, m.growth_kib),
            (Some(100), Some(160), Some(300), Some(60))
        );
        assert_eq!(
            (m.warm_kib, m.growth_after_warm_kib),
            (Some(300), Some(-140))
        );
        let short = Memory::from_samples(&[100, 120], 5);
        assert_eq!((short.warm_kib, short.growth_after_warm_kib), (None, None));
    }
}
