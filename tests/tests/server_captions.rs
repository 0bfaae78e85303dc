//! StreamCaptions end to end: a server-side `--source file:PATH` broadcast to several
//! subscribers. With the real tiny.en: three subscribers get identical finals within the
//! WER threshold and a late joiner gets the earlier finals as replay. With the scripted
//! fake (fast): a subscriber that does not read loses interims (a sequence gap) or is ended
//! with RESOURCE_EXHAUSTED while the others are unaffected; source states (ACTIVE, ENDED)
//! and the OK end of a finite source; a failed decode makes the source INTERRUPTED (status
//! in band) and it restarts ACTIVE; unknown source NOT_FOUND; shutdown UNAVAILABLE.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use transcribe_core::text::{explain, wer};
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    SourceKind, SourceState, StreamCaptionsRequest, StreamCaptionsResponse,
};
use transcribe_server::{CaptionLimits, ServerConfig, ServerHandle};
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, fake_loader, faulty_loader, fixture, read_fixture,
    temp_wav, two_phrases, whisper_loader, with_source,
};

/// Word error rate the broadcast finals must stay within (docs/DESIGN.md "Tests and fixtures").
const WER_THRESHOLD: f64 = 0.25;

/// Longest any test waits for the server to reach a state.
const WAIT: Duration = Duration::from_secs(60);

/// Everything one subscription received and how it ended.
#[derive(Debug, Default)]
struct Received {
    messages: Vec<StreamCaptionsResponse>,
    status: Option<tonic::Status>,
}

impl Received {
    /// (utterance index, transcript) of every final, replayed or live, in order.
    fn finals(&self) -> Vec<(u64, String)> {
        self.messages
            .iter()
            .flat_map(|m| m.results.iter())
            .filter(|r| r.is_final)
            .map(|r| {
                let text = r.alternatives.first().map(|a| a.transcript.clone());
                (r.utterance_index, text.unwrap_or_default())
            })
            .collect()
    }

    fn text(&self) -> String {
        self.finals()
            .into_iter()
            .map(|(_, t)| t)
            .collect::<String>()
            .trim()
            .to_owned()
    }

    fn sequence(&self) -> Vec<u64> {
        self.messages.iter().map(|m| m.sequence_number).collect()
    }

    fn states(&self) -> Vec<i32> {
        self.messages
            .iter()
            .filter_map(|m| m.source.as_ref())
            .map(|s| s.state)
            .collect()
    }

    fn has_gap(&self) -> bool {
        self.sequence().windows(2).any(|w| w[1] != w[0] + 1)
    }
}

fn request(source: &str, interim: bool, history: i32) -> StreamCaptionsRequest {
    StreamCaptionsRequest {
        source: source.to_owned(),
        interim_results: interim,
        enable_word_time_offsets: true,
        enable_voice_activity_events: false,
        history_size: history,
    }
}

/// Subscribes on `channel` and reads until the call ends or `stop` says so (checked after
/// each message).
async fn subscribe(
    channel: Channel,
    request: StreamCaptionsRequest,
    stop: impl Fn(&Received) -> bool,
) -> Received {
    let mut received = Received::default();
    let mut client = TranscriptionServiceClient::new(channel);
    let mut stream = match client.stream_captions(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            received.status = Some(status);
            return received;
        }
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(m) => received.messages.push(m),
            Err(status) => {
                received.status = Some(status);
                break;
            }
        }
        if stop(&received) {
            break;
        }
    }
    received
}

