//! The client library's retry and resume (`StreamOptions::retry`) end to end against the
//! real in-process server with the scripted fake engine: a stream outlives a server that
//! vanishes mid-stream or drains, waits out a full server (honouring RetryInfo), continues
//! past the server's stream-length limit (and backs off and gives up, rather than repeat
//! the same call forever, when a call at the limit moved nothing forward), gives up in time
//! when its server is gone for good (and at once when none was ever reached), and does not retry what retrying cannot fix (an unknown model, the
//! server's own INTERNAL).
//!
//! A resumed stream must read as one stream: the finals' text is the script's, each phrase
//! once, utterance indices 0, 1, 2, ... without gap or repeat, and every time on the
//! original clock (the words' times are the script's).
//!
//! Why a proxy: the client reconnects to the same URL, as it would to a balancer. A small
//! TCP proxy in this file stands for that balancer: it forwards each new connection to the
//! backend it currently points at, can be pointed at another server, and can cut every live
//! connection at once (a server killed abruptly, as the client sees it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tonic::Code;
use transcribe_client::resume::STREAM_DURATION_EXCEEDED;
use transcribe_client::{
    ClientError, RetryPolicy, StreamEvent, StreamOptions, StreamSummary, stream_samples,
};
use transcribe_core::fake::{Fault, Script, When};
use transcribe_core::policy::FailureKind;
use transcribe_server::ServerConfig;
use transcribe_server::error::OVERLOAD_RETRY_AFTER;
use transcribe_tests::{
    FAKE_MODEL, TestResult, TestServer, error_reason, fake_loader, faulty_loader, phrases,
    two_phrases,
};

/// Generous bound for a server-side gauge to settle, or an event to arrive.
const SETTLE: Duration = Duration::from_secs(20);

/// Longest any stream here may take (the longest is 12.5 s of audio in real time).
const STREAM_BOUND: Duration = Duration::from_secs(60);

/// Word times must match the script's within this (they are exact but for rounding).
const WORD_TOLERANCE: f64 = 0.05;

fn config() -> TestResult<ServerConfig> {
    Ok(ServerConfig::with_models(&[FAKE_MODEL])?)
}

/// Four phrases over 12.5 s: the stream is cut or drained after the first.
fn four_phrases() -> TestResult<(Script, Vec<f32>)> {
    phrases(
        &[
            (0.5, "hello there general kenobi"),
            (3.5, "you are a bold one"),
            (6.5, "back away i will deal with this"),
            (10.5, "so uncivilized"),
        ],
        12.5,
    )
}

fn retry(give_up_after: Duration) -> Option<RetryPolicy> {
    Some(RetryPolicy {
        give_up_after,
        ..RetryPolicy::default()
    })
}

/// A TCP proxy standing for a balancer: forwards each new connection to the current
/// backend; [`Proxy::cut`] drops every live connection at once.
struct Proxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    url: String,
    backend: Arc<Mutex<SocketAddr>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: JoinHandle<()>,
}

fn address_of(url: &str) -> TestResult<SocketAddr> {
    Ok(url.trim_start_matches("http://").parse()?)
}

impl Proxy {
    async fn start(backend_url: &str) -> TestResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let backend = Arc::new(Mutex::new(address_of(backend_url)?));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let backend = Arc::clone(&backend);
            let links = Arc::clone(&links);
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = *backend.lock().unwrap_or_else(PoisonError::into_inner);
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(link.abort_handle());
                }
            }
        });
        Ok(Self {
            url,
            backend,
            links,
            accept,
        })
    }

    /// New connections go to `backend_url` from now on.
    fn switch_to(&self, backend_url: &str) -> TestResult {
        *self.backend.lock().unwrap_or_else(PoisonError::into_inner) = address_of(backend_url)?;
        Ok(())
    }

    /// Drops every live connection (both sockets of each); returns how many were live.
    fn cut(&self) -> usize {
        let links: Vec<AbortHandle> = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        links
            .iter()
            .filter(|link| !link.is_finished())
            .inspect(|link| link.abort())
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A stream of `audio` to `url` in a task; its events arrive on the receiver (which closes
/// when the stream is over).
fn spawn_stream(
    url: String,
    audio: Vec<f32>,
    options: StreamOptions,
) -> (
    JoinHandle<Result<StreamSummary, ClientError>>,
    mpsc::UnboundedReceiver<StreamEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        stream_samples(url, &audio, &options, move |event| {
            let _ = tx.send(event);
        })
        .await
    });
    (task, rx)
}

