//! Every server limit end to end with the scripted fake engine: its status code and
//! `ErrorInfo` reason (README "Limits"), and fault isolation: a failing or panicking decode,
//! or a client that vanishes at any point, ends only its own call and leaks nothing (the
//! open-call and pool gauges return to zero and other clients are served).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use transcribe_core::fake::{Fault, When};
use transcribe_core::policy::FailureKind;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, RecognizeRequest, StreamCaptionsRequest,
    StreamingRecognizeRequest, StreamingRecognizeResponse, recognize_request::AudioSource,
    streaming_recognize_request::StreamingRequest,
};
use transcribe_server::config::SourceSpec;
use transcribe_server::{ServerArgs, ServerConfig};
use transcribe_tests::{
    FAKE_MODEL, Hold, TestResult, TestServer, audio_request, audio_requests, config_request,
    error_reason, fake_loader, faults_loader, final_text, held_loader, linear16, paced_stream,
    raw_stream, two_phrases, wav_bytes,
};

/// 100 ms of 16 kHz audio per message.
const CHUNK: usize = 1_600;

/// Generous bound for a server-side gauge to settle.
const SETTLE: Duration = Duration::from_secs(10);

fn config() -> TestResult<ServerConfig> {
    Ok(ServerConfig::with_models(&[FAKE_MODEL])?)
}

/// The error status of a call that must fail.
fn refused<T>(result: Result<T, Status>, what: &str) -> TestResult<Status> {
    match result {
        Ok(_) => Err(format!("{what} was accepted").into()),
        Err(status) => Ok(status),
    }
}

/// A call that has sent its config and `chunks` chunks and keeps its request stream open.
struct OpenStream {
    tx: mpsc::Sender<StreamingRecognizeRequest>,
    inbound: tonic::Streaming<StreamingRecognizeResponse>,
}

impl OpenStream {
    async fn open(
        client: &mut TranscriptionServiceClient<Channel>,
        first: Option<StreamingRecognizeRequest>,
        audio: &[f32],
        chunks: usize,
    ) -> TestResult<Self> {
        let (tx, rx) = mpsc::channel(256);
        if let Some(first) = first {
            tx.send(first).await?;
        }
        for r in audio_requests(audio, CHUNK).into_iter().take(chunks) {
            tx.send(r).await?;
        }
        let inbound = client
            .streaming_recognize(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, inbound })
    }

    /// Sends the rest of `audio` (after `from` chunks), half-closes and collects the rest.
    async fn finish(
        mut self,
        audio: &[f32],
        from: usize,
    ) -> (Vec<StreamingRecognizeResponse>, Result<(), Status>) {
        for r in audio_requests(audio, CHUNK).into_iter().skip(from) {
            if self.tx.send(r).await.is_err() {
                break;
            }
        }
        drop(self.tx);
        collect(&mut self.inbound).await
    }
}

/// Every response until the end, and how it ended.
async fn collect(
    inbound: &mut tonic::Streaming<StreamingRecognizeResponse>,
) -> (Vec<StreamingRecognizeResponse>, Result<(), Status>) {
    let mut responses = Vec::new();
    loop {
        match inbound.next().await {
            Some(Ok(r)) => responses.push(r),
            Some(Err(status)) => return (responses, Err(status)),
            None => return (responses, Ok(())),
        }
    }
}

/// A complete stream of the standard script; its final text.
async fn good_stream(server: &TestServer) -> TestResult<String> {
    let (_, audio) = two_phrases()?;
    let mut client = server.client().await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (responses, status) = raw_stream(&mut client, requests).await;
    status?;
    Ok(final_text(&responses))
}

/// Waits until no call is open and the pool holds no stream.
async fn all_released(server: &TestServer) -> TestResult {
    server
        .wait_until(SETTLE, |h| {
            h.open_calls() == 0
                && h.pool_stats()
                    .is_some_and(|s| s.active_streams == 0 && s.busy_workers == 0)
        })
        .await
}

