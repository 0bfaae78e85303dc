//! The HTTP door on the gRPC port with the fake engine, through plain HTTP/1.1 on a socket:
//! `/readyz` answers 503 while the models load and while the server drains, 200 otherwise;
//! `/healthz` answers throughout; gRPC still works on the same port; REST errors come back
//! in OpenAI's shape. (The real model and the official `openai` package:
//! tests/rest/test_openai.py.)

use std::time::Duration;

use transcribe_server::ServerConfig;
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, draining_with_a_held_call, fake_loader, gated_loader,
    http_get, http_request, two_phrases, wav_bytes,
};

/// A multipart transcription request with `fields` and a `file` of `bytes`.
fn multipart(fields: &[(&str, &str)], bytes: &[u8], token: Option<&str>) -> Vec<u8> {
    let boundary = "xXtranscribeXx";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut request = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

async fn post(server: &TestServer, request: Vec<u8>) -> TestResult<(u16, serde_json::Value)> {
    let (status, body) = http_request(server, &request).await?;
    Ok((
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    ))
}

#[tokio::test]
async fn readyz_is_503_while_loading_and_draining() -> TestResult {
    let (script, audio) = two_phrases()?;
    let (gate, wait) = std::sync::mpsc::channel();
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.drain_timeout = Duration::from_secs(60);
    let server = TestServer::start(config, gated_loader(script, audio, wait)).await?;
    assert_eq!(http_get(&server, "/readyz").await?.0, 503, "while loading");
    assert_eq!(http_get(&server, "/healthz").await?.0, 200);
    gate.send(())?;
    server
        .wait_until(Duration::from_secs(10), |h| h.is_serving())
        .await?;
    assert_eq!(
        http_get(&server, "/readyz").await?,
        (200, "ready\n".to_owned())
    );
    server.stop().await?;

    // Draining: a held decode keeps the server draining while /readyz is asked.
    let (server, hold, in_flight) = draining_with_a_held_call().await?;
    let (status, body) = http_get(&server, "/readyz").await?;
    assert_eq!(status, 503, "while draining: {body}");
    assert!(body.contains("draining"), "{body}");
    hold.release();
    in_flight.await??;
    server.stop().await
}

#[tokio::test]
async fn rest_transcribes_and_errors_in_openai_shape() -> TestResult {
    let (script, audio) = two_phrases()?;
    let text = script.text();
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.auth = Some(transcribe_server::auth::TokenSet::from_text("good-token")?);
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let wav = wav_bytes(&audio, 16_000);
    let token = Some("good-token");
    let (status, body) = post(&server, multipart(&[("model", "whisper-1")], &wav, token)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], text);
    let (status, body) = post(&server, multipart(&[], &wav, Some("bad"))).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, body) = post(&server, multipart(&[("model", "nope")], &wav, token)).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, body) = post(&server, multipart(&[], b"RIFF garbage", token)).await?;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("file")),
        "{body}"
    );
    let (status, body) = post(
        &server,
        multipart(&[("response_format", "xml")], &wav, token),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("response_format"))
    );
    assert_eq!(
        http_get(&server, "/healthz").await?.0,
        200,
        "health needs no token"
    );
    server.stop().await
}