/// Runs a stream of `audio` to `url` to its end; its result and every event.
///
/// # Errors
/// When it has not ended within [`STREAM_BOUND`].
async fn run_stream(
    url: &str,
    audio: &[f32],
    options: &StreamOptions,
) -> TestResult<(Result<StreamSummary, ClientError>, Vec<StreamEvent>)> {
    let mut events = Vec::new();
    let result = tokio::time::timeout(
        STREAM_BOUND,
        stream_samples(url, audio, options, |event| events.push(event)),
    )
    .await
    .map_err(|_| format!("the stream did not end within {STREAM_BOUND:?}"))?;
    Ok((result, events))
}

/// How many `Resuming` and `Resumed` events there are.
fn resumes(events: &[StreamEvent]) -> (usize, usize) {
    let resuming = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Resuming { .. }))
        .count();
    let resumed = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Resumed { .. }))
        .count();
    (resuming, resumed)
}

/// The stream reads as one uninterrupted stream of `script`: its text once, indices
/// 0, 1, 2, ..., times increasing and on the original clock (each word at its script
/// time), and the finals reported as events are the summary's.
fn assert_seamless(script: &Script, summary: &StreamSummary, events: &[StreamEvent]) {
    let finals = &summary.finals;
    let described = || {
        finals
            .iter()
            .map(|f| {
                format!(
                    "#{} [{:.2}-{:.2}] {:?}",
                    f.utterance_index, f.start, f.end, f.text
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(summary.text(), script.text(), "finals:\n{}", described());
    let indices: Vec<u64> = finals.iter().map(|f| f.utterance_index).collect();
    let expected: Vec<u64> = (0..finals.len() as u64).collect();
    assert_eq!(indices, expected, "finals:\n{}", described());
    for pair in finals.windows(2) {
        assert!(
            pair[0].start < pair[0].end && pair[0].end <= pair[1].start,
            "times go forward:\n{}",
            described()
        );
    }
    // Every word at its script time: the resumed calls' times are on the original clock.
    let words: Vec<_> = finals.iter().flat_map(|f| f.words.iter()).collect();
    assert_eq!(
        words.len(),
        script.words().len(),
        "finals:\n{}",
        described()
    );
    for (heard, said) in words.iter().zip(script.words()) {
        assert_eq!(heard.text.trim(), said.text);
        assert!(
            (heard.start - said.start).abs() < WORD_TOLERANCE
                && (heard.end - said.end).abs() < WORD_TOLERANCE,
            "{:?} at {:.3}-{:.3}, said at {:.3}-{:.3}",
            said.text,
            heard.start,
            heard.end,
            said.start,
            said.end
        );
    }
    // The last final starts where its phrase does.
    if let Some(last) = finals.last() {
        let first_word = script.words().len().saturating_sub(last.words.len());
        if let Some(said) = script.words().get(first_word) {
            assert!(
                (last.start - said.start).abs() < 0.5,
                "last final at {:.2}, its phrase at {:.2}",
                last.start,
                said.start
            );
        }
    }
    let reported: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Final(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), finals.len());
    assert!(reported.iter().zip(finals).all(|(a, b)| *a == b));
}

/// Waits for the first event `pick` accepts, keeping every event seen in `seen`.
async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<StreamEvent>,
    seen: &mut Vec<StreamEvent>,
    what: &str,
    pick: impl Fn(&StreamEvent) -> bool,
) -> TestResult {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("no {what} in time; seen: {seen:?}"))?
            .ok_or_else(|| format!("the stream ended before {what}; seen: {seen:?}"))?;
        let found = pick(&event);
        seen.push(event);
        if found {
            return Ok(());
        }
    }
}

/// Every remaining event of a stream (the receiver closes when the stream is over).
///
/// # Errors
/// When the stream has not ended within [`STREAM_BOUND`].
async fn drain_events(
    events: &mut mpsc::UnboundedReceiver<StreamEvent>,
    seen: &mut Vec<StreamEvent>,
) -> TestResult {
    tokio::time::timeout(STREAM_BOUND, async {
        while let Some(event) = events.recv().await {
            seen.push(event);
        }
    })
    .await
    .map_err(|_| format!("the stream did not end within {STREAM_BOUND:?}"))?;
    Ok(())
}

