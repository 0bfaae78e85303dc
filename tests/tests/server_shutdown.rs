//! Graceful shutdown of the real `transcribe-server` binary with the real `tiny.en` model:
//! SIGTERM while streams are open turns health NOT_SERVING, refuses new streams with
//! UNAVAILABLE, lets each open stream finish its utterance and get its finals, and the
//! process exits 0 within the drain timeout. Skips when `tiny.en` is not available here;
//! needs the binary (`cargo build --release -p transcribe-server`). In process with the
//! fake engine: unary calls in flight finish during the drain, and the drain timeout
//! cancels what is left.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;
use transcribe_core::text::normalize;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    RecognitionConfig, RecognizeRequest, StreamingRecognizeResponse, recognize_request::AudioSource,
};
use transcribe_server::ServerConfig;
use transcribe_tests::{
    FAKE_MODEL, Hold, ServerProcess, TestResult, TestServer, audio_requests, config_request,
    draining_with_a_held_call, held_loader, read_fixture, recognized_texts, two_phrases, wav_bytes,
};

/// 100 ms of 16 kHz audio per message, sent in real time.
const CHUNK: usize = 1_600;
const PACE: Duration = Duration::from_millis(100);

/// The drain timeout the server runs with; exit is expected within it (plus the fixed
/// half second for last statuses and a generous margin for a loaded machine).
const DRAIN: Duration = Duration::from_secs(20);
const EXIT_MARGIN: Duration = Duration::from_secs(30);

fn tiny_en_available() -> bool {
    let Ok(spec) = transcribe_models::ModelSpec::parse("tiny.en") else {
        return false;
    };
    match transcribe_models::resolve(&spec, &transcribe_models::FetchOptions::default()) {
        Ok(_) => true,
        Err(error) => {
            eprintln!("note: skipping: tiny.en is not available here: {error}");
            false
        }
    }
}

/// What one live stream saw.
struct Outcome {
    responses: Vec<StreamingRecognizeResponse>,
    status: Result<(), tonic::Status>,
}

/// Streams `samples` in real time until the server stops reading or ends the call;
/// `seen` counts responses as they arrive.
fn live_stream(
    url: String,
    samples: Vec<f32>,
    seen: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<TestResult<Outcome>> {
    tokio::spawn(async move {
        let mut client = TranscriptionServiceClient::connect(url).await?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(config_request("", true)).await?;
        tokio::spawn(async move {
            for request in audio_requests(&samples, CHUNK) {
                tokio::time::sleep(PACE).await;
                if tx.send(request).await.is_err() {
                    break; // the call is over
                }
            }
        });
        let mut inbound = client
            .streaming_recognize(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut responses = Vec::new();
        let status = loop {
            match inbound.next().await {
                Some(Ok(r)) => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    responses.push(r);
                }
                Some(Err(status)) => break Err(status),
                None => break Ok(()),
            }
        };
        Ok(Outcome { responses, status })
    })
}

async fn health(url: &str) -> TestResult<i32> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status)
}

