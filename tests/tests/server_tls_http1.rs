//! HTTP/1.1 under TLS (the listener's ALPN offers h2 and http/1.1): REST and a WebSocket
//! stream over `https://` and `wss://`, with the fake engine and certificates made by rcgen.
//! (gRPC under TLS, tokens and bad certificates: server_security.rs. This one is apart
//! because its WebSocket client logs the URL with its token, which server_security's
//! log check would flag.)

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;
use transcribe_server::{ServerArgs, ServerConfig};
use transcribe_tests::{TestResult, TestServer, fake_loader, linear16, test_pki, two_phrases};

const TOKEN: &str = "tok-tls-http1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_websocket_work_under_tls() -> TestResult {
    use clap::Parser as _;
    let dir = tempfile::tempdir()?;
    let pki = test_pki()?;
    let write = |name: &str, text: &str| -> TestResult<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_str().ok_or("path")?.to_owned())
    };
    let (cert, key, tokens) = (
        write("server.pem", &pki.cert)?,
        write("server.key", &pki.key)?,
        write("tokens", &format!("{TOKEN}\n"))?,
    );
    let args = ServerArgs::try_parse_from([
        "transcribe-server",
        "--model",
        transcribe_tests::FAKE_MODEL,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--auth-token-file",
        &tokens,
    ])?;
    let config: ServerConfig = args.validate()?;
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(config, fake_loader(script.clone(), audio)).await?;
    let port = server.url.rsplit(':').next().ok_or("port")?.to_owned();

    // HTTP/1.1 under TLS too (ALPN offers h2 and http/1.1): REST and a WebSocket stream.
    let connector = tls_connector(&pki.ca, &[b"http/1.1"])?;
    let address = server.url.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let mut tls = connector.connect("localhost".try_into()?, tcp).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let tcp = tokio::net::TcpStream::connect(&address).await?;
    let tls = connector.connect("localhost".try_into()?, tcp).await?;
    let url = format!("wss://localhost:{port}/v1/stream?token={TOKEN}");
    let (mut socket, _) = tokio_tungstenite::client_async(url, tls).await?;
    let config = r#"{"config": {"audioFormat": {"encoding": "AUDIO_ENCODING_LINEAR16",
        "sampleRateHertz": 16000}}}"#;
    socket.send(Message::text(config)).await?;
    for chunk in two_phrases()?.1.chunks(3_200) {
        socket.send(Message::binary(linear16(chunk))).await?;
    }
    socket.send(Message::text(r#"{"type": "end"}"#)).await?;
    let mut finals = Vec::new();
    while let Some(message) = socket.next().await {
        match message? {
            Message::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text)?;
                for result in value["results"].as_array().into_iter().flatten() {
                    if result["isFinal"] == true {
                        let transcript = &result["alternatives"][0]["transcript"];
                        finals.push(transcript.as_str().unwrap_or_default().trim().to_owned());
                    }
                }
            }
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(finals.join(" "), script.text());
    server.stop().await
}

/// A rustls client trusting `ca_pem` only, offering `alpn`.
fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> TestResult<tokio_rustls::TlsConnector> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