#[test]
fn limit_flags_reach_the_config() -> TestResult {
    let config = <ServerArgs as clap::Parser>::try_parse_from([
        "transcribe-server",
        "--model",
        FAKE_MODEL,
        "--max-streams",
        "3",
        "--queue-depth",
        "2",
        "--max-stream-duration",
        "90s",
        "--idle-timeout",
        "5s",
        "--max-chunk-bytes",
        "1000",
        "--max-message-bytes",
        "2000",
        "--max-unary-audio",
        "2m",
        "--max-subscribers",
        "7",
        "--drain-timeout",
        "3s",
        "--admission-wait",
        "750ms",
        "--max-tokens",
        "32",
        "--no-fallback",
        "--no-timestamps",
    ])?
    .validate()?;
    assert_eq!((config.max_streams, config.queue_depth), (3, 2));
    assert_eq!(config.admission_wait, Duration::from_millis(750));
    assert_eq!(config.max_tokens, Some(32));
    assert!(!config.temperature_fallback && config.no_timestamps);
    let mut policy = transcribe_core::policy::PolicyConfig::default();
    config.apply_policy_flags(&mut policy);
    assert_eq!(policy.max_tokens, Some(32));
    assert!(!policy.temperature_fallback && policy.no_timestamps);
    assert_eq!(config.max_stream_duration, Duration::from_secs(90));
    assert_eq!(config.idle_timeout, Duration::from_secs(5));
    assert_eq!(
        (config.max_chunk_bytes, config.max_message_bytes),
        (1000, 2000)
    );
    assert_eq!(config.max_unary_audio, Duration::from_secs(120));
    assert_eq!(config.max_subscribers, 7);
    assert_eq!(config.drain_timeout, Duration::from_secs(3));
    // A chunk limit above the message limit could never be reached.
    let too_small = <ServerArgs as clap::Parser>::try_parse_from([
        "transcribe-server",
        "--max-chunk-bytes",
        "4000",
        "--max-message-bytes",
        "2000",
    ])?
    .validate();
    assert!(too_small.is_err(), "message limit below the chunk limit");
    // Without the flag: 2 s on a CPU build (this one), 0.5 s on a GPU build.
    let default =
        <ServerArgs as clap::Parser>::try_parse_from(["transcribe-server"])?.validate()?;
    assert_eq!(default.admission_wait, Duration::from_secs(2));
    Ok(())
}

/// Opens stream a, whose decode takes the only worker (held), then stream b, whose decode
/// waits in the queue behind it.
async fn one_running_one_queued(
    server: &TestServer,
    client: &mut TranscriptionServiceClient<Channel>,
    audio: &[f32],
) -> TestResult<(OpenStream, OpenStream)> {
    let a = OpenStream::open(client, Some(config_request("", true)), audio, 20).await?;
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.busy_workers == 1)
        })
        .await?;
    let b = OpenStream::open(client, Some(config_request("", true)), audio, 20).await?;
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.queued_jobs == 1)
        })
        .await?;
    Ok((a, b))
}

