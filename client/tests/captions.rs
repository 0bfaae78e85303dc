//! `transcribe --server URL --captions [SOURCE]`: the CLI subscribes to a file source of a
//! real `transcribe-server` process (real tiny.en, `--source`) and prints one final per line
//! when piped; an unknown source is an error naming the server's sources. And the server's
//! `--source mic:DEVICE` path: a virtual microphone (a private PulseAudio daemon's null-sink
//! monitor through the ALSA pulse plugin, as in `tests/mic.rs`) plays a fixture; two
//! `--captions` subscribers print identical finals within the WER threshold. The mic test
//! skips with a note when pulseaudio, paplay or the ALSA pulse plugin is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    start_server_with(source, &[], "Serving.")
}

/// Like [`start_server`], with extra environment, returning once a log line contains
/// `ready_line`.
fn start_server_with(source: &str, env: &[(&str, String)], ready_line: &str) -> Server {
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
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(ready_line));
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

/// The virtual capture device's ALSA name.
const MIC: &str = "fixture_mic";

/// A private PulseAudio daemon with a null sink, and an ALSA config naming its monitor.
struct VirtualMic {
    dir: tempfile::TempDir,
    daemon: Child,
    alsa_config_path: String,
}

impl VirtualMic {
    /// Starts one, or says why it cannot (the test then skips).
    fn start() -> Result<Self, String> {
        let have = |cmd: &str| {
            Command::new(cmd)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have("pulseaudio") || !have("paplay") {
            return Err("pulseaudio/paplay not installed (scripts/setup installs them)".into());
        }
        let system_conf = ["/usr/share/alsa/alsa.conf", "/etc/alsa/alsa.conf"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("no ALSA config")?;
        let plugin = std::fs::read_dir("/usr/lib")
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path().join("alsa-lib/libasound_module_pcm_pulse.so"))
            .chain([PathBuf::from(
                "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
            )])
            .any(|p| p.exists());
        if !plugin {
            return Err("the ALSA pulse plugin (libasound2-plugins) is not installed".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
        let socket = dir.path().join("native");
        let daemon = Command::new("pulseaudio")
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disable-shm=yes",
            ])
            .arg("-L")
            .arg(format!(
                "module-native-protocol-unix auth-anonymous=1 socket={}",
                socket.display()
            ))
            .args([
                "-L",
                "module-null-sink sink_name=fixture rate=48000 channels=2",
            ])
            .env("HOME", dir.path())
            .env("PULSE_RUNTIME_PATH", &runtime)
            .env("PULSE_STATE_PATH", dir.path().join("state"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start pulseaudio: {e}"))?;
        let conf = dir.path().join("asound.conf");
        std::fs::write(
            &conf,
            format!("pcm.{MIC} {{\n  type pulse\n  device \"fixture.monitor\"\n}}\n"),
        )
        .map_err(|e| e.to_string())?;
        let mic = Self {
            alsa_config_path: format!("{}:{}", system_conf.display(), conf.display()),
            dir,
            daemon,
        };
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err("pulseaudio did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(mic)
    }

    fn pulse_server(&self) -> String {
        format!("unix:{}", self.dir.path().join("native").display())
    }

    /// Environment a process needs to see the virtual microphone.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ALSA_CONFIG_PATH", self.alsa_config_path.clone()),
            ("PULSE_SERVER", self.pulse_server()),
        ]
    }

    /// Plays `wav` into the sink in real time; returns when it has been played.
    fn play(&self, wav: &Path) {
        let status = Command::new("paplay")
            .arg("-d")
            .arg("fixture")
            .arg(wav)
            .env("PULSE_SERVER", self.pulse_server())
            .env("HOME", self.dir.path())
            .status()
            .expect("paplay runs");
        assert!(status.success(), "paplay failed: {status}");
    }
}

impl Drop for VirtualMic {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A `transcribe --captions` process whose stdout lines are collected as they come.
struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Subscriber {
    fn spawn(url: &str, source: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_transcribe"))
            .args(["--server", url, "--captions", source])
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the transcribe binary runs");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Self { child, lines }
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
