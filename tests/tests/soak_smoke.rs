//! Smoke test of the soak tool (`transcribe-soak`): about 20 s against a real server with
//! the real `tiny.en` (started in this process on loopback; skipped with a note when the
//! model is not available), with disconnects and bad requests on. Asserts the tool's own
//! verdicts from its JSON report: no lost audio on completed streams, the server alive,
//! every bad request refused with INVALID_ARGUMENT. Never asserts timings.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use transcribe_server::ServerConfig;
use transcribe_tests::{TestResult, TestServer, fixture, whisper_loader};

fn report_path() -> PathBuf {
    std::env::temp_dir().join(format!("transcribe-soak-smoke-{}.json", std::process::id()))
}

fn number(report: &Value, pointer: &str) -> TestResult<f64> {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{pointer} missing from the report").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_no_audio_and_refuses_bad_requests() -> TestResult {
    let config = ServerConfig::with_models(&["tiny.en"])?;
    let Some(loader) = whisper_loader(&config) else {
        return Ok(());
    };
    let server = TestServer::start_ready(config, loader).await?;
    let json = report_path();
    let audio = ["speech/short.wav", "speech/window.wav", "speech/park.wav"]
        .map(|f| fixture(f).display().to_string())
        .join(",");
    let mut command = Command::new(env!("CARGO_BIN_EXE_transcribe-soak"));
    command.args([
        "--server",
        &server.url,
        "--server-pid",
        &std::process::id().to_string(),
        "--streams",
        "1",
        "--minutes",
        "0.34",
        "--audio",
        &audio,
        "--disconnect-rate",
        "0.3",
        "--bad-per-minute",
        "30",
        "--seed",
        "7",
        "--json",
        &json.display().to_string(),
    ]);
    // The server runs on this process's runtime: wait for the tool off it.
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "the soak failed: {}",
        output.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);

    assert_eq!(number(&report, "/audio/lost_s")?, 0.0);
    assert_eq!(number(&report, "/audio/over_reported_s")?, 0.0);
    assert_eq!(report.pointer("/server_died"), Some(&Value::Bool(false)));
    assert_eq!(report.pointer("/pass"), Some(&Value::Bool(true)));
    assert!(
        number(&report, "/audio/completed")? >= 1.0,
        "no stream completed"
    );
    assert!(number(&report, "/audio/sent_s")? > 0.0);
    assert!(number(&report, "/finals")? >= 1.0, "no finals");
    // Every bad request got INVALID_ARGUMENT, and there were some.
    assert!(
        number(&report, "/bad_expected")? >= 1.0,
        "no bad requests were sent"
    );
    assert_eq!(number(&report, "/bad_unexpected")?, 0.0);
    let kinds = report
        .pointer("/bad_requests")
        .and_then(Value::as_object)
        .ok_or("bad_requests missing")?;
    for (kind, tally) in kinds {
        let codes = tally
            .get("codes")
            .and_then(Value::as_object)
            .ok_or("codes missing")?;
        assert!(
            codes.keys().all(|c| c == "INVALID_ARGUMENT"),
            "{kind}: {codes:?}"
        );
    }
    // The table went to stdout.
    assert!(stdout.contains("lost audio"), "{stdout}");
    server.stop().await?;
    Ok(())
}

#[test]
fn non_loopback_targets_are_refused() -> TestResult {
    let output = Command::new(env!("CARGO_BIN_EXE_transcribe-soak"))
        .args(["--server", "http://192.0.2.1:50051", "--minutes", "0.1"])
        .output()?;
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
    Ok(())
}
