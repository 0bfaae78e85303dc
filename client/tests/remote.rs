//! `transcribe --server URL FILE`: the CLI streams files to a real `transcribe-server`
//! process (real tiny.en) on loopback.

use std::process::Command;

use transcribe_core::text::{explain, wer};

mod support;
use support::{Server, root};

/// WER threshold for the fixtures through the server (same as offline).
const FIXTURE_WER: f64 = 0.20;

fn start_server() -> Server {
    support::start_server(&[], &[], "Serving.")
}

fn transcribe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_transcribe"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

#[test]
fn files_stream_through_the_server_in_every_format() {
    let server = start_server();
    let reference = std::fs::read_to_string(root().join("audio-fixtures/speech/pauses.txt"))
        .expect("reference");
    let out = transcribe(&["--server", &server.url, "audio-fixtures/speech/pauses.wav"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().count() >= 3,
        "one final per utterance, got: {text}"
    );
    assert!(
        wer(&reference, &text).rate() <= FIXTURE_WER,
        "{}",
        explain(&reference, &text)
    );

    let out = transcribe(&[
        "--server",
        &server.url,
        "--format",
        "json",
        "audio-fixtures/speech/park.wav",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let reference =
        std::fs::read_to_string(root().join("audio-fixtures/speech/park.txt")).expect("reference");
    let text = v["text"].as_str().unwrap_or_default();
    assert!(
        wer(&reference, text).rate() <= FIXTURE_WER,
        "{}",
        explain(&reference, text)
    );
    assert!(
        v["segments"][0]["words"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "word timings: {v}"
    );

    let out = transcribe(&[
        "--server",
        &server.url,
        "--format",
        "srt",
        "audio-fixtures/speech/short.wav",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1\n00:00:0"));

    let out = transcribe(&[
        "--server",
        &server.url,
        "--model",
        "huge-v9",
        "audio-fixtures/speech/short.wav",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound") && err.contains("tiny.en"), "{err}");
}

#[test]
fn unreachable_server_is_a_clear_runtime_error() {
    let out = transcribe(&[
        "--server",
        "http://127.0.0.1:9",
        "audio-fixtures/speech/short.wav",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9"));
}
