//! The WebSocket door (docs/WEBSOCKET.md) with the fake engine, from a non-browser client
//! (tokio-tungstenite): a stream gives the same finals as the same audio over gRPC; bad
//! config, audio before the config, odd byte counts, an unknown control message, a wrong
//! token and an oversized message each close with their documented code and a JSON error;
//! a client that vanishes frees its place and the server keeps serving; a caption source can
//! be watched; the page and `/v1/info` are served. (The page in a real browser:
//! tests/web/test_captions_page.py.)

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use transcribe_server::ServerConfig;
use transcribe_server::auth::TokenSet;
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, audio_requests, config_request, fake_loader, final_text,
    http_get, linear16, raw_stream, temp_wav, two_phrases, with_source,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer, path: &str) -> TestResult<Socket> {
    let url = format!("{}{path}", server.url.replace("http://", "ws://"));
    let (socket, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(socket)
}

/// The config message for 16 kHz mono LINEAR16 with interim results and words.
fn config_json() -> String {
    serde_json::json!({
        "config": {
            "audioFormat": {"encoding": "AUDIO_ENCODING_LINEAR16", "sampleRateHertz": 16000,
                            "audioChannelCount": 1},
            "enableWordTimeOffsets": true,
        },
        "interimResults": true,
    })
    .to_string()
}

/// What the server sent until it closed: the JSON messages and the close code and reason.
struct Ending {
    messages: Vec<Value>,
    close: Option<(u16, String)>,
}

impl Ending {
    fn finals(&self) -> String {
        let mut text = String::new();
        for message in &self.messages {
            for result in message["results"].as_array().into_iter().flatten() {
                if result["isFinal"] == true {
                    text.push_str(
                        result["alternatives"][0]["transcript"]
                            .as_str()
                            .unwrap_or(""),
                    );
                }
            }
        }
        text.trim().to_owned()
    }

    fn error(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("error").is_some())
            .map_or(&Value::Null, |m| &m["error"])
    }
}

