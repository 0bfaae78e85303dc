//! Authentication (`--auth-token-file`) and TLS (`--tls-cert`/`--tls-key`) end to end: a
//! real server on loopback with the scripted fake engine, called through the same client
//! helper the CLI uses (`transcribe_server::client`). Certificates are made in the test
//! with rcgen (a CA, and a server certificate for `localhost` and `127.0.0.1` it signed).

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use clap::Parser as _;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use transcribe_client::{ClientError, StreamOptions, Target, connect, stream_samples};
use transcribe_proto::v1::recognize_request::AudioSource;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, ListModelsRequest, RecognitionConfig, RecognizeRequest,
    StreamCaptionsRequest,
};
use transcribe_server::{ConfigError, ServerArgs, ServerConfig};
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, fake_loader, linear16, test_pki, two_phrases,
};

/// Tokens the test servers accept. Distinctive, so the log check cannot match by accident.
const TOKEN_A: &str = "tok-A-7f3c91d2e8b44a0c";
const TOKEN_B: &str = "tok-B-0b1e22c9d6f5a7e3";
/// A token no server accepts, one character off `TOKEN_A`, and one sharing only a prefix.
const WRONG_TOKENS: [&str; 2] = ["tok-A-7f3c91d2e8b44a0d", "tok-A-7f3c"];

/// Everything the process logs through `tracing` (every level, every crate: tonic, h2,
/// hyper and the server), so the test can look for tokens in it.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_file(dir: &Path, name: &str, content: &str) -> TestResult<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::File::create(&path)?.write_all(content.as_bytes())?;
    Ok(path)
}

/// A configuration for the fake model parsed from `flags`, as the binary would.
fn config_with(flags: &[&str]) -> Result<ServerConfig, ConfigError> {
    ServerArgs::parse_from(
        ["transcribe-server", "--model", FAKE_MODEL]
            .into_iter()
            .chain(flags.iter().copied()),
    )
    .validate()
}

/// A token file accepting [`TOKEN_A`] and [`TOKEN_B`], with a comment and blank lines.
fn token_file(dir: &Path) -> TestResult<std::path::PathBuf> {
    write_file(
        dir,
        "tokens",
        &format!("# the test's tokens\n\n{TOKEN_A}\n  {TOKEN_B}  \r\n\n"),
    )
}

/// What one RPC returned: `Ok` or the status code.
type Outcome = Result<(), Code>;

fn code_of(error: ClientError) -> Code {
    match error {
        ClientError::Status(status) => status.code(),
        other => panic!("expected a status, got {other}"),
    }
}

/// StreamingRecognize (the script's audio), Recognize (a short clip), ListModels and
/// StreamCaptions through `target`; each call's outcome, and the streamed text if any.
async fn call_everything(target: &Target) -> TestResult<(Vec<(&'static str, Outcome)>, String)> {
    let (script, audio) = two_phrases()?;
    let mut outcomes = Vec::new();
    let streamed = stream_samples(target, &audio, &StreamOptions::default(), |_| {}).await;
    let text = streamed.as_ref().map(|s| s.text()).unwrap_or_default();
    if streamed.is_ok() {
        assert_eq!(text, script.text(), "the stream's text");
    }
    outcomes.push(("StreamingRecognize", streamed.map(drop).map_err(code_of)));

    let mut client = connect(target).await?;
    let recognized = client
        .recognize(RecognizeRequest {
            config: Some(RecognitionConfig {
                audio_format: Some(AudioFormat {
                    encoding: AudioEncoding::Linear16.into(),
                    sample_rate_hertz: 16_000,
                    audio_channel_count: 1,
                }),
                ..Default::default()
            }),
            audio_source: Some(AudioSource::Content(linear16(&audio))),
        })
        .await;
    outcomes.push(("Recognize", recognized.map(drop).map_err(|s| s.code())));
    let listed = client.list_models(ListModelsRequest {}).await;
    if let Ok(list) = &listed {
        assert_eq!(list.get_ref().default_model, FAKE_MODEL);
    }
    outcomes.push(("ListModels", listed.map(drop).map_err(|s| s.code())));
    // No caption source is configured: a caller that gets in hears NOT_FOUND.
    let captions = client
        .stream_captions(StreamCaptionsRequest::default())
        .await;
    let captions = match captions {
        Ok(response) => response.into_inner().next().await.transpose().map(drop),
        Err(status) => Err(status),
    };
    outcomes.push(("StreamCaptions", captions.map_err(|s| s.code())));
    Ok((outcomes, text))
}

/// Server reflection's service list through `channel` with `token` (if any).
async fn reflection(target: &Target) -> Result<Vec<String>, Code> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = target.channel().await.map_err(|_| Code::Unavailable)?;
    let mut client = ServerReflectionClient::with_interceptor(channel, target.bearer());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    match responses.next().await {
        Some(Ok(response)) => match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            _ => Err(Code::Internal),
        },
        Some(Err(status)) => Err(status.code()),
        None => Err(Code::Internal),
    }
}