async fn wait_for(
    handle: &ServerHandle,
    what: &str,
    check: impl Fn(&ServerHandle) -> bool,
) -> TestResult {
    let deadline = Instant::now() + WAIT;
    while !check(handle) {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn stats(handle: &ServerHandle, source: &str) -> transcribe_server::CaptionStats {
    handle.caption_stats(source).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_gives_three_subscribers_identical_finals_and_late_joiners_history()
-> TestResult {
    let started = Instant::now();
    let path = fixture("speech/pauses.wav");
    let (_, reference) = read_fixture("speech/pauses.wav")?;
    let config = with_source("tiny.en", &format!("lobby=file:{}", path.display()))?;
    let Some(loader) = whisper_loader(&config) else {
        return Ok(());
    };
    let server = TestServer::start_ready(config, loader).await?;
    let handle = server.handle.clone();
    wait_for(&handle, "the source to start", |h| {
        stats(h, "lobby").state == SourceState::Active as i32
    })
    .await?;

    // Three subscribers from the start. They ask for history too, so one that connects a
    // little late still has every final.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let channel = server.channel().await?;
        tasks.push(tokio::spawn(subscribe(
            channel,
            request("lobby", true, 100),
            |_| false,
        )));
    }
    // A late joiner: once the first final is out, it asks for the recent finals.
    wait_for(&handle, "the first final", |h| {
        stats(h, "lobby").finals >= 1
    })
    .await?;
    let late_channel = server.channel().await?;
    let late = tokio::spawn(subscribe(late_channel, request("", false, 10), |_| false));

    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await?);
    }
    let late = late.await?;
    let elapsed = started.elapsed();

    let first = &all[0];
    for (i, received) in all.iter().enumerate() {
        if let Some(status) = &received.status {
            return Err(format!("subscriber {i} ended with {status:?}").into());
        }
        let opening = received.messages.first().and_then(|m| m.source.clone());
        let opening = opening.ok_or("the first message must describe the source")?;
        assert_eq!(opening.name, "lobby");
        assert_eq!(opening.kind, SourceKind::File as i32);
        assert_eq!(opening.state, SourceState::Active as i32);
        assert_eq!(opening.model, "tiny.en");
        let format = opening.capture_format.ok_or("capture format")?;
        assert_eq!(format.sample_rate_hertz, 16_000);
        assert!(opening.capture_start_time.is_some());
        assert_eq!(
            received.states().last().copied(),
            Some(SourceState::Ended as i32),
            "subscriber {i} did not see ENDED"
        );
        assert_eq!(received.messages[0].sequence_number, 1);
        assert!(received.sequence().windows(2).all(|w| w[1] > w[0]));
        assert_eq!(received.finals(), first.finals(), "subscriber {i} differs");
    }
    let score = wer(&reference, &first.text());
    assert!(
        score.rate() <= WER_THRESHOLD,
        "{}",
        explain(&reference, &first.text())
    );

    // The late joiner: the finals before it joined as replay, then the rest live; the
    // same finals in all.
    assert!(late.status.is_none(), "{:?}", late.status);
    assert_eq!(late.finals(), first.finals());
    let replayed = late.messages.iter().filter(|m| m.is_replay).count();
    assert!(replayed >= 1, "no replay: {:?}", late.messages);
    assert!(
        late.messages
            .iter()
            .skip(1)
            .take(replayed)
            .all(|m| m.is_replay)
    );
    assert!(
        late.messages
            .iter()
            .all(|m| m.results.iter().all(|r| r.is_final)),
        "the late joiner asked for no interims"
    );
    println!(
        "3 subscribers + late joiner on {} finals, WER {:.3}, {replayed} replayed, {:.1} s",
        first.finals().len(),
        score.rate(),
        elapsed.as_secs_f64()
    );
    server.stop().await
}

/// Pace of the fake-engine sources: 10x real time (2.5 finals a second).
const FAST: f64 = 10.0;