#[tokio::test]
async fn stream_and_queue_limits_refuse_with_their_reasons() -> TestResult {
    let (script, audio) = two_phrases()?;
    let hold = Hold::new();
    let mut config = config()?;
    config.workers = 1;
    config.max_streams = 3;
    config.queue_depth = 1;
    let server = TestServer::start_ready(
        config,
        held_loader(script.clone(), audio.clone(), hold.clone()),
    )
    .await?;
    let mut client = server.client().await?;
    // Stream a's decode holds the only worker; stream b's decode waits in the queue.
    let (a, b) = one_running_one_queued(&server, &mut client, &audio).await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (_, status) = raw_stream(&mut client, requests.clone()).await;
    let status = refused(status, "a stream while the queue is full")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("QUEUE_FULL"));
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo"
    );

    // Stream b leaves, and its queued job with it; two streams without audio (so without
    // decodes) fill the places: the stream limit is next.
    drop(b);
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats()
                .is_some_and(|s| s.queued_jobs == 0 && s.active_streams == 1)
        })
        .await?;
    let c = OpenStream::open(&mut client, Some(config_request("", true)), &audio, 0).await?;
    let d = OpenStream::open(&mut client, Some(config_request("", true)), &audio, 0).await?;
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 3)
        })
        .await?;
    let (_, status) = raw_stream(&mut client, requests).await;
    let status = refused(status, "a stream over the stream limit")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("TOO_MANY_STREAMS"));
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo"
    );

    // The admitted streams were never disturbed.
    hold.release();
    let (responses, status) = a.finish(&audio, 20).await;
    status?;
    assert_eq!(final_text(&responses), script.text());
    for stream in [c, d] {
        let (responses, status) = stream.finish(&audio, 0).await;
        status?;
        assert_eq!(final_text(&responses), script.text());
    }
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn streams_are_refused_while_decodes_fall_behind() -> TestResult {
    let (script, audio) = two_phrases()?;
    let hold = Hold::new();
    let mut config = config()?;
    config.workers = 1;
    config.max_streams = 4;
    config.queue_depth = 4;
    config.admission_wait = Duration::from_millis(300);
    let server = TestServer::start_ready(
        config,
        held_loader(script.clone(), audio.clone(), hold.clone()),
    )
    .await?;
    let mut client = server.client().await?;
    // Stream a's decode holds the only worker; stream b's decode waits behind it, longer
    // than the admission limit: the workers are not keeping up.
    let (a, b) = one_running_one_queued(&server, &mut client, &audio).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (_, status) = raw_stream(&mut client, requests.clone()).await;
    let status = refused(status, "a stream while decodes fall behind")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("DECODES_BEHIND"));
    assert!(status.message().contains("waited"), "{}", status.message());
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo"
    );

    // Once the workers catch up, streams are admitted again, and the admitted ones lost
    // nothing.
    hold.release();
    for stream in [a, b] {
        let (responses, status) = stream.finish(&audio, 20).await;
        status?;
        assert_eq!(final_text(&responses), script.text());
    }
    let (responses, status) = raw_stream(&mut client, requests).await;
    status?;
    assert_eq!(final_text(&responses), script.text());
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn stream_duration_limit_flushes_finals_then_out_of_range() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_stream_duration = Duration::from_secs(3);
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let mut client = server.client().await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, CHUNK));
    let (responses, status) = raw_stream(&mut client, requests).await;
    let status = refused(status, "a stream over the duration limit")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("STREAM_DURATION_EXCEEDED")
    );
    let metadata = status
        .get_error_details()
        .error_info()
        .map(|i| i.metadata.clone())
        .unwrap_or_default();
    assert_eq!(metadata.get("limit_seconds").map(String::as_str), Some("3"));
    // The phrase heard before the limit still got its final; the second never began.
    assert_eq!(final_text(&responses), "hello there general kenobi");
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn idle_timeout_before_config_and_mid_utterance() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.idle_timeout = Duration::from_millis(300);
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;

    // Nothing at all, not even the config.
    let mut silent = OpenStream::open(&mut client, None, &audio, 0).await?;
    let (_, status) = collect(&mut silent.inbound).await;
    let status = refused(status, "a stream without config")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("AUDIO_TIMEOUT"));

    // Audio stops in the middle of the first phrase (1.5 s of 0.5-2.0 s).
    let mut stalled =
        OpenStream::open(&mut client, Some(config_request("", true)), &audio, 15).await?;
    let (responses, status) = collect(&mut stalled.inbound).await;
    let status = refused(status, "a stalled stream")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("AUDIO_TIMEOUT"));
    let heard = final_text(&responses);
    assert!(
        !heard.is_empty() && script.text().starts_with(&heard),
        "the words heard before the stall are finalized: {heard:?}"
    );
    // Messages without audio do not count as activity.
    let mut hollow =
        OpenStream::open(&mut client, Some(config_request("", true)), &audio, 0).await?;
    // The only sender: when it stops, the stream half-closes (and would end OK).
    let keepalive = hollow.tx;
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if keepalive.send(audio_request(Vec::new())).await.is_err() {
                break;
            }
        }
    });
    let (_, status) = collect(&mut hollow.inbound).await;
    let status = refused(status, "a stream of empty messages")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("AUDIO_TIMEOUT"));
    drop((silent.tx, stalled.tx));
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn message_and_chunk_size_limits() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_chunk_bytes = 8_000;
    config.max_message_bytes = 16_384;
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    let mut client = server.client().await?;

    // Over the message limit: the transport refuses to decode it.
    let huge = linear16(&audio[..10_000]); // 20 000 bytes
    let (_, status) = raw_stream(
        &mut client,
        vec![config_request("", true), audio_request(huge.clone())],
    )
    .await;
    let status = refused(status, "a message over --max-message-bytes")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(error_reason(&status).as_deref(), Some("MESSAGE_TOO_LARGE"));

    // Within the message limit but over the chunk limit: a field violation.
    let big = linear16(&audio[..5_000]); // 10 000 bytes
    let (_, status) = raw_stream(
        &mut client,
        vec![config_request("", true), audio_request(big)],
    )
    .await;
    let status = refused(status, "a chunk over --max-chunk-bytes")?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["audio_content"]);

    // Unary content over the message limit: tonic's own OUT_OF_RANGE.
    let unary = client
        .recognize(RecognizeRequest {
            config: Some(RecognitionConfig {
                audio_format: Some(AudioFormat {
                    encoding: AudioEncoding::Linear16.into(),
                    sample_rate_hertz: 16_000,
                    audio_channel_count: 1,
                }),
                ..Default::default()
            }),
            audio_source: Some(AudioSource::Content(huge)),
        })
        .await;
    let status = refused(unary, "unary content over --max-message-bytes")?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    assert_eq!(good_stream(&server).await?, script.text());
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn unary_audio_limit() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_unary_audio = Duration::from_secs(3);
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let mut client = server.client().await?;
    let request = |samples: &[f32]| RecognizeRequest {
        config: Some(RecognitionConfig::default()),
        audio_source: Some(AudioSource::Content(wav_bytes(samples, 16_000))),
    };
    let status = refused(
        client.recognize(request(&audio)).await,
        "6.5 s of unary audio",
    )?;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("UNARY_AUDIO_TOO_LONG")
    );
    assert!(
        status.message().contains("StreamingRecognize"),
        "{status:?}"
    );
    // Within the limit (the first phrase): transcribed.
    let response = client
        .recognize(request(&audio[..40_000]))
        .await?
        .into_inner();
    let text: Vec<&str> = response
        .results
        .iter()
        .filter_map(|r| r.alternatives.first())
        .map(|a| a.transcript.trim())
        .collect();
    assert_eq!(text.join(" "), "hello there general kenobi");
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn caption_subscriber_limit() -> TestResult {
    let (script, audio) = two_phrases()?;
    let path = std::env::temp_dir().join(format!(
        "transcribe-limits-{}-subscribers.wav",
        std::process::id()
    ));
    std::fs::write(&path, wav_bytes(&audio, 16_000))?;
    let mut config = config()?;
    config.sources = vec![SourceSpec::parse(&format!(
        "room=file:{}:loop",
        path.display()
    ))?];
    config.max_subscribers = 2;
    let server = TestServer::start_ready(config, fake_loader(script, audio)).await?;
    let subscribe = || StreamCaptionsRequest {
        source: "room".into(),
        ..Default::default()
    };
    let mut client = server.client().await?;
    let first = client.stream_captions(subscribe()).await?.into_inner();
    let mut second = client.stream_captions(subscribe()).await?.into_inner();
    let status = refused(
        client.stream_captions(subscribe()).await,
        "a third subscriber",
    )?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        error_reason(&status).as_deref(),
        Some("TOO_MANY_SUBSCRIBERS")
    );
    // One leaves: a place is free again.
    drop(first);
    server
        .wait_until(SETTLE, |h| {
            h.caption_stats("room").is_some_and(|s| s.subscribers == 1)
        })
        .await?;
    let mut third = client.stream_captions(subscribe()).await?.into_inner();
    // Both live subscriptions start with the source's description.
    for stream in [&mut second, &mut third] {
        let first_message = stream.next().await.ok_or("no message")??;
        assert_eq!(
            first_message.source.map(|s| s.name).as_deref(),
            Some("room")
        );
    }
    let _ = std::fs::remove_file(&path);
    server.stop().await
}

