//! The gRPC server end to end with the scripted fake engine: status codes, concurrency,
//! admission control, disconnects, health, reflection, ListModels, Recognize, drain.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, ListModelsRequest, RecognitionConfig, RecognizeRequest,
    StreamingRecognizeRequest, recognize_request::AudioSource,
    streaming_recognize_request::StreamingRequest,
};
use transcribe_server::ServerConfig;
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, audio_request, audio_requests, config_request,
    config_request_with, fake_loader, fake_loader_with, final_text, gated_loader, linear16,
    paced_stream, raw_stream, two_phrases,
};

/// 100 ms of 16 kHz audio per message.
const CHUNK: usize = 1_600;

fn config() -> TestResult<ServerConfig> {
    Ok(ServerConfig::with_models(&[FAKE_MODEL])?)
}

fn format(encoding: AudioEncoding, rate: i32, channels: i32) -> AudioFormat {
    AudioFormat {
        encoding: encoding.into(),
        sample_rate_hertz: rate,
        audio_channel_count: channels,
    }
}

/// A good stream of the standard script, returning its final text.
async fn good_stream(server: &TestServer) -> TestResult<String> {
    good_stream_at(server.url.clone()).await
}

async fn good_stream_at(url: String) -> TestResult<String> {
    let (_, audio) = two_phrases()?;
    let mut client =
        transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient::connect(
            url,
        )
        .await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (responses, status) = raw_stream(&mut client, requests).await;
    status?;
    Ok(final_text(&responses))
}

#[tokio::test]
async fn bad_inputs_get_their_codes_then_a_good_stream_works() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_chunk_bytes = 8_000;
    config.max_stream_duration = Duration::from_secs(7);
    config.idle_timeout = Duration::from_millis(300);
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;
    let second = linear16(&audio[..CHUNK]);
    let cases: Vec<(&str, Vec<StreamingRecognizeRequest>, Code, Option<&str>)> = vec![
        (
            "audio first",
            vec![audio_request(second.clone())],
            Code::InvalidArgument,
            Some("streaming_config"),
        ),
        (
            "no messages",
            vec![],
            Code::InvalidArgument,
            Some("streaming_config"),
        ),
        (
            "config twice",
            vec![config_request("", true), config_request("", true)],
            Code::InvalidArgument,
            Some("streaming_config"),
        ),
        (
            "container encoding",
            vec![config_request_with(
                format(AudioEncoding::Flac, 16_000, 1),
                "",
                true,
            )],
            Code::InvalidArgument,
            Some("streaming_config.config.audio_format.encoding"),
        ),
        (
            "unspecified encoding",
            vec![config_request_with(
                format(AudioEncoding::Unspecified, 16_000, 1),
                "",
                true,
            )],
            Code::InvalidArgument,
            Some("streaming_config.config.audio_format.encoding"),
        ),
        (
            "rate out of range",
            vec![config_request_with(
                format(AudioEncoding::Linear16, 96_000, 1),
                "",
                true,
            )],
            Code::InvalidArgument,
            Some("streaming_config.config.audio_format.sample_rate_hertz"),
        ),
        (
            "bad channel count",
            vec![config_request_with(
                format(AudioEncoding::Linear16, 16_000, -2),
                "",
                true,
            )],
            Code::InvalidArgument,
            Some("streaming_config.config.audio_format.audio_channel_count"),
        ),
        (
            "partial frame",
            vec![config_request("", true), audio_request(vec![1, 2, 3])],
            Code::InvalidArgument,
            Some("audio_content"),
        ),
        (
            "stereo chunk not whole frames",
            vec![
                config_request_with(format(AudioEncoding::Linear16, 16_000, 2), "", true),
                audio_request(vec![0; 6]),
            ],
            Code::InvalidArgument,
            Some("audio_content"),
        ),
        (
            "oversized chunk",
            vec![config_request("", true), audio_request(vec![0; 8_002])],
            Code::InvalidArgument,
            Some("audio_content"),
        ),
        (
            "unknown model",
            vec![config_request("huge-v9", true)],
            Code::NotFound,
            None,
        ),
        (
            "too long",
            std::iter::once(config_request("", true))
                .chain(audio_requests(
                    &[audio.as_slice(), audio.as_slice()].concat(),
                    CHUNK,
                ))
                .collect(),
            Code::OutOfRange,
            None,
        ),
    ];
    for (name, requests, code, field) in cases {
        let (_, status) = raw_stream(&mut client, requests).await;
        let Err(status) = status else {
            return Err(format!("{name}: ended OK, expected {code:?}").into());
        };
        assert_eq!(status.code(), code, "{name}: {status:?}");
        if let Some(field) = field {
            let details = status.get_error_details();
            let violations = details
                .bad_request()
                .map(|b| b.field_violations.clone())
                .unwrap_or_default();
            assert!(
                violations.iter().any(|v| v.field == field),
                "{name}: expected a violation of {field}, got {violations:?}"
            );
        }
        if code == Code::NotFound {
            assert!(
                status.message().contains(FAKE_MODEL),
                "{name}: {}",
                status.message()
            );
        }
    }

    // Idle: config, then nothing (the request stream stays open).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(config_request("", true)).await?;
    let mut inbound = client
        .streaming_recognize(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let status = loop {
        match inbound.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => return Err("idle stream ended OK".into()),
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|e| e.reason.clone()),
        Some("AUDIO_TIMEOUT".into())
    );
    drop(tx);

    // Unary with a server-side URI.
    let refused = client
        .recognize(RecognizeRequest {
            config: Some(RecognitionConfig::default()),
            audio_source: Some(AudioSource::Uri("/etc/passwd".into())),
        })
        .await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );

    // The server still serves a good stream.
    let text = good_stream(&server).await?;
    assert_eq!(text, script.text());
    server.stop().await
}