/// 1. The server vanishes mid-stream (every connection cut at once): the stream resumes on
///    another server behind the same address, from the last final, on the same clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_survives_its_server_vanishing() -> TestResult {
    let (script, audio) = four_phrases()?;
    let a = TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let b = TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let proxy = Proxy::start(&a.url).await?;
    let options = StreamOptions {
        realtime: true,
        retry: retry(Duration::from_secs(10)),
        ..StreamOptions::default()
    };
    let (task, mut events) = spawn_stream(proxy.url.clone(), audio, options);
    let mut seen = Vec::new();
    wait_for(&mut events, &mut seen, "a final", |e| {
        matches!(e, StreamEvent::Final(_))
    })
    .await?;
    proxy.switch_to(&b.url)?;
    assert!(proxy.cut() >= 1, "the stream's connection was live");
    drain_events(&mut events, &mut seen).await?;
    let summary = task.await??;

    assert_seamless(&script, &summary, &seen);
    assert!(summary.attempts >= 2, "attempts: {}", summary.attempts);
    assert_eq!(resumes(&seen), (1, 1), "{seen:?}");
    assert_eq!(summary.resume_gaps.len(), 1);
    // The first phrase was final before the cut; the rest came from B.
    assert!(
        seen.iter()
            .position(|e| matches!(e, StreamEvent::Resuming { .. }))
            > seen.iter().position(|e| matches!(e, StreamEvent::Final(_))),
        "{seen:?}"
    );
    if let Some(StreamEvent::Resuming { from, .. }) = seen
        .iter()
        .find(|e| matches!(e, StreamEvent::Resuming { .. }))
    {
        let first_end = summary.finals.first().map_or(0.0, |f| f.end);
        assert!(
            *from >= first_end - 1e-3 && *from < 3.5,
            "resumed from {from:.2}: after the first final ({first_end:.2}), before the second phrase"
        );
    }
    a.stop().await?;
    b.stop().await
}

/// 2. The server drains mid-utterance: it finishes the utterance and ends the call with
///    UNAVAILABLE (DRAINING); the stream resumes on another server behind the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_moves_off_a_draining_server() -> TestResult {
    let (script, audio) = four_phrases()?;
    let mut a =
        TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let b = TestServer::start_ready(config()?, fake_loader(script.clone(), audio.clone())).await?;
    let proxy = Proxy::start(&a.url).await?;
    let options = StreamOptions {
        realtime: true,
        retry: retry(Duration::from_secs(10)),
        ..StreamOptions::default()
    };
    let (task, mut events) = spawn_stream(proxy.url.clone(), audio, options);
    let mut seen = Vec::new();
    // Mid-utterance: the second phrase is being heard.
    let heard_second = |e: &StreamEvent| match e {
        StreamEvent::Interim {
            utterance_index: 1,
            stable,
            unstable,
        } => !stable.is_empty() || !unstable.is_empty(),
        _ => false,
    };
    wait_for(
        &mut events,
        &mut seen,
        "an interim of the second phrase",
        heard_second,
    )
    .await?;
    proxy.switch_to(&b.url)?;
    a.trigger_shutdown();
    drain_events(&mut events, &mut seen).await?;
    let summary = task.await??;

    assert_seamless(&script, &summary, &seen);
    assert!(summary.attempts >= 2, "attempts: {}", summary.attempts);
    assert_eq!(resumes(&seen), (1, 1), "{seen:?}");
    let Some(StreamEvent::Resuming { error, from, .. }) = seen
        .iter()
        .find(|e| matches!(e, StreamEvent::Resuming { .. }))
    else {
        return Err("no Resuming event".into());
    };
    assert!(error.contains("Unavailable"), "{error}");
    // A finished the utterance it was hearing: the first two phrases are its finals.
    let before: Vec<&str> = seen
        .iter()
        .take_while(|e| !matches!(e, StreamEvent::Resuming { .. }))
        .filter_map(|e| match e {
            StreamEvent::Final(f) => Some(f.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(before, ["hello there general kenobi", "you are a bold one"]);
    assert!(*from >= 5.4 && *from < 6.5, "resumed from {from:.2}");
    a.stop().await?;
    b.stop().await
}

/// 3. A full server (max_streams 1): with retry the second stream waits (at least the
///    server's RetryInfo between calls) and gets through once the first ends; without retry
///    it fails with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_server_is_waited_out() -> TestResult {
    let (script, audio) = two_phrases()?;
    let mut config = config()?;
    config.max_streams = 1;
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;
    // The first stream holds the only place for the 6.5 s of its audio.
    let holder = StreamOptions {
        realtime: true,
        ..StreamOptions::default()
    };
    let (first, _first_events) = spawn_stream(server.url.clone(), audio.clone(), holder);
    server
        .wait_until(SETTLE, |h| {
            h.pool_stats().is_some_and(|s| s.active_streams == 1)
        })
        .await?;

    let (result, events) = run_stream(&server.url, &audio, &StreamOptions::default()).await?;
    match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert_eq!(error_reason(&status).as_deref(), Some("TOO_MANY_STREAMS"));
        }
        other => return Err(format!("without retry: {other:?}").into()),
    }
    assert_eq!(resumes(&events), (0, 0));

    let options = StreamOptions {
        retry: retry(Duration::from_secs(30)),
        ..StreamOptions::default()
    };
    let (result, events) = run_stream(&server.url, &audio, &options).await?;
    let summary = result?;
    assert_eq!(summary.text(), script.text());
    assert_seamless(&script, &summary, &events);
    assert!(summary.attempts >= 2, "attempts: {}", summary.attempts);
    let waits: Vec<(Duration, &String)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Resuming { after, error, .. } => Some((*after, error)),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len() as u32, summary.attempts - 1, "{events:?}");
    for (after, error) in &waits {
        assert!(error.contains("ResourceExhausted"), "{error}");
        assert!(
            *after >= OVERLOAD_RETRY_AFTER,
            "waited {after:?}: RetryInfo honoured"
        );
    }
    assert_eq!(resumes(&events).1, 1, "{events:?}");

    // The first stream was never disturbed.
    let first = tokio::time::timeout(STREAM_BOUND, first).await???;
    assert_eq!(first.text(), script.text());
    assert_eq!(first.attempts, 1);
    server.stop().await
}