/// A config whose prompt selects a scripted fault.
fn faulty_config(prompt: &str) -> StreamingRecognizeRequest {
    let mut request = config_request("", true);
    if let Some(StreamingRequest::StreamingConfig(c)) = request.streaming_request.as_mut()
        && let Some(rc) = c.config.as_mut()
    {
        rc.prompt = prompt.into();
    }
    request
}

#[tokio::test]
async fn a_failing_or_panicking_decode_ends_only_its_stream() -> TestResult {
    let (script, audio) = two_phrases()?;
    let loader = faults_loader(
        script.clone(),
        audio.clone(),
        vec![
            (When::PromptContains("panic".into()), Fault::Panic),
            (
                When::PromptContains("fail".into()),
                Fault::Fail(FailureKind::Inference),
            ),
        ],
    );
    let server = TestServer::start_ready(config()?, loader).await?;
    // Three streams at once on the one worker: one healthy, one whose engine fails, one
    // whose engine panics.
    let run = |first: StreamingRecognizeRequest| {
        let url = server.url.clone();
        let audio = audio.clone();
        tokio::spawn(async move {
            let mut client = TranscriptionServiceClient::connect(url).await?;
            let mut requests = vec![first];
            requests.extend(audio_requests(&audio, CHUNK));
            let (responses, status) =
                paced_stream(&mut client, requests, Duration::from_millis(10)).await;
            Ok::<_, tonic::transport::Error>((final_text(&responses), status))
        })
    };
    let healthy = run(config_request("", true));
    let failing = run(faulty_config("please fail"));
    let panicking = run(faulty_config("panic now"));
    let (text, status) = healthy.await??;
    status?;
    assert_eq!(text, script.text());
    for (name, call) in [("failing", failing), ("panicking", panicking)] {
        let (_, status) = call.await??;
        let status = refused(status, name)?;
        assert_eq!(status.code(), Code::Internal, "{name}: {status:?}");
        assert!(
            !status.message().contains("scripted"),
            "{name}: details stay in the log: {}",
            status.message()
        );
    }
    all_released(&server).await?;
    // The worker rebuilt its decoder after the panic and serves on.
    assert_eq!(good_stream(&server).await?, script.text());
    all_released(&server).await?;
    server.stop().await
}

