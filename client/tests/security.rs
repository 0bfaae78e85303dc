//! `transcribe --server https://... --ca-file CA --auth-token-file FILE`: the CLI against a
//! real `transcribe-server` process (real tiny.en) serving TLS with a certificate from a
//! test CA (made here with rcgen) and requiring a bearer token.

use std::path::Path;
use std::process::Command;

use transcribe_core::text::{explain, wer};

mod support;
use support::root;

/// WER threshold for the fixture through the server (as in remote.rs).
const FIXTURE_WER: f64 = 0.20;

/// The token the server accepts (the second of its file).
const TOKEN: &str = "cli-test-9d41c6b07e2f";

/// A CA, and a server certificate for `localhost` and `127.0.0.1` signed by it, in PEM:
/// (CA certificate, server certificate, server key).
fn test_pki() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "transcribe CLI test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let cert = server.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("writes");
    path.to_str().expect("UTF-8 path").to_owned()
}

fn transcribe(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_transcribe"))
        .args(args)
        .current_dir(root())
        .env_remove("TRANSCRIBE_AUTH_TOKEN")
        .env_remove("TRANSCRIBE_AUTH_TOKEN_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

#[test]
fn files_stream_over_tls_with_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, cert_pem, key_pem) = test_pki().expect("test certificates");
    let ca = write(dir.path(), "ca.pem", &ca_pem);
    let cert = write(dir.path(), "server.pem", &cert_pem);
    let key = write(dir.path(), "server.key", &key_pem);
    let tokens = write(
        dir.path(),
        "server-tokens",
        &format!("# ops\nsomeone-else-1\n{TOKEN}\n"),
    );
    let client_token = write(dir.path(), "client-token", &format!("{TOKEN}\n"));
    let server = support::start_server(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth-token-file",
            &tokens,
        ],
        &[],
        "Serving.",
    );
    let url = server.url.replacen("http://", "https://", 1);
    let fixture = "audio-fixtures/speech/pauses.wav";
    let reference = std::fs::read_to_string(root().join("audio-fixtures/speech/pauses.txt"))
        .expect("reference");

    let out = transcribe(
        &[
            "--server",
            &url,
            "--ca-file",
            &ca,
            "--auth-token-file",
            &client_token,
            fixture,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        wer(&reference, &text).rate() <= FIXTURE_WER,
        "{}",
        explain(&reference, &text)
    );

    // The token from the environment instead of a file works the same.
    let out = transcribe(
        &[
            "--server",
            &url,
            "--ca-file",
            &ca,
            "--format",
            "json",
            fixture,
        ],
        &[("TRANSCRIBE_AUTH_TOKEN", TOKEN)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let text = v["text"].as_str().unwrap_or_default();
    assert!(
        wer(&reference, text).rate() <= FIXTURE_WER,
        "{}",
        explain(&reference, text)
    );

    // No token: refused, exit 2, the status says why.
    let out = transcribe(&["--server", &url, "--ca-file", &ca, fixture], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(out.stdout.is_empty());

    // A wrong token: refused, and not echoed.
    let wrong = write(dir.path(), "wrong-token", "not-the-token-5e8a\n");
    let out = transcribe(
        &[
            "--server",
            &url,
            "--ca-file",
            &ca,
            "--auth-token-file",
            &wrong,
            fixture,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    assert!(!stderr.contains("not-the-token"), "{stderr}");

    // Without the CA the server's certificate is not trusted: exit 2 naming the URL.
    let out = transcribe(
        &[
            "--server",
            &url,
            "--auth-token-file",
            &client_token,
            fixture,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");

    // A CA file that is not there: exit 2 naming it.
    let missing = dir.path().join("missing-ca.pem");
    let missing = missing.to_str().expect("UTF-8 path");
    let out = transcribe(
        &[
            "--server",
            &url,
            "--ca-file",
            missing,
            "--auth-token-file",
            &client_token,
            fixture,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");
}