async fn health(target: &Target) -> TestResult<i32> {
    let mut health = HealthClient::new(target.channel().await?);
    Ok(health
        .check(HealthCheckRequest {
            service: transcribe_server::SERVICE_NAME.into(),
        })
        .await?
        .into_inner()
        .status)
}

#[tokio::test]
async fn calls_need_an_accepted_bearer_token_except_health() -> TestResult {
    let logs = captured_logs();
    let dir = tempfile::tempdir()?;
    let config = config_with(&[
        "--auth-token-file",
        token_file(dir.path())?.to_str().ok_or("path")?,
    ])?;
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(config, fake_loader(script, audio)).await?;
    let plain = Target::new(server.url.clone());

    // No token, wrong tokens (near misses), a malformed header: every call refused with
    // UNAUTHENTICATED before it reaches the service.
    let mut refused = vec![plain.clone()];
    for wrong in WRONG_TOKENS {
        refused.push(plain.clone().with_token(wrong)?);
    }
    for target in &refused {
        let (outcomes, _) = call_everything(target).await?;
        for (rpc, outcome) in outcomes {
            assert_eq!(outcome, Err(Code::Unauthenticated), "{rpc} with {target:?}");
        }
        assert_eq!(reflection(target).await, Err(Code::Unauthenticated));
    }
    let mut client = connect(&plain).await?;
    for header in ["Basic dXNlcjpwYXNz", "Bearer", TOKEN_A] {
        let mut request = tonic::Request::new(ListModelsRequest {});
        request
            .metadata_mut()
            .insert("authorization", header.parse()?);
        let status = client.list_models(request).await.err();
        assert_eq!(
            status.as_ref().map(|s| s.code()),
            Some(Code::Unauthenticated),
            "{header}"
        );
        // One generic message, never the token.
        let message = status.map(|s| s.message().to_owned()).unwrap_or_default();
        assert_eq!(message, "missing or invalid bearer token");
    }

    // Health answers without a token.
    assert_eq!(health(&plain).await?, ServingStatus::Serving as i32);

    // Either configured token gets in: the stream hears the script, NOT_FOUND for the
    // unconfigured caption source shows StreamCaptions reached the service.
    for token in [TOKEN_A, TOKEN_B] {
        let target = plain.clone().with_token(token)?;
        let (outcomes, text) = call_everything(&target).await?;
        let expected = [
            ("StreamingRecognize", Ok(())),
            ("Recognize", Ok(())),
            ("ListModels", Ok(())),
            ("StreamCaptions", Err(Code::NotFound)),
        ];
        assert_eq!(outcomes, expected, "with token {token}");
        assert!(!text.is_empty());
        let services = reflection(&target).await;
        assert!(
            services
                .as_ref()
                .is_ok_and(|s| s.iter().any(|n| n == transcribe_server::SERVICE_NAME)),
            "{services:?}"
        );
    }
    server.stop().await?;

    // The refusals were logged, but no token (accepted or wrong) ever was.
    let logs = String::from_utf8_lossy(&logs.lock().map_err(|_| "log lock")?).into_owned();
    assert!(logs.contains("Call refused."), "refusals are logged");
    for token in [TOKEN_A, TOKEN_B].iter().chain(WRONG_TOKENS.iter()) {
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(token)).take(3).collect();
        assert!(
            lines.is_empty(),
            "token {token} appears in the log: {lines:#?}"
        );
    }
    Ok(())
}