/// The final results' texts.
fn finals(responses: &[StreamingRecognizeResponse]) -> Vec<String> {
    responses
        .iter()
        .flat_map(|r| r.results.iter())
        .filter(|r| r.is_final)
        .filter_map(|r| r.alternatives.first())
        .map(|a| a.transcript.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_streams_then_exits_zero() -> TestResult {
    if !tiny_en_available() {
        return Ok(());
    }
    let drain = format!("{}s", DRAIN.as_secs());
    let mut server = ServerProcess::start(
        &[
            "--model",
            "tiny.en",
            "--drain-timeout",
            &drain,
            "--max-streams",
            "4",
        ],
        "Serving.",
    )?;
    assert_eq!(health(&server.url).await?, ServingStatus::Serving as i32);

    // Two streams of a minute of speech in real time, one from 20 s into it; both are
    // still talking when the signal comes.
    let (samples, reference) = read_fixture("speech/long_60s.wav")?;
    let mut streams = Vec::new();
    for (name, from) in [("from 0 s", 0), ("from 20 s", 20 * 16_000)] {
        let seen = Arc::new(AtomicUsize::new(0));
        let audio = samples.get(from..).unwrap_or_default().to_vec();
        let task = live_stream(server.url.clone(), audio, seen.clone());
        streams.push((name, reference.clone(), seen, task));
    }
    // Both are mid-speech once each has had a response.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while streams
        .iter()
        .any(|(_, _, seen, _)| seen.load(Ordering::SeqCst) == 0)
    {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("no responses; log:\n{}", server.log_text()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.signal("TERM")?;
    let signalled = tokio::time::Instant::now();

    // Health turns NOT_SERVING while the listener still answers.
    let deadline = signalled + Duration::from_secs(10);
    loop {
        if health(&server.url).await? == ServingStatus::NotServing as i32 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("health still SERVING after SIGTERM".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new stream is refused with UNAVAILABLE (reason DRAINING).
    let mut client = TranscriptionServiceClient::connect(server.url.clone()).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(config_request("", true)).await?;
    let refused = match client.streaming_recognize(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                match inbound.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(status)) => break status,
                    None => return Err("a stream was admitted while draining".into()),
                }
            }
        }
    };
    drop(tx);
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .as_deref(),
        Some("DRAINING")
    );

    // The open streams get their finals, then UNAVAILABLE.
    for (name, reference, _, task) in streams {
        let outcome = task.await??;
        let status = outcome
            .status
            .err()
            .ok_or("a stream ended OK during the drain")?;
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
        let texts = finals(&outcome.responses);
        assert!(
            !texts.is_empty(),
            "{name}: no final before the drain ended it"
        );
        // The finals are what was said: their words come from the fixture's reference.
        let vocabulary: HashSet<String> = normalize(&reference)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let heard = normalize(&texts.join(" "));
        let words: Vec<&str> = heard.split_whitespace().collect();
        let known = words.iter().filter(|w| vocabulary.contains(**w)).count();
        assert!(
            known * 10 >= words.len() * 7,
            "{name}: finals {heard:?} are mostly not in the reference"
        );
        eprintln!("{name}: {} finals, last: {:?}", texts.len(), texts.last());
    }

    let status = server
        .wait_exit(DRAIN + EXIT_MARGIN)
        .await?
        .ok_or_else(|| format!("still running after the drain; log:\n{}", server.log_text()))?;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(log.contains("Draining."), "{log}");
    assert!(log.contains("Stopped."), "{log}");
    assert!(
        !log.contains("Drain timed out"),
        "every stream finished in time:\n{log}"
    );
    eprintln!(
        "exited {:.1}s after SIGTERM",
        signalled.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn sigint_when_idle_exits_zero() -> TestResult {
    if !tiny_en_available() {
        return Ok(());
    }
    let mut server = ServerProcess::start(&["--model", "tiny.en"], "Serving.")?;
    server.signal("INT")?;
    let status = server
        .wait_exit(EXIT_MARGIN)
        .await?
        .ok_or("still running after SIGINT")?;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.log_text()
    );
    Ok(())
}

/// In process with the fake engine: a Recognize call in flight when the drain starts
/// finishes with its result, while a new one is refused.
#[tokio::test]
async fn unary_calls_in_flight_finish_during_the_drain() -> TestResult {
    let (_, audio) = two_phrases()?;
    let (server, hold, in_flight) = draining_with_a_held_call().await?;
    let request = |samples: &[f32]| RecognizeRequest {
        config: Some(RecognitionConfig::default()),
        audio_source: Some(AudioSource::Content(wav_bytes(samples, 16_000))),
    };
    let mut late = server.client().await?;
    let refused = late.recognize(request(&audio[..40_000])).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(Code::Unavailable),
        "a new call while draining"
    );
    hold.release();
    let response = in_flight.await??.into_inner();
    assert_eq!(
        recognized_texts(&response).join(" "),
        "hello there general kenobi"
    );
    server.stop().await
}

/// In process with the fake engine: a stream whose decode never finishes is cancelled at
/// the drain timeout with UNAVAILABLE, and the server stops.
#[tokio::test]
async fn the_drain_timeout_cancels_what_is_left() -> TestResult {
    let (script, audio) = two_phrases()?;
    let hold = Hold::new(); // never released
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.drain_timeout = Duration::from_secs(1);
    let mut server =
        TestServer::start_ready(config, held_loader(script, audio.clone(), hold)).await?;
    let mut client = server.client().await?;
    let (tx, rx) = mpsc::channel(256);
    tx.send(config_request("", true)).await?;
    for r in audio_requests(&audio, CHUNK).into_iter().take(20) {
        tx.send(r).await?;
    }
    let mut inbound = client
        .streaming_recognize(ReceiverStream::new(rx))
        .await?
        .into_inner();
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.busy_workers == 1)
        })
        .await?;
    server.trigger_shutdown();
    let status = loop {
        match inbound.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => return Err("the stream ended OK".into()),
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(tx);
    server.stop().await
}
