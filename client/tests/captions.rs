//! `transcribe --server URL --captions [SOURCE]`: the CLI subscribes to a file source of a
//! real `transcribe-server` process (real tiny.en, `--source`) and prints one final per line
//! when piped; an unknown source is an error naming the server's sources. And the server's
//! `--source mic:DEVICE` path: a virtual microphone (a private PulseAudio daemon's null-sink
//! monitor through the ALSA pulse plugin, as in `tests/mic.rs`) plays a fixture; two
//! `--captions` subscribers print identical finals within the WER threshold. The mic test
//! skips with a note when pulseaudio, paplay or the ALSA pulse plugin is missing.

use std::io::{BufRead, BufReader};

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use transcribe_core::text::{explain, wer};

mod support;
use support::{MIC, Server, VirtualMic, root, start_server_at};

/// WER threshold for the broadcast finals (docs/DESIGN.md "Tests and fixtures").
const CAPTIONS_WER: f64 = 0.25;

/// Starts `transcribe-server` (beside our binary) with tiny.en and `source`.
fn start_server(source: &str) -> Server {
    start_server_with(source, &[], "Serving.")
}

/// Like [`start_server`], with extra environment, returning once a log line contains
/// `ready_line`.
fn start_server_with(source: &str, env: &[(&str, String)], ready_line: &str) -> Server {
    support::start_server(&["--source", source], env, ready_line)
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

#[test]
fn captions_resubscribe_when_the_server_comes_back() {
    let source = "lobby=file:audio-fixtures/speech/pauses.wav";
    let first = start_server(source);
    let listen = first.url.trim_start_matches("http://").to_owned();
    let reference = std::fs::read_to_string(root().join("audio-fixtures/speech/pauses.txt"))
        .expect("reference");
    let mut subscriber = Subscriber::spawn(&first.url, "lobby");
    // The first final, then the server dies (SIGKILL) and comes back on the same address
    // with the source starting over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while subscriber.lines().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no caption from the first server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = subscriber.lines().len();
    drop(first);
    let _second = start_server_at(&listen, &["--source", source], &[], "Serving.");
    let (status, err) = subscriber.wait();
    assert!(status.success(), "{err}");
    assert!(err.contains("resubscribing"), "{err}");
    // After the restart, the restarted source's captions, whole.
    let after = subscriber.lines()[before..].join(" ");
    let score = wer(&reference, &after);
    assert!(
        score.rate() <= CAPTIONS_WER,
        "{}",
        explain(&reference, &after)
    );
}

/// A `transcribe --captions` process whose stdout lines are collected as they come.
struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The thread collecting `lines`.
    stdout: Option<std::thread::JoinHandle<()>>,
    /// Its stderr (notes, resubscriptions), read to the end by this thread.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Subscriber {
    fn spawn(url: &str, source: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_transcribe"))
            .args(["--server", url, "--captions", source])
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the transcribe binary runs");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        });
        Self {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Waits for it to exit (and its output to be read): its status and stderr.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("the subscriber ends");
        if let Some(stdout) = self.stdout.take() {
            let _ = stdout.join();
        }
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (status, err)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn server_mic_source_gives_two_subscribers_identical_finals() {
    let mic = match VirtualMic::start() {
        Ok(mic) => mic,
        Err(why) => {
            eprintln!("skipping: no virtual microphone: {why}");
            return;
        }
    };
    let started = Instant::now();
    let server = start_server_with(&format!("room=mic:{MIC}"), &mic.env(), "Source opened.");
    let subscribers = [
        Subscriber::spawn(&server.url, "room"),
        Subscriber::spawn(&server.url, "room"),
    ];
    // Let both subscribe before the speech starts (the fixture opens with 0.5 s of silence,
    // and each subscriber also asks for the recent finals).
    std::thread::sleep(Duration::from_millis(500));
    let fixture = root().join("audio-fixtures/speech/pauses.wav");
    let reference = std::fs::read_to_string(fixture.with_extension("txt")).expect("reference");
    mic.play(&fixture);
    // The last utterance ends in the sink's silence; wait for its final.
    let deadline = Instant::now() + Duration::from_secs(60);
    let words = reference.split_whitespace().count();
    loop {
        let done = subscribers.iter().all(|s| {
            let heard: usize = s.lines().iter().map(|l| l.split_whitespace().count()).sum();
            s.lines().len() >= 3 && heard + 2 >= words
        });
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Give a trailing final a moment, then compare.
    std::thread::sleep(Duration::from_millis(500));
    let a = subscribers[0].lines();
    let b = subscribers[1].lines();
    assert_eq!(a, b, "the two subscribers differ");
    let text = a.join(" ");
    let score = wer(&reference, &text);
    assert!(
        score.rate() <= CAPTIONS_WER,
        "{}",
        explain(&reference, &text)
    );
    println!(
        "server mic source, 2 subscribers: {} finals, WER {:.3}, {:.1} s: {text}",
        a.len(),
        score.rate(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
}

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn on_a_terminal_the_partial_is_rewritten_in_place_and_finals_scroll() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipping: tmux is not installed (scripts/setup installs it)");
        return;
    }
    let server = start_server("lobby=file:audio-fixtures/speech/pauses.wav");
    let reference = std::fs::read_to_string(root().join("audio-fixtures/speech/pauses.txt"))
        .expect("reference");
    let tmux = Tmux {
        socket: format!("transcribe-captions-{}", std::process::id()),
    };
    let command = format!(
        "{} --server {} --captions lobby; echo EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_transcribe"),
        server.url
    );
    tmux.run(&["new-session", "-d", "-x", "200", "-y", "40", &command])
        .expect("tmux starts a session");
    let mut snapshots = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pane = tmux.run(&["capture-pane", "-p"]).unwrap_or_default();
        let done = pane.contains("EXIT=");
        snapshots.push(pane);
        if done || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = snapshots.last().cloned().unwrap_or_default();
    let content = |pane: &str| -> Vec<String> {
        pane.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with("captions from") && !l.starts_with("EXIT="))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        last.contains("EXIT=0"),
        "the CLI did not end with 0:\n{last}"
    );
    let finals = content(&last);
    assert!(finals.len() >= 3, "one line per final:\n{last}");
    let text = finals.join(" ");
    assert!(
        wer(&reference, &text).rate() <= CAPTIONS_WER,
        "{}",
        explain(&reference, &text)
    );
    // At any moment the screen holds the finals so far and at most one partial line.
    let mut partial_seen = false;
    for pane in &snapshots {
        let lines = content(pane);
        let partials = lines.iter().filter(|l| !finals.contains(l)).count();
        assert!(
            partials <= 1,
            "partials scrolled instead of being rewritten:\n{pane}"
        );
        partial_seen |= partials == 1;
    }
    assert!(
        partial_seen,
        "no partial was ever shown ({} snapshots)",
        snapshots.len()
    );
    println!(
        "tmux: {} snapshots, {} finals, partials rewritten in place",
        snapshots.len(),
        finals.len()
    );
}