#[test]
fn bad_token_files_fail_at_start_up_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cases = [
        ("empty", "".to_owned(), "no token"),
        ("comments", "# nothing\n\n   \n".to_owned(), "no token"),
        ("spaced", format!("{TOKEN_A}\nsecret part two\n"), "line 2"),
    ];
    for (name, content, want) in cases {
        let path = write_file(dir.path(), name, &content)?;
        let error = config_with(&["--auth-token-file", path.to_str().ok_or("path")?]);
        let message = error.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--auth-token-file"), "{message}");
        assert!(message.contains(path.to_str().ok_or("path")?), "{message}");
        assert!(message.contains(want), "{name}: {message}");
        assert!(
            !message.contains("secret") && !message.contains(TOKEN_A),
            "{message}"
        );
    }
    let missing = dir.path().join("missing");
    let message = config_with(&["--auth-token-file", missing.to_str().ok_or("path")?])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains(missing.to_str().ok_or("path")?),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = test_pki()?;
    let cert = write_file(dir.path(), "server.pem", &pki.cert)?;
    let key = write_file(dir.path(), "server.key", &pki.key)?;
    let ca = write_file(dir.path(), "ca.pem", &pki.ca)?;
    let config = config_with(&[
        "--tls-cert",
        cert.to_str().ok_or("path")?,
        "--tls-key",
        key.to_str().ok_or("path")?,
        "--auth-token-file",
        token_file(dir.path())?.to_str().ok_or("path")?,
    ])?;
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(config, fake_loader(script.clone(), audio)).await?;
    let https = server.url.replacen("http://", "https://", 1);

    // Trusting the CA, with a token: everything works, by IP and by name.
    let port = https.rsplit(':').next().ok_or("port")?;
    for url in [https.clone(), format!("https://localhost:{port}")] {
        let target = Target::new(url.as_str())
            .with_ca_file(&ca)?
            .with_token(TOKEN_A)?;
        let (outcomes, text) = call_everything(&target).await?;
        assert_eq!(text, script.text(), "{url}");
        assert_eq!(
            outcomes[..3].iter().filter(|(_, o)| o.is_ok()).count(),
            3,
            "{outcomes:?}"
        );
        assert_eq!(health(&target).await?, ServingStatus::Serving as i32);
    }

    // Over TLS, a missing token is still refused.
    let no_token = Target::new(https.as_str()).with_ca_file(&ca)?;
    let mut client = connect(&no_token).await?;
    let refused = client.list_models(ListModelsRequest {}).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::Unauthenticated));

    // Not trusting the CA (public roots only): the handshake fails, nothing is called.
    let untrusted = Target::new(https.as_str()).with_token(TOKEN_A)?;
    let connected = connect(&untrusted).await;
    assert!(
        matches!(connected, Err(ClientError::Connect { .. })),
        "connected without trusting the CA: {:?}",
        connected.map(drop)
    );

    // A plaintext client cannot talk to the TLS server.
    let plaintext = Target::new(server.url.as_str()).with_token(TOKEN_A)?;
    let outcome = match connect(&plaintext).await {
        Ok(mut client) => client
            .list_models(ListModelsRequest {})
            .await
            .map(drop)
            .map_err(|s| s.code()),
        Err(_) => Err(Code::Unavailable),
    };
    assert!(outcome.is_err(), "a plaintext call succeeded");

    // The server is unharmed by the failed handshakes.
    let target = Target::new(https.as_str())
        .with_ca_file(&ca)?
        .with_token(TOKEN_B)?;
    let summary = stream_samples(
        &target,
        &two_phrases()?.1,
        &StreamOptions::default(),
        |_| {},
    )
    .await?;
    assert_eq!(summary.text(), script.text());

    server.stop().await
}

#[test]
fn bad_tls_files_fail_at_start_up_naming_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = test_pki()?;
    let other = test_pki()?;
    let cert = write_file(dir.path(), "server.pem", &pki.cert)?;
    let key = write_file(dir.path(), "server.key", &pki.key)?;
    let other_key = write_file(dir.path(), "other.key", &other.key)?;
    let junk = write_file(dir.path(), "junk.pem", "not a certificate\n")?;
    let missing = dir.path().join("missing.pem");
    let path = |p: &Path| p.to_str().map(str::to_owned).ok_or("path");
    let (cert, key, other_key, junk, missing) = (
        path(&cert)?,
        path(&key)?,
        path(&other_key)?,
        path(&junk)?,
        path(&missing)?,
    );
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--tls-cert", &cert], "--tls-key", "go together"),
        (vec!["--tls-key", &key], "--tls-cert", "go together"),
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "--tls-cert",
            &missing,
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &missing],
            "--tls-key",
            &missing,
        ),
        (
            vec!["--tls-cert", &junk, "--tls-key", &key],
            "--tls-cert",
            &junk,
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &junk],
            "--tls-key",
            &junk,
        ),
        // The certificate as its own key, the key as the certificate.
        (
            vec!["--tls-cert", &key, "--tls-key", &cert],
            "--tls-",
            "server",
        ),
    ];
    for (flags, flag, want) in cases {
        let message = config_with(&flags)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "validated".into());
        assert!(message.contains(flag), "{flags:?}: {message}");
        assert!(message.contains(want), "{flags:?}: {message}");
    }
    // A key that does not belong to the certificate.
    let message = config_with(&["--tls-cert", &cert, "--tls-key", &other_key])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "validated".into());
    assert!(
        message.contains(&cert) && message.contains(&other_key),
        "{message}"
    );
    assert!(
        config_with(&["--tls-cert", &cert, "--tls-key", &key])?
            .tls
            .is_some()
    );
    Ok(())
}