#[tokio::test]
async fn finals_interims_and_progress_are_well_formed() -> TestResult {
    let (script, audio) = two_phrases()?;
    let server =
        TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    // Paced (10x real time) so that partial decodes run while the utterance is open.
    let (responses, status) = paced_stream(&mut client, requests, Duration::from_millis(10)).await;
    status?;
    assert!(!responses.is_empty());
    assert!(
        !responses[0].request_id.is_empty(),
        "request id on the first response"
    );
    assert!(responses.iter().skip(1).all(|r| r.request_id.is_empty()));
    assert!(
        responses.iter().all(|r| r.progress.is_some()),
        "progress on every response"
    );
    let finals: Vec<_> = responses
        .iter()
        .flat_map(|r| r.results.iter())
        .filter(|r| r.is_final)
        .collect();
    let indices: Vec<u64> = finals.iter().map(|r| r.utterance_index).collect();
    assert_eq!(indices, [0, 1]);
    assert_eq!(final_text(&responses), script.text());
    let interims: Vec<_> = responses
        .iter()
        .flat_map(|r| r.results.iter())
        .filter(|r| !r.is_final)
        .collect();
    assert!(!interims.is_empty(), "interim results were asked for");
    assert!(
        interims
            .iter()
            .all(|r| r.stability > 0.0 && r.stability <= 1.0)
    );
    // Word offsets inside the audio, monotonic.
    let audio_seconds = audio.len() as f64 / 16_000.0;
    let mut last = 0.0;
    for word in finals.iter().flat_map(|r| r.alternatives[0].words.iter()) {
        let start = word
            .start_offset
            .map_or(-1.0, |d| d.seconds as f64 + f64::from(d.nanos) * 1e-9);
        let end = word
            .end_offset
            .map_or(-1.0, |d| d.seconds as f64 + f64::from(d.nanos) * 1e-9);
        assert!(
            start >= last - 1e-6 && end >= start && end <= audio_seconds + 1e-6,
            "{word:?}"
        );
        last = start;
    }
    // Processing latency is reported on decode-driven responses.
    assert!(responses.iter().any(|r| {
        r.progress
            .as_ref()
            .is_some_and(|p| p.processing_latency.is_some())
    }));
    server.stop().await
}

#[tokio::test]
async fn three_concurrent_streams_complete() -> TestResult {
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(
        config()?,
        fake_loader_with(script.clone(), audio, Duration::from_millis(5)),
    )
    .await?;
    let runs = (0..3).map(|_| good_stream_at(server.url.clone()));
    let texts = futures_join_all(runs).await;
    for text in texts {
        assert_eq!(text?, script.text());
    }
    server.stop().await
}