/// A looping fake-engine source at [`FAST`] pace.
async fn fast_looping_server(name: &str, queue: usize) -> TestResult<TestServer> {
    let (script, audio) = two_phrases()?;
    let path = temp_wav(name, &audio)?;
    let mut config = with_source(FAKE_MODEL, &format!("loop=file:{}:loop", path.display()))?;
    config.captions = CaptionLimits {
        subscriber_queue: queue,
        history: 10,
        source_speed: FAST,
    };
    let server = TestServer::start_ready(config, fake_loader(script, audio)).await?;
    wait_for(&server.handle, "the source to start", |h| {
        stats(h, "loop").state == SourceState::Active as i32
    })
    .await?;
    // The source decoded the file when it opened; it is not read again.
    let _ = std::fs::remove_file(path);
    Ok(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_a_gap_or_is_ended_while_others_are_unaffected() -> TestResult {
    let started = Instant::now();
    // Six undelivered finals end a subscriber; the readers take fourteen.
    let server = fast_looping_server("slow", 6).await?;
    let handle = server.handle.clone();
    const FINALS: usize = 14;

    // The slow subscriber: a tiny HTTP/2 window and nobody reading, so the server's queue
    // for it fills.
    let slow_channel = Endpoint::from_shared(server.url.clone())?
        .initial_stream_window_size(256)
        .initial_connection_window_size(256)
        .connect()
        .await?;
    let mut slow_client = TranscriptionServiceClient::new(slow_channel);
    let mut slow = slow_client
        .stream_captions(request("loop", true, 0))
        .await?
        .into_inner();

    let mut fast = Vec::new();
    for _ in 0..2 {
        let channel = server.channel().await?;
        fast.push(tokio::spawn(subscribe(
            channel,
            request("loop", true, 0),
            |r| r.finals().len() >= FINALS,
        )));
    }
    let mut fast_received = Vec::new();
    for task in fast {
        fast_received.push(task.await?);
    }
    // Only now does the slow one read what it was sent.
    let mut slow_received = Received::default();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            Ok(Some(Ok(m))) => slow_received.messages.push(m),
            Ok(Some(Err(status))) => {
                slow_received.status = Some(status);
                break;
            }
            Ok(None) => break,
            Err(_) => break,
        }
        if slow_received.has_gap() && slow_received.finals().len() >= FINALS {
            break;
        }
    }
    let slow_status = slow_received.status.as_ref().map(tonic::Status::code);
    assert!(
        slow_status == Some(Code::ResourceExhausted) || slow_received.has_gap(),
        "slow subscriber: status {slow_status:?}, sequence {:?}",
        slow_received.sequence()
    );

    for (i, r) in fast_received.iter().enumerate() {
        assert!(r.status.is_none(), "fast subscriber {i}: {:?}", r.status);
        let finals = r.finals();
        assert!(finals.len() >= FINALS, "fast subscriber {i}: {finals:?}");
        // No final lost: consecutive utterance indexes.
        let first = finals[0].0;
        for (k, (index, _)) in finals.iter().enumerate() {
            assert_eq!(*index, first + k as u64, "fast subscriber {i}: {finals:?}");
        }
        assert!(
            finals.iter().all(|(_, t)| !t.trim().is_empty()),
            "{finals:?}"
        );
    }
    let s = stats(&handle, "loop");
    println!(
        "slow subscriber: {:?} after {} messages (gap: {}); overflowed {}, dropped interims {}, {:.1} s",
        slow_status,
        slow_received.messages.len(),
        slow_received.has_gap(),
        s.overflowed,
        s.dropped_interims,
        started.elapsed().as_secs_f64()
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finite_source_ends_with_ok_and_states() -> TestResult {
    let (script, audio) = two_phrases()?;
    let path = temp_wav("finite", &audio)?;
    let mut config = with_source(FAKE_MODEL, &format!("file:{}", path.display()))?;
    config.captions.source_speed = FAST;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let server = TestServer::start_ready(config, fake_loader(script.clone(), audio)).await?;
    wait_for(&server.handle, "the source to start", |h| {
        stats(h, "").state == SourceState::Active as i32
    })
    .await?;
    let mut events_request = request(&name, true, 0);
    events_request.enable_voice_activity_events = true;
    let received = subscribe(server.channel().await?, events_request, |_| false).await;
    assert!(received.status.is_none(), "{:?}", received.status);
    assert_eq!(
        received.states().first().copied(),
        Some(SourceState::Active as i32)
    );
    assert_eq!(
        received.states().last().copied(),
        Some(SourceState::Ended as i32)
    );
    assert_eq!(received.text(), script.text());
    assert!(
        received.messages.iter().any(|m| m.speech_event_type != 0),
        "no voice activity events"
    );
    // Joining after the end: the description (ENDED), the history, then OK.
    let after = subscribe(server.channel().await?, request(&name, false, 1), |_| false).await;
    assert!(after.status.is_none(), "{:?}", after.status);
    assert_eq!(after.states(), [SourceState::Ended as i32]);
    assert_eq!(after.finals().len(), 1);
    assert!(after.messages[1].is_replay);
    server.stop().await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_is_not_found_and_shutdown_is_unavailable() -> TestResult {
    let server = fast_looping_server("unknown", 64).await?;
    let mut client = server.client().await?;
    let status = match client.stream_captions(request("nope", true, 0)).await {
        Ok(_) => return Err("an unknown source was served".into()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("loop"), "{}", status.message());
    let status = match client.stream_captions(request("loop", true, -1)).await {
        Ok(_) => return Err("a negative history was accepted".into()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument);

    // A subscriber open at shutdown ends with UNAVAILABLE.
    let channel = server.channel().await?;
    let open = tokio::spawn(subscribe(channel, request("loop", true, 0), |_| false));
    wait_for(&server.handle, "the subscriber", |h| {
        stats(h, "loop").subscribers == 1
    })
    .await?;
    let mut server = server;
    server.trigger_shutdown();
    let received = tokio::time::timeout(WAIT, open).await??;
    assert_eq!(
        received.status.as_ref().map(tonic::Status::code),
        Some(Code::Unavailable),
        "{:?}",
        received.status
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_decode_interrupts_the_source_and_it_restarts() -> TestResult {
    use transcribe_core::fake::{Fault, When};
    use transcribe_core::policy::FailureKind;
    let (script, audio) = two_phrases()?;
    let path = temp_wav("fault", &audio)?;
    let mut config = with_source(FAKE_MODEL, &format!("loop=file:{}:loop", path.display()))?;
    config.captions.source_speed = FAST;
    // The second final decode fails.
    let loader = faulty_loader(
        script,
        audio,
        When::FinalCall(1),
        Fault::Fail(FailureKind::Inference),
    );
    let server = TestServer::start_ready(config, loader).await?;
    wait_for(&server.handle, "the source to start", |h| {
        stats(h, "loop").state == SourceState::Active as i32
    })
    .await?;
    let active = SourceState::Active as i32;
    let interrupted = SourceState::Interrupted as i32;
    let received = subscribe(server.channel().await?, request("loop", false, 0), |r| {
        let states = r.states();
        let restarted = states
            .iter()
            .skip_while(|s| **s != interrupted)
            .any(|s| *s == active);
        restarted && r.finals().len() >= 2
    })
    .await;
    assert!(received.status.is_none(), "{:?}", received.status);
    let sources: Vec<_> = received
        .messages
        .iter()
        .filter_map(|m| m.source.clone())
        .collect();
    let down = sources
        .iter()
        .find(|s| s.state == interrupted)
        .ok_or("no INTERRUPTED state")?;
    let status = down.status.clone().ok_or("INTERRUPTED without a status")?;
    assert_eq!(status.code, Code::Internal as i32, "{status:?}");
    let back = sources
        .iter()
        .skip_while(|s| s.state != interrupted)
        .find(|s| s.state == active)
        .ok_or("never ACTIVE again")?;
    assert!(back.status.is_none());
    assert_ne!(
        back.capture_start_time, sources[0].capture_start_time,
        "a restart has a new capture_start_time"
    );
    server.stop().await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// What a client is told when a decode fails with `kind`: through a StreamingRecognize
/// stream, and through a caption source (its in-band INTERRUPTED status, or the end of the
/// subscription when the source stops). Returns (code, ErrorInfo reason) for each door.
async fn decode_failure_seen_by_each_door(
    kind: transcribe_core::policy::FailureKind,
) -> TestResult<[(Code, Option<String>); 2]> {
    use tonic_types::StatusExt;
    use transcribe_core::fake::{Fault, When};
    use transcribe_tests::{audio_requests, config_request, raw_stream};
    let reason = |status: &tonic::Status| {
        status
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone())
    };
    let (script, audio) = two_phrases()?;
    let fault = || (When::FinalCall(0), Fault::Fail(kind));

    // A client stream: the first final decode fails.
    let config = ServerConfig::with_models(&[FAKE_MODEL])?;
    let (when, what) = fault();
    let loader = faulty_loader(script.clone(), audio.clone(), when, what);
    let server = TestServer::start_ready(config, loader).await?;
    let mut requests = vec![config_request("", true)];
    requests.extend(audio_requests(&audio, 1_600));
    let (_, end) = raw_stream(&mut server.client().await?, requests).await;
    let status = end
        .err()
        .ok_or("the stream ended OK despite the failed decode")?;
    let stream_seen = (status.code(), reason(&status));
    server.stop().await?;

    // A caption source: the same fault.
    let path = temp_wav(&format!("failure-{kind:?}"), &audio)?;
    let mut config = with_source(FAKE_MODEL, &format!("loop=file:{}:loop", path.display()))?;
    config.captions.source_speed = FAST;
    let (when, what) = fault();
    let server = TestServer::start_ready(config, faulty_loader(script, audio, when, what)).await?;
    let interrupted = SourceState::Interrupted as i32;
    let received = subscribe(server.channel().await?, request("loop", false, 0), |r| {
        r.states().contains(&interrupted)
    })
    .await;
    let source_seen = match (
        &received.status,
        received.messages.iter().rev().find_map(|m| {
            m.source
                .as_ref()
                .filter(|s| s.state == interrupted)
                .and_then(|s| s.status.clone())
        }),
    ) {
        (_, Some(status)) => {
            let status = tonic::Status::new(Code::from(status.code), status.message);
            (status.code(), None)
        }
        (Some(end), None) => (end.code(), reason(end)),
        (None, None) => return Err("the source reported no failure".into()),
    };
    server.stop().await?;
    let _ = std::fs::remove_file(path);
    Ok([stream_seen, source_seen])
}

/// One mapping of failed decodes for every door: an engine failure is INTERNAL for a client
/// stream and for a caption source (in band, INTERRUPTED); a cancelled decode (only the
/// pool's shutdown cancels one under a live call) is UNAVAILABLE with reason DRAINING for
/// both (the source stops and its subscribers are told so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_decode_maps_the_same_for_streams_and_sources() -> TestResult {
    use transcribe_core::policy::FailureKind;
    let [stream, source] = decode_failure_seen_by_each_door(FailureKind::Inference).await?;
    assert_eq!(stream.0, Code::Internal, "{stream:?}");
    assert_eq!(source.0, stream.0, "source {source:?}, stream {stream:?}");
    let [stream, source] = decode_failure_seen_by_each_door(FailureKind::Cancelled).await?;
    assert_eq!(stream, (Code::Unavailable, Some("DRAINING".to_owned())));
    assert_eq!(source, stream, "source {source:?}, stream {stream:?}");
    Ok(())
}