/// 4. A server never reached is an error at once (a wrong address should not cost
///    `give_up_after`); a server reached and then gone for good is retried, then given up
///    on after `give_up_after` with the refused connection as the source.
#[tokio::test]
async fn a_server_gone_for_good_is_given_up_on_in_time() -> TestResult {
    let (script, audio) = two_phrases()?;
    let options = StreamOptions {
        realtime: true,
        retry: retry(Duration::from_secs(1)),
        ..StreamOptions::default()
    };
    // A server never reached: a wrong address or a stopped server, said at once.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    let (result, events) = run_stream(&nowhere, &audio, &options).await?;
    assert!(
        matches!(result, Err(ClientError::Connect { .. })),
        "{result:?}"
    );
    assert_eq!(resumes(&events), (0, 0), "{events:?}");

    // A server reached, then gone (drained, its port closed): retried, then given up.
    let server = TestServer::start_ready(config()?, fake_loader(script, audio.clone())).await?;
    let (task, mut events) = spawn_stream(server.url.clone(), audio, options);
    let mut seen = Vec::new();
    wait_for(&mut events, &mut seen, "a final", |e| {
        matches!(e, StreamEvent::Final(_))
    })
    .await?;
    let started = Instant::now();
    server.stop().await?;
    drain_events(&mut events, &mut seen).await?;
    let elapsed = started.elapsed();
    let Err(error) = task.await? else {
        return Err("a stream to a stopped server succeeded".into());
    };
    let ClientError::GaveUp {
        after,
        attempts,
        last,
    } = &error
    else {
        return Err(format!("not GaveUp: {error:?}").into());
    };
    assert!(
        matches!(**last, ClientError::Connect { .. }),
        "last failure: {last:?}"
    );
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(source, Some(last.to_string()));
    assert!(*attempts >= 3, "attempts: {attempts}");
    assert!(*after <= Duration::from_secs(1), "gave up after {after:?}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    // Every failed call but the last was followed by a resume; none answered.
    assert_eq!(resumes(&seen), (*attempts as usize - 1, 0), "{seen:?}");
    Ok(())
}

/// 5. What retrying cannot fix fails on the first call even with retry: an unknown model
///    (NOT_FOUND) and the server's own INTERNAL (a failing decode).
#[tokio::test]
async fn request_and_server_errors_are_not_retried() -> TestResult {
    let (script, audio) = two_phrases()?;
    let loader = faulty_loader(
        script,
        audio.clone(),
        When::PromptContains("fail".into()),
        Fault::Fail(FailureKind::Inference),
    );
    let server = TestServer::start_ready(config()?, loader).await?;
    let retrying = StreamOptions {
        retry: retry(Duration::from_secs(10)),
        ..StreamOptions::default()
    };
    let cases = [
        (
            "unknown model",
            StreamOptions {
                model: Some("no-such-model".into()),
                ..retrying.clone()
            },
            Code::NotFound,
        ),
        (
            "failing decode",
            StreamOptions {
                prompt: Some("please fail".into()),
                ..retrying.clone()
            },
            Code::Internal,
        ),
    ];
    for (name, options, code) in cases {
        let started = Instant::now();
        let (result, events) = run_stream(&server.url, &audio, &options).await?;
        match result {
            Err(ClientError::Status(status)) => {
                assert_eq!(status.code(), code, "{name}: {status:?}");
            }
            other => return Err(format!("{name}: {other:?}").into()),
        }
        assert_eq!(
            resumes(&events),
            (0, 0),
            "{name}: one call only: {events:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
    // The server is fine: a good stream with retry is one call.
    let (result, events) = run_stream(&server.url, &audio, &retrying).await?;
    let summary = result?;
    assert_eq!(summary.attempts, 1);
    assert_eq!(resumes(&events), (0, 0));
    server.stop().await
}

/// Phrases laid out so that every cut of a 3 s stream limit falls in a pause, wherever in
/// the pause before it the call resumed (the server's last `final_offset` or the last
/// final's end, at most the previous cut): the phrases start exactly 3 s apart and none is
/// longer than the one before, so a call resuming in the pause after phrase k is cut in the
/// pause after phrase k + 1. (A cut inside a word loses that word: the server ends the
/// utterance there and the next call starts at the cut.)
fn phrases_between_cuts() -> TestResult<(Script, Vec<f32>)> {
    phrases(
        &[
            (0.5, "hello there general kenobi"),
            (3.5, "you are so bold"),
            (6.5, "back away i will"),
            (9.5, "so uncivilized"),
        ],
        10.5,
    )
}

/// 6. A stream longer than the server's stream-length limit: with retry it continues on a
///    new call at once (no backoff) and reads as one stream; without retry it fails with
///    OUT_OF_RANGE (STREAM_DURATION_EXCEEDED).
#[tokio::test]
async fn the_stream_length_limit_is_crossed_seamlessly() -> TestResult {
    let (script, audio) = phrases_between_cuts()?;
    let mut config = config()?;
    config.max_stream_duration = Duration::from_secs(3);
    let server =
        TestServer::start_ready(config, fake_loader(script.clone(), audio.clone())).await?;

    let (result, events) = run_stream(&server.url, &audio, &StreamOptions::default()).await?;
    match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
            assert_eq!(
                error_reason(&status).as_deref(),
                Some(STREAM_DURATION_EXCEEDED)
            );
        }
        other => return Err(format!("without retry: {other:?}").into()),
    }
    assert_eq!(resumes(&events), (0, 0));

    let options = StreamOptions {
        retry: retry(Duration::from_secs(10)),
        ..StreamOptions::default()
    };
    let (result, events) = run_stream(&server.url, &audio, &options).await?;
    let summary = result?;
    assert_seamless(&script, &summary, &events);
    // 10.5 s of audio in calls of at most 3 s.
    assert!(summary.attempts >= 4, "attempts: {}", summary.attempts);
    let resumed: Vec<(Duration, f64)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Resuming { after, from, .. } => Some((*after, *from)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len() as u32, summary.attempts - 1, "{events:?}");
    for (after, _) in &resumed {
        assert_eq!(*after, Duration::ZERO, "the limit is crossed at once");
    }
    assert!(
        resumed.windows(2).all(|w| w[0].1 < w[1].1),
        "each call starts further on: {resumed:?}"
    );
    server.stop().await
}

/// 6b. A length limit shorter than the silence before the first word: no call gets a final
///    or a newer `final_offset` (a silent stretch has no decodes, so no responses), so
///    continuing would repeat the same call at once, forever. Such a call counts as a
///    failure: the client backs off and gives up after `give_up_after`.
#[tokio::test]
async fn a_length_limit_that_allows_no_progress_gives_up() -> TestResult {
    let (script, audio) = phrases(&[(4.5, "hello there")], 6.0)?;
    let mut config = config()?;
    config.max_stream_duration = Duration::from_secs(1);
    let server = TestServer::start_ready(config, fake_loader(script, audio.clone())).await?;
    let options = StreamOptions {
        retry: retry(Duration::from_secs(2)),
        ..StreamOptions::default()
    };
    let started = Instant::now();
    let (result, events) = run_stream(&server.url, &audio, &options).await?;
    let elapsed = started.elapsed();
    let Err(ClientError::GaveUp { attempts, last, .. }) = &result else {
        return Err(format!("not GaveUp: {result:?}").into());
    };
    let ClientError::Status(status) = &**last else {
        return Err(format!("last failure: {last:?}").into());
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(
        error_reason(status).as_deref(),
        Some(STREAM_DURATION_EXCEEDED)
    );
    // Backed off between calls: a handful of calls, not one after another without pause
    // (which made thousands in the same time).
    assert!(*attempts >= 2 && *attempts < 50, "attempts: {attempts}");
    let froms: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Resuming { from, .. } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(froms.len() as u32, attempts - 1, "{events:?}");
    assert!(froms.iter().all(|f| *f == 0.0), "{froms:?}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    server.stop().await
}
