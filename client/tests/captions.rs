//! `transcribe --server URL --captions [SOURCE]`: the CLI subscribes to a file source of a
//! real `transcribe-server` process (real tiny.en, `--source`) and prints one final per line
//! when piped; an unknown source is an error naming the server's sources.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use transcribe_core::text::{explain, wer};

/// WER threshold for the broadcast finals (BRIEF.md "Tests and fixtures").
const CAPTIONS_WER: f64 = 0.25;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The server process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `transcribe-server` (beside our binary) with tiny.en and `source`.
fn start_server(source: &str) -> Server {
    let bin = Path::new(env!("CARGO_BIN_EXE_transcribe")).with_file_name("transcribe-server");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (scripts/test does)",
        bin.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut child = Command::new(bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--model",
            "tiny.en",
            "--source",
            source,
        ])
        .current_dir(root())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Serving."));
    assert!(ready, "server exited before serving");
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn transcribe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_transcribe"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("runs")
}

#[test]
fn captions_of_a_file_source_print_one_final_per_line() {
    let started = Instant::now();
    let server = start_server("lobby=file:audio-fixtures/speech/pauses.wav");
    let reference = std::fs::read_to_string(root().join("audio-fixtures/speech/pauses.txt"))
        .expect("reference");

    let out = transcribe(&["--server", &server.url, "--captions", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lobby"), "the error names the sources: {err}");

    // Piped: one final per line until the source ends (exit 0).
    let out = transcribe(&["--server", &server.url, "--captions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\x1b'),
        "no terminal codes when piped: {text:?}"
    );
    assert!(
        text.lines().count() >= 3,
        "one final per utterance, got: {text}"
    );
    let score = wer(&reference, &text);
    assert!(
        score.rate() <= CAPTIONS_WER,
        "{}",
        explain(&reference, &text)
    );
    println!(
        "captions CLI: {} lines, WER {:.3}, {:.1} s",
        text.lines().count(),
        score.rate(),
        started.elapsed().as_secs_f64()
    );
}