/// Joins futures without an extra dependency.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Opens a stream that sends its config and the first `chunks` chunks, then waits; returns
/// the request sender (drop it to half-close) and the response stream.
async fn open_stream(
    server: &TestServer,
    audio: &[f32],
    chunks: usize,
) -> TestResult<(
    tokio::sync::mpsc::Sender<StreamingRecognizeRequest>,
    tonic::Streaming<transcribe_proto::v1::StreamingRecognizeResponse>,
)> {
    let mut client = server.client().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tx.send(config_request("", true)).await?;
    for r in audio_requests(audio, CHUNK).into_iter().take(chunks) {
        tx.send(r).await?;
    }
    let inbound = client
        .streaming_recognize(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

#[tokio::test]
async fn stream_limit_refuses_the_second_and_spares_the_first() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_streams = 1;
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    let (tx, mut first) = open_stream(&server, &audio, 10).await?;
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 1)
        })
        .await?;

    let mut client = server.client().await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (_, status) = raw_stream(&mut client, requests).await;
    let status = status.err().ok_or("second stream was admitted")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo attached"
    );

    for r in audio_requests(&audio, CHUNK).into_iter().skip(10) {
        tx.send(r).await?;
    }
    drop(tx);
    let mut responses = Vec::new();
    while let Some(r) = first.next().await {
        responses.push(r?);
    }
    assert_eq!(final_text(&responses), script.text());
    assert_eq!(
        server.handle.pool_stats().map(|s| s.refused_streams),
        Some(1)
    );
    server.stop().await
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_slot() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_streams = 1;
    let server = TestServer::start_ready(
        config,
        fake_loader_with(script.clone(), audio.clone(), Duration::from_millis(20)),
    )
    .await?;
    let (tx, inbound) = open_stream(&server, &audio, 30).await?;
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 1)
        })
        .await?;
    // Vanish mid-stream: drop both halves of the call.
    drop(inbound);
    drop(tx);
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 0)
        })
        .await?;
    assert_eq!(good_stream(&server).await?, script.text());
    server.stop().await
}

#[tokio::test]
async fn health_is_not_serving_until_loaded() -> TestResult {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (script, audio) = two_phrases()?;
    let (gate, wait) = std::sync::mpsc::channel();
    let server = TestServer::start(config()?, gated_loader(script.clone(), audio, wait)).await?;
    let mut health = HealthClient::new(server.channel().await?);
    for service in ["", transcribe_server::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?}");
    }
    // Streams are refused while loading.
    let mut client = server.client().await?;
    let (_, status) = raw_stream(&mut client, vec![config_request("", true)]).await;
    assert_eq!(status.err().map(|s| s.code()), Some(Code::Unavailable));
    // ListModels answers while loading.
    let models = client.list_models(ListModelsRequest {}).await?.into_inner();
    assert_eq!(
        models.models[0].state,
        transcribe_proto::v1::ModelState::Loading as i32
    );

    gate.send(())?;
    server
        .wait_until(Duration::from_secs(10), |h| h.is_serving())
        .await?;
    let status = health
        .check(HealthCheckRequest {
            service: transcribe_server::SERVICE_NAME.into(),
        })
        .await?;
    assert_eq!(status.into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(good_stream(&server).await?, script.text());
    server.stop().await
}

#[tokio::test]
async fn list_models_and_reflection() -> TestResult {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(config()?, fake_loader(script, audio)).await?;
    let mut client = server.client().await?;
    let list = client.list_models(ListModelsRequest {}).await?.into_inner();
    assert_eq!(list.default_model, FAKE_MODEL);
    assert_eq!(list.models.len(), 1);
    let model = &list.models[0];
    assert_eq!(model.name, FAKE_MODEL);
    assert_eq!(model.state, transcribe_proto::v1::ModelState::Ready as i32);
    assert!(model.supports_streaming && !model.supports_translation);
    assert_eq!(model.language_codes, ["en"]);
    assert!(
        model
            .supported_encodings
            .contains(&(AudioEncoding::Linear16 as i32))
    );

    let mut reflection = ServerReflectionClient::new(server.channel().await?);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.next().await.ok_or("no reflection response")??;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        return Err("unexpected reflection response".into());
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [transcribe_server::SERVICE_NAME, "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    server.stop().await
}

#[tokio::test]
async fn unary_recognize_transcribes_pcm() -> TestResult {
    let (script, audio) = two_phrases()?;
    let server =
        TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;
    let response = client
        .recognize(RecognizeRequest {
            config: Some(RecognitionConfig {
                audio_format: Some(format(AudioEncoding::Linear16, 16_000, 1)),
                enable_word_time_offsets: true,
                ..Default::default()
            }),
            audio_source: Some(AudioSource::Content(linear16(&audio))),
        })
        .await?;
    let id = response
        .metadata()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let response = response.into_inner();
    let text: Vec<&str> = response
        .results
        .iter()
        .map(|r| r.alternatives[0].transcript.as_str())
        .collect();
    assert_eq!(text.join(" "), script.text());
    let metadata = response.metadata.ok_or("metadata")?;
    assert_eq!(metadata.model, FAKE_MODEL);
    assert_eq!(Some(metadata.request_id), id);
    server.stop().await
}

#[tokio::test]
async fn finalize_utterance_forces_a_final() -> TestResult {
    let script = transcribe_core::fake::Script::from_phrases(
        &[(0.5, "one two three four five six seven eight")],
        0.3,
        0.1,
    )?;
    let audio = script.render(4.0);
    let server =
        TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;
    // Finalize in the middle of the phrase (after "four", 2.1 s), then send the rest.
    let split = 2_100 * 16;
    let mut requests = vec![config_request("", false)];
    requests.extend(audio_requests(&audio[..split], CHUNK));
    requests.push(StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::FinalizeUtterance(Default::default())),
    });
    requests.extend(audio_requests(&audio[split..], CHUNK));
    let (responses, status) = raw_stream(&mut client, requests).await;
    status?;
    let finals: Vec<_> = responses
        .iter()
        .flat_map(|r| r.results.iter())
        .filter(|r| r.is_final)
        .collect();
    assert!(finals.len() >= 2, "finalize split the phrase: {finals:?}");
    assert_eq!(
        finals[0].alternatives[0].transcript.trim(),
        "one two three four"
    );
    server.stop().await
}

