//! gRPC-Web (tonic-web) on the server's one port, through tonic-web's own client over
//! HTTP/1.1, with the fake engine: Recognize, ListModels and StreamCaptions give what native
//! gRPC gives; CORS answers only the origins `--cors-allow-origin` names.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic_web::GrpcWebClientLayer;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, ListModelsRequest, RecognitionConfig, RecognizeRequest,
    StreamCaptionsRequest, StreamCaptionsResponse, recognize_request::AudioSource,
};
use transcribe_server::{CaptionLimits, ServerConfig};
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, fake_loader, recognized_texts, temp_wav, two_phrases,
    wav_bytes, with_source,
};

type WebBody = tonic_web::GrpcWebCall<tonic::body::Body>;
type WebClient = TranscriptionServiceClient<
    tonic_web::GrpcWebClientService<
        Client<hyper_util::client::legacy::connect::HttpConnector, WebBody>,
    >,
>;

fn web_client(server: &TestServer) -> TestResult<WebClient> {
    let http = Client::builder(TokioExecutor::new()).build_http::<WebBody>();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    Ok(TranscriptionServiceClient::with_origin(
        service,
        server.url.parse()?,
    ))
}

fn recognize_request(wav: &[u8]) -> RecognizeRequest {
    RecognizeRequest {
        config: Some(RecognitionConfig {
            audio_format: Some(AudioFormat {
                encoding: AudioEncoding::Wav.into(),
                ..Default::default()
            }),
            enable_word_time_offsets: true,
            ..Default::default()
        }),
        audio_source: Some(AudioSource::Content(wav.to_vec())),
    }
}

/// The finals' transcripts of a finished subscription.
fn finals(responses: &[StreamCaptionsResponse]) -> Vec<String> {
    responses
        .iter()
        .flat_map(|r| &r.results)
        .filter(|r| r.is_final)
        .filter_map(|r| r.alternatives.first())
        .map(|a| a.transcript.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_give_what_grpc_gives() -> TestResult {
    let (script, audio) = two_phrases()?;
    let path = temp_wav("grpcweb", &audio)?;
    let mut config = with_source(FAKE_MODEL, &format!("lobby=file:{}", path.display()))?;
    config.captions = CaptionLimits {
        source_speed: 10.0,
        ..CaptionLimits::default()
    };
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let mut native = server.client().await?;
    let mut web = web_client(&server)?;

    let wav = wav_bytes(&audio, 16_000);
    let want = native
        .recognize(recognize_request(&wav))
        .await?
        .into_inner();
    let got = web.recognize(recognize_request(&wav)).await?.into_inner();
    assert_eq!(recognized_texts(&got), recognized_texts(&want));
    assert_eq!(got.results, want.results);
    assert_eq!(
        recognized_texts(&got).join(" "),
        "hello there general kenobi you are a bold one"
    );

    let want = native.list_models(ListModelsRequest {}).await?.into_inner();
    let got = web.list_models(ListModelsRequest {}).await?.into_inner();
    assert_eq!(got, want);

    // The source plays once at 10x; both subscribers ask for the history, so each has
    // every final whenever it joined.
    let request = StreamCaptionsRequest {
        source: "lobby".into(),
        history_size: 10,
        ..Default::default()
    };
    let mut collected = Vec::new();
    for mut stream in [
        native.stream_captions(request.clone()).await?.into_inner(),
        web.stream_captions(request.clone()).await?.into_inner(),
    ] {
        let mut responses = Vec::new();
        while let Some(response) =
            tokio::time::timeout(Duration::from_secs(30), stream.next()).await?
        {
            responses.push(response?);
        }
        assert_eq!(
            responses
                .first()
                .and_then(|r| r.source.as_ref())
                .map(|s| s.name.as_str()),
            Some("lobby")
        );
        collected.push(finals(&responses));
    }
    assert_eq!(collected[1], collected[0]);
    assert_eq!(
        collected[0],
        ["hello there general kenobi", "you are a bold one"]
    );

    // An error comes back as the same status.
    let mut bad = recognize_request(&wav);
    if let Some(config) = bad.config.as_mut() {
        config.model = "nope".into();
    }
    let status = web
        .recognize(bad)
        .await
        .err()
        .ok_or("unknown model accepted")?;
    assert_eq!(status.code(), tonic::Code::NotFound);
    let _ = std::fs::remove_file(&path);
    server.stop().await
}

/// A CORS preflight from `origin`; the `access-control-allow-origin` answer, if any.
async fn preflight(server: &TestServer, origin: &str) -> TestResult<Option<String>> {
    let address = server.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "OPTIONS /transcribe.v1.TranscriptionService/Recognize HTTP/1.1\r\nHost: test\r\n\
         Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
         Connection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("access-control-allow-origin:"))
        .map(|v| v.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_allowed_origins() -> TestResult {
    let (script, audio) = two_phrases()?;
    let config = ServerConfig::with_models(&[FAKE_MODEL])?;
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    assert_eq!(preflight(&server, "https://app.example").await?, None);
    server.stop().await?;

    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.cors = vec!["https://app.example".parse()?];
    let server = TestServer::start_ready(config, fake_loader(script, audio)).await?;
    assert_eq!(
        preflight(&server, "https://app.example").await?.as_deref(),
        Some("https://app.example")
    );
    assert_eq!(preflight(&server, "https://evil.example").await?, None);
    server.stop().await
}