async fn read_until_closed(socket: &mut Socket) -> TestResult<Ending> {
    let mut ending = Ending {
        messages: Vec::new(),
        close: None,
    };
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), socket.next()).await?;
        match next {
            Some(Ok(Message::Text(text))) => ending.messages.push(serde_json::from_str(&text)?),
            Some(Ok(Message::Close(frame))) => {
                ending.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return Ok(ending);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Ok(ending),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stream_gives_the_finals_grpc_gives() -> TestResult {
    let (script, audio) = two_phrases()?;
    let config = ServerConfig::with_models(&[FAKE_MODEL])?;
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;

    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, 1_600));
    let (responses, status) = raw_stream(&mut server.client().await?, requests).await;
    assert!(status.is_ok(), "{status:?}");
    let grpc = final_text(&responses);

    let mut socket = connect(&server, "/v1/stream").await?;
    socket.send(Message::text(config_json())).await?;
    // A little pacing, so a partial is decoded and sent before the audio ends: sent all at
    // once, the utterance could close first and its partial be withdrawn (8 in 30 runs
    // failed on a loaded machine).
    for chunk in audio.chunks(1_600) {
        socket.send(Message::binary(linear16(chunk))).await?;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    socket.send(Message::text(r#"{"type": "end"}"#)).await?;
    let ending = read_until_closed(&mut socket).await?;
    assert_eq!(ending.close, Some((1000, String::new())));
    assert_eq!(ending.finals(), grpc);
    assert_eq!(grpc, "hello there general kenobi you are a bold one");
    // proto3 JSON: camelCase names, durations as strings, the request id first.
    assert!(
        ending.messages[0]["requestId"].is_string(),
        "{}",
        ending.messages[0]
    );
    let finals: Vec<&Value> = ending
        .messages
        .iter()
        .flat_map(|m| m["results"].as_array().into_iter().flatten())
        .filter(|r| r["isFinal"] == true)
        .collect();
    assert_eq!(finals.len(), 2);
    let word = &finals[0]["alternatives"][0]["words"][0];
    assert_eq!(word["word"], "hello");
    assert!(
        word["startOffset"]
            .as_str()
            .is_some_and(|s| s.ends_with('s')),
        "{word}"
    );
    assert!(ending.messages.iter().any(|m| {
        m["results"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r.get("isFinal").is_none()))
    }));
    server.stop().await
}

/// Opens a stream, sends `messages`, and returns how it ended.
async fn stream_with(
    server: &TestServer,
    path: &str,
    messages: Vec<Message>,
) -> TestResult<Ending> {
    let mut socket = connect(server, path).await?;
    for message in messages {
        if socket.send(message).await.is_err() {
            break;
        }
    }
    read_until_closed(&mut socket).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_close_with_their_documented_codes() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.max_message_bytes = 64 * 1024;
    config.max_chunk_bytes = 64 * 1024;
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let cases: Vec<(&str, Vec<Message>, u16, &str)> = vec![
        (
            "bad config",
            vec![Message::text(
                r#"{"config": {"audioFormat": {"encoding": "NOT_AN_ENCODING"}}}"#,
            )],
            4003,
            "StreamingRecognitionConfig",
        ),
        (
            "a config that is not JSON",
            vec![Message::text("hello")],
            4003,
            "proto3 JSON",
        ),
        (
            "audio before the config",
            vec![Message::binary(linear16(&audio[..1_600]))],
            4003,
            "streaming_config",
        ),
        (
            "odd byte count",
            vec![Message::text(config_json()), Message::binary(vec![0u8; 3])],
            4003,
            "",
        ),
        (
            "unknown control message",
            vec![
                Message::text(config_json()),
                Message::text(r#"{"type": "pause"}"#),
            ],
            4003,
            "finalize",
        ),
        (
            "oversized message",
            vec![
                Message::text(config_json()),
                Message::binary(vec![0u8; 64 * 1024 + 2]),
            ],
            4011,
            "",
        ),
        (
            "unknown model",
            vec![Message::text(
                r#"{"config": {"audioFormat": {"encoding": "AUDIO_ENCODING_LINEAR16", "sampleRateHertz": 16000}, "model": "nope"}}"#,
            )],
            4005,
            "nope",
        ),
    ];
    for (what, messages, code, needle) in cases {
        let ending = stream_with(&server, "/v1/stream", messages).await?;
        let (closed, reason) = ending
            .close
            .clone()
            .ok_or(format!("{what}: no close frame"))?;
        assert_eq!(closed, code, "{what}: {:?}", ending.messages);
        let error = ending.error();
        assert_eq!(error["code"], i64::from(code - 4000), "{what}: {error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {message}");
        assert!(!reason.is_empty(), "{what}: empty close reason");
        if what == "oversized message" {
            assert_eq!(reason, "MESSAGE_TOO_LARGE");
        }
        println!("{what}: {closed} {reason}: {message}");
    }

    // A client that vanishes mid-stream: its call ends and the server keeps serving.
    let mut gone = connect(&server, "/v1/stream").await?;
    gone.send(Message::text(config_json())).await?;
    gone.send(Message::binary(linear16(&audio[..16_000])))
        .await?;
    drop(gone);
    server
        .wait_until(Duration::from_secs(10), |h| h.open_calls() == 0)
        .await?;
    let mut messages = vec![Message::text(config_json())];
    messages.extend(audio.chunks(3_200).map(|c| Message::binary(linear16(c))));
    messages.push(Message::text(r#"{"type": "end"}"#));
    let ending = stream_with(&server, "/v1/stream", messages).await?;
    assert_eq!(ending.close.as_ref().map(|c| c.0), Some(1000));
    assert_eq!(
        ending.finals(),
        "hello there general kenobi you are a bold one"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tokens_come_in_the_header_or_the_query() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.auth = Some(TokenSet::from_text("s3cret\n")?);
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    for path in ["/v1/stream", "/v1/stream?token=wrong", "/v1/captions"] {
        let ending = stream_with(&server, path, vec![Message::text(config_json())]).await?;
        assert_eq!(ending.close.as_ref().map(|c| c.0), Some(4016), "{path}");
        assert_eq!(ending.error()["status"], "UNAUTHENTICATED", "{path}");
    }
    let mut messages = vec![Message::text(config_json())];
    messages.extend(audio.chunks(3_200).map(|c| Message::binary(linear16(c))));
    messages.push(Message::text(r#"{"type": "end"}"#));
    let ending = stream_with(&server, "/v1/stream?token=s3cret", messages.clone()).await?;
    assert_eq!(ending.close.as_ref().map(|c| c.0), Some(1000));
    assert_eq!(
        ending.finals(),
        "hello there general kenobi you are a bold one"
    );

    let url = format!("{}/v1/stream", server.url.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cret".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    for message in messages {
        socket.send(message).await?;
    }
    let ending = read_until_closed(&mut socket).await?;
    assert_eq!(ending.close.as_ref().map(|c| c.0), Some(1000));
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caption_source_is_watched_over_websocket_and_the_page_is_served() -> TestResult {
    let (script, audio) = two_phrases()?;
    let path = temp_wav("ws", &audio)?;
    let config = with_source(FAKE_MODEL, &format!("lobby=file:{}", path.display()))?;
    let server = TestServer::start_ready(config, fake_loader(script, audio)).await?;

    let request = r#"{"source": "lobby", "interimResults": false, "historySize": 10}"#;
    let ending = stream_with(&server, "/v1/captions", vec![Message::text(request)]).await?;
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        ending.close.as_ref().map(|c| c.0),
        Some(1000),
        "{:?}",
        ending.messages
    );
    assert_eq!(ending.messages[0]["source"]["name"], "lobby");
    assert_eq!(
        ending.finals(),
        "hello there general kenobi you are a bold one"
    );

    let ending = stream_with(
        &server,
        "/v1/captions",
        vec![Message::text(r#"{"source": "nope"}"#)],
    )
    .await?;
    assert_eq!(ending.close.as_ref().map(|c| c.0), Some(4005));

    let (status, body) = http_get(&server, "/v1/info").await?;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body)?;
    assert_eq!(info["models"]["defaultModel"], FAKE_MODEL, "{info}");
    assert_eq!(info["sources"][0]["name"], "lobby", "{info}");
    assert!(info["languages"].as_array().is_some_and(|l| l.len() > 90));
    let (status, page) = http_get(&server, "/").await?;
    assert_eq!(status, 200, "{page}");
    assert!(page.to_lowercase().contains("microphone"), "{page}");
    for file in ["/web/app.js", "/web/worklet.js", "/web/style.css"] {
        let (status, body) = http_get(&server, file).await?;
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    server.stop().await
}