#[tokio::test]
async fn shutdown_mid_stream_flushes_finals_then_unavailable() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut server = TestServer::start_ready(config()?, fake_loader(script, audio.clone())).await?;
    // The first phrase (0.5-2.0 s) and a little silence; the stream stays open.
    let (tx, mut inbound) = open_stream(&server, &audio, 25).await?;
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 1)
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.trigger_shutdown();
    let mut responses = Vec::new();
    let status = loop {
        match inbound.next().await {
            Some(Ok(r)) => responses.push(r),
            Some(Err(status)) => break status,
            None => return Err("stream ended OK during shutdown".into()),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(final_text(&responses), "hello there general kenobi");
    drop(tx);
    server.stop().await
}

#[tokio::test]
async fn unary_recognize_reads_wav_and_checks_its_rate() -> TestResult {
    let (script, audio) = two_phrases()?;
    let server =
        TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;
    let wav = transcribe_tests::wav_bytes(&audio, 16_000);
    let request = |rate: i32| RecognizeRequest {
        config: Some(RecognitionConfig {
            audio_format: Some(format(AudioEncoding::Wav, rate, 0)),
            ..Default::default()
        }),
        audio_source: Some(AudioSource::Content(wav.clone())),
    };
    let response = client.recognize(request(0)).await?.into_inner();
    let text: Vec<&str> = response
        .results
        .iter()
        .map(|r| r.alternatives[0].transcript.as_str())
        .collect();
    assert_eq!(text.join(" "), script.text());
    let mismatch = client
        .recognize(request(44_100))
        .await
        .err()
        .ok_or("rate mismatch accepted")?;
    assert_eq!(mismatch.code(), Code::InvalidArgument, "{mismatch:?}");
    let garbage = RecognizeRequest {
        config: Some(RecognitionConfig::default()),
        audio_source: Some(AudioSource::Content(b"not audio at all".to_vec())),
    };
    let status = client
        .recognize(garbage)
        .await
        .err()
        .ok_or("garbage accepted")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    server.stop().await
}

#[tokio::test]
async fn single_utterance_and_voice_activity_events() -> TestResult {
    use transcribe_proto::v1::SpeechEventType;
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(config()?, fake_loader(script, audio.clone())).await?;
    let mut client = server.client().await?;
    let mut first = config_request("", true);
    if let Some(StreamingRequest::StreamingConfig(c)) = first.streaming_request.as_mut() {
        c.single_utterance = true;
        c.enable_voice_activity_events = true;
    }
    let mut requests = vec![first];
    requests.extend(audio_requests(&audio, CHUNK));
    let (responses, status) = raw_stream(&mut client, requests).await;
    status?;
    let events: Vec<i32> = responses
        .iter()
        .map(|r| r.speech_event_type)
        .filter(|e| *e != 0)
        .collect();
    assert_eq!(
        events,
        [
            SpeechEventType::SpeechActivityBegin as i32,
            SpeechEventType::SpeechActivityEnd as i32,
            SpeechEventType::EndOfSingleUtterance as i32
        ]
    );
    assert_eq!(final_text(&responses), "hello there general kenobi");
    server.stop().await
}

#[tokio::test]
async fn a_panicking_decode_ends_only_its_stream() -> TestResult {
    let (script, audio) = two_phrases()?;
    let server = TestServer::start_ready(
        config()?,
        transcribe_tests::panicky_loader(script.clone(), audio.clone()),
    )
    .await?;
    let mut client = server.client().await?;
    let mut bad = config_request("", true);
    if let Some(StreamingRequest::StreamingConfig(c)) = bad.streaming_request.as_mut()
        && let Some(rc) = c.config.as_mut()
    {
        rc.prompt = "panic".into();
    }
    let mut requests = vec![bad];
    requests.extend(audio_requests(&audio, CHUNK));
    let (_, status) = raw_stream(&mut client, requests).await;
    let status = status.err().ok_or("the panicking stream ended OK")?;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("scripted"),
        "panic details stay in the log"
    );
    assert_eq!(good_stream(&server).await?, script.text());
    server.stop().await
}