#[tokio::test]
async fn clients_that_vanish_at_any_point_leak_nothing() -> TestResult {
    let (script, audio) = two_phrases()?;
    let hold = Hold::new();
    let server = TestServer::start_ready(
        config()?,
        held_loader(script.clone(), audio.clone(), hold.clone()),
    )
    .await?;

    // 1. Mid-decode: the call goes while its decode holds the worker.
    let mut client = server.client().await?;
    let stream = OpenStream::open(&mut client, Some(config_request("", true)), &audio, 20).await?;
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.busy_workers == 1)
        })
        .await?;
    drop(stream);
    all_released(&server).await?;
    assert!(
        server
            .handle
            .pool_stats()
            .is_some_and(|s| s.cancelled_streams >= 1),
        "the running decode was cancelled"
    );
    hold.release();

    // 2. Before sending the config.
    let stream = OpenStream::open(&mut client, None, &audio, 0).await?;
    server.wait_until(SETTLE, |h| h.open_calls() == 1).await?;
    drop(stream);
    all_released(&server).await?;

    // 3. Mid-audio: admitted, some audio sent, then gone.
    let stream = OpenStream::open(&mut client, Some(config_request("", true)), &audio, 10).await?;
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 1)
        })
        .await?;
    drop(stream);
    all_released(&server).await?;

    // 4. Mid-response: all audio sent, one response read, then the whole connection goes.
    let mut own = server.client().await?;
    let mut stream = OpenStream::open(&mut own, Some(config_request("", true)), &audio, 65).await?;
    stream.inbound.next().await.ok_or("no response")??;
    drop(stream);
    drop(own);
    all_released(&server).await?;

    // Others are served throughout.
    assert_eq!(good_stream(&server).await?, script.text());
    all_released(&server).await?;
    server.stop().await
}
