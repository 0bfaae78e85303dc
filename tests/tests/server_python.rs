//! A non-Rust client against the real server: the Python example
//! (`client/examples/python/stream_file.py`, grpcio with stubs generated from our proto at run
//! time) streams `audio-fixtures/speech/park.wav` to an in-process server with the real
//! tiny.en, and its printed finals match the reference.
//!
//! The virtual environment lives under `target/python-client-venv` and is reused while
//! `requirements.txt` is unchanged. Skips (with a note) when tiny.en cannot be resolved or
//! when pip cannot install the requirements (no registry or wheels reachable).

use std::path::{Path, PathBuf};
use std::process::Command;

use transcribe_core::text::{explain, wer};
use transcribe_server::ServerConfig;
use transcribe_tests::{TestResult, TestServer, read_fixture, whisper_loader, workspace_root};

/// Word error rate the Python client's finals must stay within (as the Rust client's).
const WER_THRESHOLD: f64 = 0.25;

/// The fixture streamed.
const FIXTURE: &str = "speech/park.wav";

/// Where the example lives, relative to the workspace root.
const EXAMPLE_DIR: &str = "client/examples/python";

/// Creates (or reuses) the virtual environment and installs the example's requirements.
/// Returns its Python, or `None` (with a note) when pip cannot install them.
fn python_env() -> TestResult<Option<PathBuf>> {
    let root = workspace_root();
    let venv = root.join("target").join("python-client-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join(EXAMPLE_DIR).join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)?;
    // The requirements as last installed: skip pip when they have not changed.
    let stamp = venv.join("requirements.installed");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(Some(python));
    }
    if !python.exists() {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()?;
        if !created.status.success() {
            eprintln!(
                "note: skipping: python3 -m venv failed (no pip to install with):\n{}",
                String::from_utf8_lossy(&created.stderr)
            );
            return Ok(None);
        }
    }
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements)
        .output()?;
    if !installed.status.success() {
        eprintln!(
            "note: skipping: pip cannot install {}:\n{}",
            requirements.display(),
            String::from_utf8_lossy(&installed.stderr)
        );
        return Ok(None);
    }
    std::fs::write(&stamp, wanted)?;
    Ok(Some(python))
}

/// The `final` lines' texts (`final<TAB>INDEX<TAB>START<TAB>END<TAB>TEXT`), joined.
fn final_text(stdout: &str) -> String {
    let finals: Vec<&str> = stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(5, '\t');
            (fields.next() == Some("final"))
                .then(|| fields.nth(3))
                .flatten()
        })
        .collect();
    finals.join(" ")
}

/// Runs the example on `file` against `server` (`HOST:PORT`); returns its stdout.
fn run_example(python: &Path, server: &str, file: &Path) -> TestResult<String> {
    let script = workspace_root().join(EXAMPLE_DIR).join("stream_file.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--server", server])
        .arg(file)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{} exited with {}:\nstdout:\n{stdout}\nstderr:\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_streams_a_file_and_prints_finals() -> TestResult {
    let config = ServerConfig::with_models(&["tiny.en"])?;
    let Some(loader) = whisper_loader(&config) else {
        return Ok(());
    };
    let Some(python) = tokio::task::spawn_blocking(python_env).await?? else {
        return Ok(());
    };
    let server = TestServer::start_ready(config, loader).await?;
    let address = server
        .url
        .strip_prefix("http://")
        .unwrap_or(&server.url)
        .to_owned();
    let file = transcribe_tests::fixture(FIXTURE);
    let stdout =
        tokio::task::spawn_blocking(move || run_example(&python, &address, &file)).await??;
    println!("{stdout}");
    let (_, reference) = read_fixture(FIXTURE)?;
    let text = final_text(&stdout);
    assert!(!text.is_empty(), "no final line in the output:\n{stdout}");
    assert!(
        wer(&reference, &text).rate() <= WER_THRESHOLD,
        "{}",
        explain(&reference, &text)
    );
    server.stop().await
}

#[test]
fn final_lines_are_parsed() {
    let out = "interim\t0\tThe weather\tis\nfinal\t0\t0.00\t3.10\tThe weather was warm.\n\
               interim\t1\t\tWe\nfinal\t1\t3.10\t6.14\tWe walked.\n";
    assert_eq!(final_text(out), "The weather was warm. We walked.");
}
